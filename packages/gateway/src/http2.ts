/**
 * HTTP/2 at the edge, on the TLS listener: node:http2's secure server with HTTP/1.1 on the same port (ALPN
 * `h2` and `http/1.1`); and, when asked, cleartext HTTP/2 with prior knowledge (h2c) on the plain listener. HTTP/2 streams reach the same request listener as HTTP/1.1 requests, through node's
 * compatibility objects, made to look like what the proxy reads from an HTTP/1.1 request: a `host` header
 * (from `:authority`), no pseudo-headers, a body marker when the length is not declared, and answers that
 * never carry the connection-specific headers HTTP/2 forbids. HTTP/1.1 connections on that port are node's
 * http ones (the proxy's hot path is untouched), with the limits hardenedServer gives a node:http server.
 */
import { Server as HttpServer, type IncomingMessage, type OutgoingHttpHeaders, type RequestListener, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import {
  constants,
  createSecureServer,
  createServer as createHttp2Server,
  Http2ServerRequest,
  Http2ServerResponse,
  type Http2SecureServer,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Duplex, ReadableOptions } from 'node:stream';
import { PROBLEM_CONTENT_TYPE } from '@plinth/core';
import { sharedWheel, type Expirable, type TimerWheel } from '@plinth/sdk/resilience';
import { GatewayCodes, problemBody, rawProblem, sendProblem } from './errors.js';
import type { TlsContext } from './tls.js';

/** HTTP/2 settings and limits of the edge listener. */
export interface Http2Limits {
  /** Streams a client may have open at once on one connection. Default 100. */
  maxConcurrentStreams?: number;
  /**
   * A connection with streams open that has been silent this long is sent a PING (HTTP/2 keepalive, as
   * Envoy's connection_keepalive); default 20 s. An idle connection without streams is closed by the
   * keep-alive timeout instead.
   */
  pingIdleMs?: number;
  /** The PING unanswered this long, the connection is closed and its streams reset. Default 5 s. */
  pingTimeoutMs?: number;
}

/** What an HTTP/2 message must not carry (RFC 9113 §8.2.2); node throws ERR_HTTP2_INVALID_CONNECTION_HEADERS on them. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'http2-settings']);

function forbidden(name: string): boolean {
  return CONNECTION_SPECIFIC.has(name) || CONNECTION_SPECIFIC.has(name.toLowerCase());
}

/**
 * The request headers as an HTTP/1.1 request has them. `:authority` is the host (RFC 9113 §8.3.1: it wins over
 * a `host` header). A body without a declared length is what `transfer-encoding: chunked` says over
 * HTTP/1.1, so the body planner counts it against the route's limit as it streams; the marker is never
 * forwarded (transfer-encoding is hop-by-hop).
 */
function http1Headers(h: IncomingHttpHeaders, stream: ServerHttp2Stream): IncomingHttpHeaders {
  // No prototype: a header named __proto__ stays a header.
  const out = Object.create(null) as IncomingHttpHeaders;
  for (const name in h) if (name.charCodeAt(0) !== 58 /* : */) out[name] = h[name];
  const authority = h[':authority'];
  if (typeof authority === 'string' && authority !== '') out.host = authority;
  if (out['content-length'] === undefined && !stream.endAfterHeaders) out['transfer-encoding'] = 'chunked';
  return out;
}

function resetError(): Error {
  return Object.assign(new Error('the client reset the HTTP/2 stream'), { code: 'ECONNRESET' });
}

/** An HTTP/2 request, read by the proxy as an HTTP/1.1 one. */
export class EdgeHttp2Request extends Http2ServerRequest {
  /** An extended CONNECT's `:protocol` (RFC 8441 §4), such as `websocket`. */
  readonly protocol: string | undefined;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, options: ReadableOptions, rawHeaders: readonly string[]) {
    super(stream, headers, options, rawHeaders);
    const p = headers[':protocol'];
    this.protocol = typeof p === 'string' ? p : undefined;
    // `method` and `url` read the pseudo-headers from node's own copy; `headers` is what the proxy reads.
    Object.defineProperty(this, 'headers', { value: http1Headers(headers, stream), writable: true, enumerable: true, configurable: true });
    // node ends the request body cleanly when the stream is reset: a cut-off upload must fail instead, as over
    // HTTP/1.1, or it would be forwarded as if complete.
    stream.once('close', () => {
      if ((stream.aborted || stream.rstCode !== constants.NGHTTP2_NO_ERROR) && !this.readableEnded) this.destroy(resetError());
    });
  }

  // As node's IncomingMessage: the error is only emitted to whoever listens for it (a body reader).
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    callback(this.listenerCount('error') > 0 ? error : null);
  }
}

