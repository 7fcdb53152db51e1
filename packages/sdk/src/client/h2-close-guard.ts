import { connect as http2Connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type Http2Session } from 'node:http2';
import type { Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import type { buildConnector } from 'undici';

/**
 * Keeps HTTP/2 upstreams from crashing or freezing the process through undici 7 and node's HTTP/2 client.
 *
 * When node's HTTP/2 client fails to send a frame (the peer broke flow control, or sent what nghttp2 refuses),
 * it emits `frameError` on the stream and, one `setImmediate` later, closes the session: no new streams, but
 * no `goaway` event either. On other errors it destroys the session and its socket only a turn later. undici
 * 7 (the line that runs on Node 20) retires a session on `goaway`, on `error` or when its socket closes, so
 * in between it hands the closed or destroyed session new requests, and `session.request()` throws
 * ERR_HTTP2_GOAWAY_SESSION or ERR_HTTP2_INVALID_SESSION from inside undici's own microtask: an uncaught
 * exception, the whole process gone (fixed in undici's 8 line, nodejs/undici#5453, which needs Node 22).
 * Destroying the socket at once is no cure: undici 7 then reads the socket it had already let go of when the
 * session's `close` comes, and throws a TypeError as uncaught. So undici is told first, in the form it handles
 * best: a session node is about to close or destroy by itself emits `goaway` (INTERNAL_ERROR) just before.
 *
 * It also keeps a request reset while its upload waits on flow control from freezing the process. node's
 * `stream.close()` with NO_ERROR (what undici calls on every abort: a deadline, a refused answer) holds its
 * RST_STREAM back until the request body has all gone out. When the session is torn down before that (a
 * GOAWAY, even a graceful one, or an error), node destroys its side of the stream without ever resetting it,
 * while nghttp2 still holds the unsent body. The next time the peer opens the window, nghttp2 asks node for
 * that stream's data, node no longer knows the stream and answers "zero bytes, not the end", and nghttp2
 * writes empty DATA frames in a loop that never yields: one core at full load and memory growing by
 * gigabytes until the process dies. A well-behaved server gets there by reading uploads slowly, then
 * opening its window and going away in one read. So a guarded stream closed before its body has gone out is
 * reset at once, with CANCEL (RFC 9113 §8.7: the client no longer wants the answer), and nghttp2 drops the
 * body with the stream.
 *
 * Only the sessions on sockets of Plinth's own upstream connectors (`guardedConnector`) are touched; any
 * other HTTP/2 client in the process behaves as node has it.
 */
const GUARDED = Symbol('plinth.h2CloseGuard');

let installed = false;

/** Set on a session once it has emitted `goaway`: undici has retired it then. */
const RETIRED = Symbol('plinth.h2Retired');

/** NGHTTP2_INTERNAL_ERROR: the code of the GOAWAY undici is told of when node ends a session by itself. */
const INTERNAL_ERROR = 2;

function install(): void {
  if (installed) return;
  installed = true;
  // node does not export ClientHttp2Session; a session on a stream that goes nowhere gives its prototype.
  const probe = http2Connect('http://127.0.0.1', { createConnection: () => new PassThrough() as unknown as Socket });
  probe.on('error', () => {});
  const proto = Object.getPrototypeOf(probe) as ClientHttp2Session & Record<symbol, unknown>;
  // A stream on it, never sent, gives ClientHttp2Stream's.
  const pending = probe.request({ ':path': '/' });
  pending.on('error', () => {});
  const streamProto = Object.getPrototypeOf(pending) as ClientHttp2Stream;
  probe.destroy();
  const closeStream = streamProto.close;
  streamProto.close = function (this: ClientHttp2Stream, code?: number, callback?: () => void): void {
    const reset = (code === undefined || code === constants.NGHTTP2_NO_ERROR) && !this.writableFinished && this.session !== undefined && guardedSocketOf(this.session) !== undefined;
    closeStream.call(this, reset ? constants.NGHTTP2_CANCEL : code, callback);
  };
  const { emit, close, destroy } = proto;
  proto.emit = function (this: ClientHttp2Session & Record<symbol, unknown>, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'goaway') this[RETIRED] = true;
    return emit.call(this, event, ...args);
  };
  proto.close = function (this: ClientHttp2Session & Record<symbol, unknown>, callback?: () => void): void {
    if (!this.closed && !this.destroyed) retire(this);
    close.call(this, callback);
  };
  proto.destroy = function (this: ClientHttp2Session & Record<symbol, unknown>, error?: Error, code?: number): void {
    if (!this.destroyed) retire(this);
    destroy.call(this, error, code);
  };
}

/**
 * Tells undici a session is going, the way it learns of it best: a GOAWAY. Its handler takes the session
 * out of use, destroys the socket, fails the request at the head of its queue and opens a new connection for
 * the rest, all before node marks the session closed or destroyed. Not for a session undici retired already,
 * nor one whose socket is gone (undici's own teardown, which ends the session after the socket).
 */
function retire(session: ClientHttp2Session & Record<symbol, unknown>): void {
  if (session[RETIRED] === true) return;
  const socket = guardedSocketOf(session);
  if (socket === undefined || socket.destroyed) return;
  session.emit('goaway', INTERNAL_ERROR);
}

/** The socket under a session, when it is one of ours: node's proxy of it forwards reads of other properties. */
function guardedSocketOf(session: Http2Session): Socket | undefined {
  try {
    const own = (session.socket as unknown as Record<symbol, unknown>)[GUARDED];
    return own === undefined ? undefined : (own as Socket);
  } catch {
    // No socket bound (ERR_HTTP2_SOCKET_UNBOUND): nothing to destroy.
    return undefined;
  }
}

/** `connect` for an undici Pool that may speak HTTP/2: `base`, with its sockets marked for the close guard. */
export function guardedConnector(base: buildConnector.connector): buildConnector.connector {
  install();
  return (opts, callback) =>
    base(opts, (err, socket) => {
      // A failed connect gives no socket (undefined, whatever the callback's type says).
      if (err != null || socket == null) return callback(err ?? new Error('no socket'), null);
      (socket as unknown as Record<symbol, unknown>)[GUARDED] = socket;
      callback(null, socket);
    });
}
