import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Admission } from '../inbound/pipeline.js';
import type { Rejection } from '../inbound/rejection.js';
import { InboundRuntime, isPending, type PlinthOptions, type Started } from './runtime.js';

export interface PlinthNodeOptions extends PlinthOptions {
  /** The authenticated subject of a request (`ServiceAccount:<ns>/<name>`), when the server verifies one. */
  identify?: (req: IncomingMessage) => string | undefined;
  /** The route template of a request for metrics (never the raw path); default `other`. */
  route?: (req: IncomingMessage) => string | undefined;
}

export type PlinthHandler = (req: IncomingMessage, res: ServerResponse) => unknown;

/** Writes a refusal on a node response that has not started. */
export function sendRejection(res: ServerResponse, r: Rejection): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.statusCode = r.status;
  for (const name in r.headers) res.setHeader(name, r.headers[name]!);
  res.setHeader('content-type', r.contentType);
  res.setHeader('content-length', Buffer.byteLength(r.body));
  res.end(r.body);
}

function internalError(res: ServerResponse): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.statusCode = 500;
  res.setHeader('content-type', 'application/problem+json');
  res.end('{"type":"https://plinth.dev/problems/internal","title":"Internal error","status":500,"code":"internal"}');
}

/**
 * Calls `onEnd` once when the response is done. One 'close' listener: node emits 'close' on every
 * ServerResponse, right after 'finish' for a response sent (one tick later), or alone when the client left
 * early, which `writableFinished` tells apart. Listening to 'finish' too, with `once` wrappers removed
 * afterwards, cost four listener operations per request. Returns nothing to cancel: the response's own end
 * is the bound.
 */
export function onResponseEnd(res: ServerResponse, onEnd: (status: number) => void): void {
  let ended = false;
  res.on('close', () => {
    // Node emits it once; a stand-in response (light-my-request, a test double) might not promise that.
    if (ended) return;
    ended = true;
    onEnd(res.writableFinished ? res.statusCode : 0);
  });
}

/**
 * What the node-response adapters (node:http, express) share once a request has started: end-of-response
 * accounting registered before admission settles (so a client that leaves while queued still ends the
 * request and frees its slot exactly once), refusals answered, throttles and injected delays waited out on
 * the wheel, then `proceed`.
 */
export function admitOnResponse(rt: InboundRuntime, s: Started, res: ServerResponse, route: () => string | undefined, proceed: () => void, fail: (err: unknown) => void): void {
  const a = s.admission;
  if (!isPending(a) && a.ok && a.delayMs === 0) {
    // Admitted at once: nothing can end the response before `proceed`, so no state to keep for it, and
    // nothing to watch for when its end has nothing to do (no release, metrics or span).
    if (rt.needsFinish(s)) {
      const done = a.release;
      onResponseEnd(res, (status) => {
        done();
        rt.finish(s, route(), status);
      });
    }
    proceed();
    return;
  }
  let release: (() => void) | undefined;
  let ended = false;
  onResponseEnd(res, (status) => {
    ended = true;
    release?.();
    rt.finish(s, route(), status);
  });
  const serve = (a: Admission): void => {
    if (!a.ok) {
      sendRejection(res, a);
      return;
    }
    if (ended) {
      a.release();
      return;
    }
    release = a.release;
    if (a.delayMs > 0) rt.wheel.delay(a.delayMs).then(proceed, fail);
    else proceed();
  };
  if (isPending(a)) a.then(serve, fail);
  else serve(a);
}

/**
 * A node:http request listener running `handler` under Plinth's inbound governance: the request context
 * (trace, baggage, lane, deadline, caller) is current inside the handler, refusals are answered before it
 * runs, throttles and injected delays wait on the shared timer wheel, and the admission is released once
 * when the response ends.
 */
export function plinth(handler: PlinthHandler, opts: PlinthNodeOptions): RequestListener & { close(): void; runtime: InboundRuntime } {
  const rt = new InboundRuntime(opts);
  const identify = opts.identify;
  const routeOf = opts.route;

  const call = (req: IncomingMessage, res: ServerResponse, s: Started): void => {
    if (res.destroyed) return; // the client left during the wait
    try {
      const out = rt.run(s, () => handler(req, res));
      if (out !== null && typeof out === 'object' && typeof (out as Promise<unknown>).then === 'function') {
        (out as Promise<unknown>).then(undefined, () => internalError(res));
      }
    } catch {
      internalError(res);
    }
  };

  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    let s: Started;
    try {
      s = rt.start(req.method ?? 'GET', req.url ?? '/', req.headers, req.socket.remoteAddress, identify?.(req));
    } catch {
      internalError(res);
      return;
    }
    admitOnResponse(rt, s, res, () => routeOf?.(req), () => call(req, res, s), () => internalError(res));
  };

  return Object.assign(listener, { close: () => rt.close(), runtime: rt });
}