/** An HTTP/2 answer that drops connection-specific headers instead of throwing on them. */
export class EdgeHttp2Response extends Http2ServerResponse<EdgeHttp2Request> {
  constructor(stream: ServerHttp2Stream) {
    super(stream);
    // node emits no 'close' for a HEAD whose stream closes before the answer ended: the exchange must end anyway.
    stream.once('close', () => {
      if ((stream as { headRequest?: boolean }).headRequest === true && !this.writableEnded) this.emit('close');
    });
    // A complete answer to a request still sending its body: tell the client to stop (RFC 9113 §8.1), as an
    // HTTP/1.1 answer does with `connection: close`.
    if (!stream.endAfterHeaders) stream.once('finish', () => afterAnswer(stream));
  }

  override writeHead(statusCode: number, a?: string | OutgoingHttpHeaders | readonly string[], b?: OutgoingHttpHeaders | readonly string[]): this {
    const headers = typeof a === 'string' ? b : a;
    // node takes the flat list the proxy writes, though its types say an object only.
    return super.writeHead(statusCode, (headers === undefined ? undefined : allowed(headers)) as OutgoingHttpHeaders | undefined);
  }

  override setHeader(name: string, value: number | string | readonly string[]): void {
    if (!forbidden(name)) super.setHeader(name, value);
  }

  override appendHeader(name: string, value: string | string[]): void {
    if (!forbidden(name)) super.appendHeader(name, value);
  }
}

Object.defineProperties(EdgeHttp2Response.prototype, {
  // The proxy checks `res.destroyed` (the client left) as on an http.ServerResponse.
  destroyed: {
    get(this: EdgeHttp2Response) {
      return this.stream.destroyed;
    },
  },
  // A reset stream's writable side is ended by node: finished means answered, not reset.
  writableFinished: {
    get(this: EdgeHttp2Response) {
      const s = this.stream;
      return s.writableFinished && !s.aborted && s.rstCode === constants.NGHTTP2_NO_ERROR;
    },
  },
});

/**
 * node's compatibility layer ends an answer with its trailers, sent when the last DATA frame goes out after
 * 'finish': the reset waits for them, or a gRPC answer would lose its status to the reset (the client then
 * waits for it until its deadline). An answer that ended without trailers (HEAD, 204) is closed already.
 */
function afterAnswer(stream: ServerHttp2Stream): void {
  // Registered now, after the compatibility layer's own listener, so the trailers are sent first.
  stream.once('wantTrailers', () => setImmediate(closeUnread, stream));
  setImmediate(() => {
    if ((stream.state as { localClose?: number } | undefined)?.localClose === 1) closeUnread(stream);
  });
}

function closeUnread(stream: ServerHttp2Stream): void {
  if (!stream.closed && !stream.destroyed && !stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR);
}

function allowed(headers: OutgoingHttpHeaders | readonly string[]): OutgoingHttpHeaders | readonly string[] {
  if (isFlat(headers)) {
    let i = 0;
    while (i < headers.length && !forbidden(headers[i]!)) i += 2;
    if (i >= headers.length) return headers;
    const out: string[] = [];
    for (let j = 0; j < headers.length; j += 2) if (!forbidden(headers[j]!)) out.push(headers[j]!, headers[j + 1]!);
    return out;
  }
  let drop = false;
  for (const name in headers) if (forbidden(name)) drop = true;
  if (!drop) return headers;
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) if (!forbidden(name)) out[name] = headers[name];
  return out;
}

