// An in-process undici Dispatcher that answers every request with 200 and a tiny JSON body, without any
// socket: what is left of a call through it is the caller's own work plus undici's handler plumbing.
import { Dispatcher } from 'undici';

export const FAKE_BODY = Buffer.from('{"ok":true}');
const HEADERS = Object.freeze({ 'content-type': 'application/json', 'content-length': String(FAKE_BODY.length) });
const RAW_HEADERS = [Buffer.from('content-type'), Buffer.from('application/json'), Buffer.from('content-length'), Buffer.from(String(FAKE_BODY.length))];
const NO_TRAILERS = Object.freeze({});
const { queueMicrotask } = globalThis;

class Controller {
  aborted = false;
  paused = false;
  reason = null;
  abort(reason) {
    this.aborted = true;
    this.reason = reason;
  }
  pause() {
    this.paused = true;
  }
  resume() {
    this.paused = false;
  }
}

// The answer comes on a microtask, not inside dispatch(): no real transport calls back synchronously, and a
// caller may rely on dispatch() returning before the response starts.
function answerNew(handler) {
  const c = new Controller();
  handler.onRequestStart?.(c, {});
  if (c.aborted) return handler.onResponseError?.(c, c.reason);
  handler.onResponseStart?.(c, 200, HEADERS, 'OK');
  if (c.aborted) return handler.onResponseError?.(c, c.reason);
  handler.onResponseData?.(c, FAKE_BODY);
  if (c.aborted) return handler.onResponseError?.(c, c.reason);
  handler.onResponseEnd?.(c, NO_TRAILERS);
}

// undici's own api handlers (dispatcher.request(), stream()) still speak the legacy interface.
function answerLegacy(handler) {
  let aborted = null;
  handler.onConnect?.((err) => (aborted = err ?? new Error('aborted')));
  if (aborted) return handler.onError?.(aborted);
  handler.onHeaders?.(200, RAW_HEADERS, () => {}, 'OK');
  if (aborted) return handler.onError?.(aborted);
  handler.onData?.(FAKE_BODY);
  if (aborted) return handler.onError?.(aborted);
  handler.onComplete?.([]);
}

export class FakeDispatcher extends Dispatcher {
  dispatches = 0;
  dispatch(_opts, handler) {
    this.dispatches++;
    const legacy = typeof handler.onRequestStart !== 'function' && typeof handler.onResponseStart !== 'function';
    queueMicrotask(legacy ? () => answerLegacy(handler) : () => answerNew(handler));
    return true;
  }
  close(cb) {
    if (typeof cb === 'function') return void queueMicrotask(cb);
    return Promise.resolve();
  }
  destroy(err, cb) {
    const done = typeof err === 'function' ? err : cb;
    if (typeof done === 'function') return void queueMicrotask(done);
    return Promise.resolve();
  }
}

/**
 * The least a caller can do over a dispatcher: one dispatch() with a handler that buffers the body into a
 * promise (what Plinth's transport does per try, minus every policy). The floor under the micro figures.
 */
export function bareDispatch(dispatcher, opts) {
  return new Promise((resolve, reject) => {
    let status = 0;
    const chunks = [];
    dispatcher.dispatch(opts, {
      onRequestStart() {},
      onResponseStart(_c, s) {
        status = s;
      },
      onResponseData(_c, chunk) {
        chunks.push(chunk);
      },
      onResponseEnd() {
        resolve({ status, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks) });
      },
      onResponseError(_c, err) {
        reject(err);
      },
    });
  });
}
