import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { admitOnResponse } from './node.js';
import { InboundRuntime, type PlinthOptions, type Started } from './runtime.js';

export interface PlinthExpressOptions extends PlinthOptions {
  /** The authenticated subject of a request (`ServiceAccount:<ns>/<name>`), e.g. set by an auth middleware before this one. */
  identify?: (req: Request) => string | undefined;
}

/**
 * The route template express matched (`/orders/:id`, mounted routers included), read when the response
 * ends: express sets `req.route` only once routing reached a route. Unrouted requests (404s) are `other`.
 */
function routeOf(req: Request): string | undefined {
  const path = (req.route as { path?: unknown } | undefined)?.path;
  if (typeof path !== 'string') return undefined;
  return req.baseUrl ? req.baseUrl + path : path;
}

/**
 * Express middleware running the rest of the chain under Plinth's inbound governance (see `plinth` for
 * node:http). Mount it first: `app.use(plinthExpress({ service, governance }))`. `next()` runs inside the
 * request context, so every later middleware and the route handler see `currentContext()`.
 */
export function plinthExpress(opts: PlinthExpressOptions): RequestHandler & { close(): void; runtime: InboundRuntime } {
  const rt = new InboundRuntime(opts);
  const identify = opts.identify;

  const middleware = (req: Request, res: Response, next: NextFunction): void => {
    let s: Started;
    try {
      s = rt.start(req.method, req.originalUrl || req.url, req.headers, req.ip ?? req.socket.remoteAddress, identify?.(req));
    } catch (err) {
      next(err);
      return;
    }
    const go = (): void => {
      if (!res.destroyed) rt.run(s, () => next());
    };
    admitOnResponse(rt, s, res, () => routeOf(req), go, next);
  };

  return Object.assign(middleware, { close: () => rt.close(), runtime: rt });
}
