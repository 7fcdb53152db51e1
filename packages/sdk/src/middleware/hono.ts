import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Context, MiddlewareHandler } from 'hono';
import { InboundRuntime, isPending, rejectionHeaders, type PlinthOptions } from './runtime.js';

export interface PlinthHonoOptions extends PlinthOptions {
  /** The authenticated subject of a request (`ServiceAccount:<ns>/<name>`). */
  identify?: (c: Context) => string | undefined;
  /** The client address; default the socket's under @hono/node-server, else unknown. */
  ip?: (c: Context) => string | undefined;
}

/** @hono/node-server puts node's request in `c.env.incoming`. */
function incomingOf(c: Context): IncomingMessage | undefined {
  const env = c.env as { incoming?: IncomingMessage } | undefined;
  return env?.incoming;
}

/** Node's header object when Hono runs on node (no copy), else the Fetch headers copied once. */
function headersOf(c: Context): IncomingHttpHeaders {
  const incoming = incomingOf(c);
  if (incoming !== undefined) return incoming.headers;
  const out: IncomingHttpHeaders = {};
  c.req.raw.headers.forEach((v, k) => {
    out[k] = v;
  });
  return out;
}

interface MatchedRoute {
  readonly path: string;
}

/**
 * The registered path of the last route Hono matched (`/orders/:id`): the handler's, known already before
 * `next()`. A request that only matched catch-all middleware (a 404) is `other`. Read through the request's
 * `matchedRoutes` rather than the `hono/route` helper, so this module loads without Hono installed.
 */
function routeOf(c: Context): string | undefined {
  try {
    const routes = (c.req as unknown as { matchedRoutes?: readonly MatchedRoute[] }).matchedRoutes;
    const p = routes?.[routes.length - 1]?.path;
    return p === undefined || p === '' || p === '*' || p === '/*' ? undefined : p;
  } catch {
    return undefined;
  }
}

/**
 * Hono middleware running the rest of the chain under Plinth's inbound governance (see `plinth` for
 * node:http): `app.use(plinthHono({ service, governance }))`. The handler runs inside `next()`, inside the
 * request context. The admission is released when `next()` settles, i.e. when the handler has produced its
 * response (for a streamed body: when streaming starts).
 */
export function plinthHono(opts: PlinthHonoOptions): MiddlewareHandler & { close(): void; runtime: InboundRuntime } {
  const rt = new InboundRuntime(opts);
  const identify = opts.identify;
  const ipOf = opts.ip ?? ((c: Context) => incomingOf(c)?.socket?.remoteAddress);

  const middleware: MiddlewareHandler = async (c, next) => {
    const s = rt.start(c.req.method, c.req.path, headersOf(c), ipOf(c), identify?.(c));
    let status = 0;
    let release: (() => void) | undefined;
    try {
      const a = isPending(s.admission) ? await s.admission : s.admission;
      if (!a.ok) {
        status = a.status;
        return new Response(a.body, { status: a.status, headers: rejectionHeaders(a) });
      }
      release = a.release;
      if (a.delayMs > 0) await rt.wheel.delay(a.delayMs);
      await rt.run(s, next);
      status = c.res.status;
    } finally {
      release?.();
      // status 0: next() threw past Hono's own error handling; it answers 500.
      rt.finish(s, routeOf(c), status === 0 ? 500 : status);
    }
  };

  return Object.assign(middleware, { close: () => rt.close(), runtime: rt });
}
