import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { Admission } from '../inbound/pipeline.js';
import { InboundRuntime, isPending, type Call, type PlinthOptions } from './runtime.js';

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
    let s: Call;
    try {
      s = rt.start(request.method, request.url, request.headers, rt.governed ? request.ip : undefined, identify?.(request));
    } catch (err) {
      next(err as Error);
      return;
    }
    const a = s.admission;
    if (!isPending(a) && a.ok && a.delayMs === 0) {
      // Admitted at once (no rule, or none that waits): `next` runs as is, and the end is watched only
      // when there is something to do then (a release, metrics, a span).
      if (rt.needsFinish(s)) watch(s, request, reply.raw, a.release);
      rt.run(s, next);
      return;
    }
    watch(s, request, reply.raw, undefined);
    if (isPending(a)) a.then((settled) => serve(s, reply, next, settled), next);
    else serve(s, reply, next, a);
  });

  fastify.addHook('onClose', (_instance, next) => {
    rt.close();
    next();
  });
  done();
}

const CALL = Symbol('plinth.call');
type WatchedResponse = ServerResponse & { [CALL]?: Call };

/**
 * Ends `s` once when the response is done: one listener function for every request, which finds the
 * request on the response (see onResponseEnd for why 'close' alone).
 */
function watch(s: Call, request: FastifyRequest, res: WatchedResponse, release: (() => void) | undefined): void {
  s.carrier = request;
  s.release = release;
  res[CALL] = s;
  res.on('close', onClose);
}

function onClose(this: WatchedResponse): void {
  const s = this[CALL];
  // Node emits it once; a stand-in response (light-my-request, a test double) might not promise that.
  if (s === undefined || s.ended) return;
  s.ended = true;
  s.release?.();
  const rt = s.runtime;
  // The route template only when `finish` uses it: fastify's `routeOptions` builds an object per read.
  rt.finish(s, rt.wantsRoute(s) ? (s.carrier as FastifyRequest).routeOptions.url : undefined, this.writableFinished ? this.statusCode : 0);
}

/** An admission that was pending or has to wait: the refusal answered, or `next` run in the context once due. */
function serve(s: Call, reply: FastifyReply, next: HookHandlerDoneFunction, a: Admission): void {
  if (!a.ok) {
    // A Buffer: for a string with a JSON-like type fastify appends `; charset=utf-8` to the content type
    // the rule (or RFC 9457) asked for.
    void reply.code(a.status).headers(a.headers).header('content-type', a.contentType).send(Buffer.from(a.body));
    return;
  }
  if (s.ended) {
    a.release();
    return;
  }
  s.release = a.release;
  const rt = s.runtime;
  // The promise reaction inherits the context of the `then` call, so the delayed `next` runs inside it too.
  rt.run(s, () => {
    if (a.delayMs > 0) rt.wheel.delay(a.delayMs).then(() => next(), next);
    else next();
  });
}

// Hooks registered by this plugin apply to the app that registers it, not to a child context.
(plinthFastify as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