function isFlat(h: OutgoingHttpHeaders | readonly string[]): h is readonly string[] {
  return Array.isArray(h);
}

/** The http.Server settings hardenedServer applies, for the HTTP/1.1 connections of the HTTP/2 server. */
export interface Http1Settings {
  maxHeaderSize: number;
  headersTimeout: number;
  requestTimeout: number;
  keepAliveTimeout: number;
  connectionsCheckingInterval: number;
}

/** The HTTP/2 sessions of a listener: the secure server's own, or the h2c ones of a plain http.Server. */
const sessionsOf = new WeakMap<object, Set<ServerHttp2Session>>();

/**
 * The secure server, HTTP/2 and HTTP/1.1. HTTP/2 gets the same limits in its own terms: the header list is
 * bounded by `maxHeaderSize` (a larger one resets the stream), a request body still arriving after
 * `requestTimeout` resets its stream, and a connection with no stream open for `keepAliveTimeout` is closed
 * with a GOAWAY.
 */
export function http2Server(listener: RequestListener, http1: Http1Settings, tls: TlsContext, limits: Http2Limits = {}, wheel: TimerWheel = sharedWheel): Http2SecureServer {
  const s = createSecureServer({
    ...tls,
    allowHTTP1: true,
    // The http timeouts start once the handshake is done; until then a silent client is held this long.
    handshakeTimeout: http1.headersTimeout,
    noDelay: true,
    ...streamOptions(http1, limits),
  });
  // node's http2 server does not take http.Server's options: what its HTTP/1.1 connections read is set here.
  Object.assign(s, { ...http1, requireHostHeader: true, joinDuplicateHeaders: false, rejectNonStandardBodyWrites: false, maxHeadersCount: null, maxRequestsPerSocket: 0, httpAllowHalfOpen: false });
  serveStreams(s, s, listener, http1, limits, wheel);
  return s;
}

/** What both HTTP/2 servers (over TLS and h2c) are created with: the compatibility classes and the limits. */
function streamOptions(http1: Http1Settings, limits: Http2Limits) {
  return {
    Http2ServerRequest: EdgeHttp2Request,
    Http2ServerResponse: EdgeHttp2Response,
    // Header pairs as node's http parser allows (2,000), the list's size bounded as over HTTP/1.1.
    maxHeaderListPairs: 2000,
    // Every listener serves WebSockets over its streams (webSocketStreams): browsers then open them on the
    // connection they already have instead of a new HTTP/1.1 one.
    settings: { maxConcurrentStreams: limits.maxConcurrentStreams ?? 100, maxHeaderListSize: http1.maxHeaderSize, enablePush: false, enableConnectProtocol: true },
  };
}

/** Serves the WebSockets a client opens on an HTTP/2 stream: the request, and the answer to frame the handshake's outcome in. */
export type WebSocketStreamListener = (req: EdgeHttp2Request, res: EdgeHttp2Response) => void;

const webSocketsOf = new WeakMap<object, WebSocketStreamListener>();

/** WebSockets over HTTP/2 (RFC 8441) on a listener (the server it listens with, as for goAway). */
export function webSocketStreams(owner: object, listener: WebSocketStreamListener): void {
  webSocketsOf.set(owner, listener);
}

/**
 * A CONNECT on a stream (node's compatibility layer emits it apart from requests). Only the extended kind
 * with `:protocol: websocket` is served; a tunnel to an arbitrary authority is not the gateway's to open.
 */
