import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { Admission } from '../inbound/pipeline.js';
import { onResponseEnd } from './node.js';
import { InboundRuntime, isPending, type PlinthOptions, type Started } from './runtime.js';

export interface PlinthFastifyOptions extends PlinthOptions {
  /** The authenticated subject of a request (`ServiceAccount:<ns>/<name>`). */
  identify?: (req: FastifyRequest) => string | undefined;
}

/**
 * Fastify plugin: `app.register(plinthFastify, { service, governance })`. Hooks apply to the whole app
 * (the plugin opts out of encapsulation with `Symbol.for('skip-override')`, as fastify-plugin does).
 *
 * AsyncLocalStorage and fastify hooks: a context entered inside an async hook ends with that hook, and
 * `enterWith` would leak into whatever the socket runs next (keep-alive requests, other hooks). So the
 * onRequest hook is callback-style and calls `done` inside `runWithContext`: fastify runs the rest of the
 * lifecycle (later hooks, body parsing, the handler) from that call, and everything it awaits inherits the
 * context. Body parsing resumes on the socket's events, but fastify 5's content-type parser binds its
 * continuation to the request's async context (an AsyncResource, the job @fastify/request-context's
 * preValidation re-entry did for older fastify), so the handler still sees `currentContext()`; the adapter
 * tests send a body split across packets to hold fastify to that.
 */
export function plinthFastify(fastify: FastifyInstance, opts: PlinthFastifyOptions, done: (err?: Error) => void): void {
  const rt = new InboundRuntime(opts);
  const identify = opts.identify;
  fastify.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, next: HookHandlerDoneFunction) => {
    let s: Started;
    try {
      s = rt.start(request.method, request.url, request.headers, rt.governed ? request.ip : undefined, identify?.(request));
    } catch (err) {
      next(err as Error);
      return;
    }
    const a = s.admission;
    if (!isPending(a) && a.ok && a.delayMs === 0) {
      // Admitted at once (no rule, or none that waits): one closure for the end, and `next` runs as is.
      const release = a.release;
      const res = reply.raw;
      let ended = false;
      res.on('close', () => {
        if (ended) return;
        ended = true;
        release();
        rt.finish(s, routeOf(rt, s, request), res.writableFinished ? res.statusCode : 0);
      });
      rt.run(s, next);
      return;
    }
    let release: (() => void) | undefined;
    let ended = false;
    onResponseEnd(reply.raw, (status) => {
      ended = true;
      release?.();
      rt.finish(s, routeOf(rt, s, request), status);
    });
    const serve = (a: Admission): void => {
      if (!a.ok) {
        // A Buffer: for a string with a JSON-like type fastify appends `; charset=utf-8` to the content type
        // the rule (or RFC 9457) asked for.
        void reply.code(a.status).headers(a.headers).header('content-type', a.contentType).send(Buffer.from(a.body));
        return;
      }
      if (ended) {
        a.release();
        return;
      }
      release = a.release;
      // The promise reaction inherits the context of the `then` call, so the delayed `next` runs inside it too.
      rt.run(s, () => {
        if (a.delayMs > 0) rt.wheel.delay(a.delayMs).then(() => next(), next);
        else next();
      });
    };
    if (isPending(a)) a.then(serve, next);
    else serve(a);
  });

  fastify.addHook('onClose', (_instance, next) => {
    rt.close();
    next();
  });
  done();
}

/** The route template, read only when `finish` uses it: fastify's `routeOptions` builds an object per read. */
function routeOf(rt: InboundRuntime, s: Started, request: FastifyRequest): string | undefined {
  return rt.wantsRoute(s) ? request.routeOptions.url : undefined;
}

// Hooks registered by this plugin apply to the app that registers it, not to a child context.
(plinthFastify as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