function onConnect(owner: object, req: IncomingMessage | EdgeHttp2Request, res: EdgeHttp2Response | Duplex): void {
  // The HTTP/1.1 side of the TLS listener emits its own CONNECTs here too, with the socket.
  if (!(req instanceof EdgeHttp2Request) || !(res instanceof EdgeHttp2Response)) return void (res as Duplex).end(rawProblem(405, GatewayCodes.methodNotAllowed));
  const listener = webSocketsOf.get(owner);
  if (req.protocol === 'websocket' && listener !== undefined) return listener(req, res);
  const r = res as unknown as ServerResponse;
  if (req.protocol === undefined) sendProblem(r, 405, GatewayCodes.methodNotAllowed, 'CONNECT tunnels are not proxied');
  else sendProblem(r, 501, GatewayCodes.notImplemented, `the ${req.protocol} protocol is not served on this listener`);
}

/** What both HTTP/2 servers do with their streams; the sessions are listed under `owner` (the listening server). */
function serveStreams(s: Http2Server | Http2SecureServer, owner: object, listener: RequestListener, http1: Http1Settings, limits: Http2Limits, wheel: TimerWheel): void {
  s.on('request', listener as never);
  s.on('connect', (req: IncomingMessage | EdgeHttp2Request, res: EdgeHttp2Response | Duplex) => onConnect(owner, req, res));
  // node applies the advertised header-list limit only once the client acknowledged it: a request of the
  // first round trip is measured here (as HPACK counts, RFC 9113 §6.5.2) before node's compatibility layer
  // (its 'stream' listener, installed by the 'request' one above) turns it into a request.
  const compat = s.listeners('stream') as ((...args: unknown[]) => void)[];
  s.removeAllListeners('stream');
  s.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
    if (headerListSize(rawHeaders) > http1.maxHeaderSize) return headersTooLarge(stream);
    for (const l of compat) l.call(s, stream, headers, flags, rawHeaders);
  });
  const sessions = new Set<ServerHttp2Session>();
  sessionsOf.set(owner, sessions);
  // node makes a connection's session within its connection event, and hands out only a proxy of the socket
  // that may not be destroyed: the socket itself is taken here, for the keepalive's last resort.
  let arriving: Socket | undefined;
  s.prependListener(s instanceof TlsServer ? 'secureConnection' : 'connection', (socket: Socket) => (arriving = socket));
  s.on('session', (session: ServerHttp2Session) => {
    const socket = arriving;
    arriving = undefined;
    trackSession(session, socket, sessions, http1, limits, wheel);
  });
  // A session's protocol errors (garbage frames, a flood) end that session only; nothing to add.
  s.on('sessionError', () => {});
}

/** The client connection preface of HTTP/2 (RFC 9113 §3.4): what an h2c client with prior knowledge sends first. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Connections of a plain listener still being told apart, h2c or HTTP/1.1 (closed at shutdown). */
const sniffingOf = new WeakMap<object, Set<Socket>>();

/**
 * h2c with prior knowledge on a plain http.Server: each new connection's first bytes are compared with the
 * HTTP/2 preface; a match goes to a cleartext node:http2 server (never listening itself) with the same
 * request path, limits and compatibility objects as HTTP/2 over TLS, anything else to the http.Server's own
 * connection handling, with the bytes read put back. The cost is per connection, before its first request:
 * once handed over, nothing of this stays on the socket, so HTTP/1.1 requests run exactly as without h2c.
 * A connection that says nothing is dropped after `headersTimeout`, as node's http would drop it.
 */
export function enableH2c(server: HttpServer, listener: RequestListener, http1: Http1Settings, limits: Http2Limits = {}, wheel: TimerWheel = sharedWheel): void {
  const h2 = createHttp2Server(streamOptions(http1, limits));
  serveStreams(h2, server, listener, http1, limits, wheel);
  const http1Listeners = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  const sniffing = new Set<Socket>();
  sniffingOf.set(server, sniffing);
  server.on('connection', (socket: Socket) => new Sniff(socket, sniffing, wheel, http1.headersTimeout, (sock, isH2) => {
    if (isH2) h2.emit('connection', sock);
    else for (const l of http1Listeners) l.call(server, sock);
  }));
}

/** One connection being told apart. */
class Sniff implements Expirable {
  private buf: Buffer | undefined;
  private token = -1;
  private readonly onReadable = (): void => this.read();
  private readonly onGone = (): void => this.stop(true);

  constructor(
    private readonly socket: Socket,
    private readonly set: Set<Socket>,
    private readonly wheel: TimerWheel,
    timeoutMs: number,
    private readonly handOver: (socket: Socket, h2: boolean) => void,
  ) {
    set.add(socket);
    socket.on('readable', this.onReadable);
    socket.on('error', this.onGone);
    socket.on('close', this.onGone);
    if (timeoutMs > 0) this.token = wheel.add(wheel.clock.now() + timeoutMs, this);
  }

  onExpire(): void {
    this.token = -1;
    this.stop(true);
  }

  private read(): void {
    let chunk: Buffer | null;
    while ((chunk = this.socket.read() as Buffer | null) !== null) this.buf = this.buf === undefined ? chunk : Buffer.concat([this.buf, chunk]);
    const buf = this.buf;
    if (buf === undefined) return;
    const n = Math.min(buf.length, PREFACE.length);
    const h2 = buf.compare(PREFACE, 0, n, 0, n) === 0;
    // A prefix of the preface so far: wait for the rest (an HTTP/1.1 request line parts from it within its first bytes).
    if (h2 && buf.length < PREFACE.length) return;
    this.stop(false);
    this.socket.unshift(buf);
    this.handOver(this.socket, h2);
  }

  private stop(destroy: boolean): void {
    const s = this.socket;
    s.off('readable', this.onReadable);
    s.off('error', this.onGone);
    s.off('close', this.onGone);
    this.set.delete(s);
    if (this.token >= 0) this.wheel.remove(this.token, this);
    this.token = -1;
    if (destroy) s.destroy();
  }
}

function headerListSize(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i++) n += raw[i]!.length;
  return n + (raw.length / 2) * 32;
}

const TOO_LARGE = problemBody(GatewayCodes.headersTooLarge, 431, 'Request Header Fields Too Large');

function headersTooLarge(stream: ServerHttp2Stream): void {
  stream.on('error', () => {});
  if (stream.destroyed || stream.closed) return;
  stream.respond({ ':status': 431, 'content-type': PROBLEM_CONTENT_TYPE, 'content-length': Buffer.byteLength(TOO_LARGE) });
  if (!stream.endAfterHeaders) stream.once('finish', () => setImmediate(closeUnread, stream));
  stream.end(TOO_LARGE);
}

/** Resets a stream whose request body is still arriving `ms` after its headers (HTTP/1.1's requestTimeout). */
class StalledUpload implements Expirable {
  private token: number;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly wheel: TimerWheel,
    ms: number,
  ) {
    this.token = wheel.add(wheel.clock.now() + ms, this);
    stream.once('end', () => this.done());
  }

  onExpire(): void {
    this.token = -1;
    if (!this.stream.closed && !this.stream.destroyed) this.stream.close(constants.NGHTTP2_CANCEL);
  }

  done(): void {
    if (this.token < 0) return;
    this.wheel.remove(this.token, this);
    this.token = -1;
  }
}

function trackSession(session: ServerHttp2Session, socket: Socket | undefined, sessions: Set<ServerHttp2Session>, http1: Http1Settings, limits: Http2Limits, wheel: TimerWheel): void {
  sessions.add(session);
  let open = 0;
  keepAlive(session, socket, limits.pingIdleMs ?? 20_000, limits.pingTimeoutMs ?? 5_000, () => open > 0);
  let idle: NodeJS.Timeout | undefined;
  const arm = (): void => {
    idle = setTimeout(() => session.close(), http1.keepAliveTimeout);
    idle.unref();
  };
  session.on('stream', (stream: ServerHttp2Stream) => {
    if (open++ === 0 && idle !== undefined) clearTimeout(idle);
    // On the shared wheel, not a timer per stream: uploads are per request.
    const stalled = !stream.endAfterHeaders && http1.requestTimeout > 0 ? new StalledUpload(stream, wheel, http1.requestTimeout) : undefined;
    stream.once('close', () => {
      stalled?.done();
      if (--open === 0 && !session.closed && !session.destroyed) arm();
    });
  });
  session.once('close', () => {
    if (idle !== undefined) clearTimeout(idle);
    sessions.delete(session);
  });
  arm();
}

/**
 * HTTP/2 keepalive: a connection silent for `idleMs` (node's session timeout, refreshed by its own reads and
 * writes, no timer per stream) is sent a PING, and closed when no ACK comes within `timeoutMs`. Besides peers
 * gone without a word (a network cut under a quiet event stream), it ends connections node leaves stuck: after
 * node's HTTP/2 layer sends a GOAWAY for a protocol error (a PING of the wrong size, a stream depending on
 * itself), it neither closes the connection, as RFC 9113 §5.4.1 requires, nor sends anything more, nor tells
 * its JavaScript side, so the streams the client had opened would stay open forever, each holding an exchange,
 * its admission slot and its memory; such a connection answers no PING either.
 */
function keepAlive(session: ServerHttp2Session, socket: Socket | undefined, idleMs: number, timeoutMs: number, busy: () => boolean): void {
  if (idleMs <= 0) return;
  let waiting: NodeJS.Timeout | undefined;
  // In the stuck state node's session.destroy() ends the streams but leaves the socket open: it goes too.
  const end = (): void => {
    session.destroy();
    socket?.destroy();
  };
  session.setTimeout(idleMs, () => {
    if (waiting !== undefined || session.destroyed || !busy()) return;
    let sent = false;
    try {
      sent = session.ping((err) => {
        clearTimeout(waiting);
        waiting = undefined;
        if (err !== null && !session.destroyed) end();
      });
    } catch {
      // Closed already (node throws ERR_HTTP2_INVALID_SESSION): nothing left to keep alive.
    }
    if (!sent) return end();
    waiting = setTimeout(end, timeoutMs);
    waiting.unref();
  });
  session.once('close', () => clearTimeout(waiting));
}

/** An answer on an HTTP/2 stream (over TLS or h2c): trailers go out in a HEADERS frame, no connection headers. */
export function isHttp2Response(res: object): boolean {
  return res instanceof Http2ServerResponse;
}

/** Shutdown, first step: a GOAWAY to every HTTP/2 connection; the streams they have open finish. */
export function goAway(s: object): void {
  const sessions = sessionsOf.get(s);
  if (sessions !== undefined) for (const session of sessions) session.close();
}

/** Idle HTTP/1.1 connections closed (node's http2 server has this too, for its HTTP/1.1 connections; its types do not say so). */
export function closeIdleConnections(s: HttpServer | Http2SecureServer): void {
  (s as HttpServer).closeIdleConnections();
}

/**
 * HTTP/1.1 connections still open (idle, answering, or accepted with no request yet) and connections whose
 * protocol is still being told apart. node keeps the HTTP/1.1 ones in a list of its own that it does not
 * export; without it, none are counted.
 */
export function openConnections(s: HttpServer | Http2SecureServer): number {
  const key = Object.getOwnPropertySymbols(s).find((k) => k.description === 'http.server.connections');
  const list = key === undefined ? undefined : (s as unknown as Record<symbol, { all?: () => unknown[] } | undefined>)[key];
  return (typeof list?.all === 'function' ? list.all().length : 0) + (sniffingOf.get(s)?.size ?? 0);
}

/** Shutdown, last step: every connection, HTTP/1.1 and HTTP/2, closed now. */
export function closeAllConnections(s: HttpServer | Http2SecureServer): void {
  const sniffing = sniffingOf.get(s);
  if (sniffing !== undefined) for (const socket of [...sniffing]) socket.destroy();
  const sessions = sessionsOf.get(s);
  if (sessions === undefined) return (s as HttpServer).closeAllConnections();
  // The HTTP/1.1 connections of the HTTP/2 server are tracked by node's http code, as on an http.Server.
  HttpServer.prototype.closeAllConnections.call(s);
  for (const session of sessions) session.destroy();
}
