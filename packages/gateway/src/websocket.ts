import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, STATUS_CODES, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex, Writable } from 'node:stream';
import { PROBLEM_CONTENT_TYPE } from '@plinth/core';
import type { RequestContext } from '@plinth/sdk';
import { formatTraceparent, getLane, isStress, newTraceContext } from '@plinth/sdk/balancing';
import { isCallError, originOf, type OutboundCall, type RetryOverride, type TryContext, type TryOutcome } from '@plinth/sdk/client';
import type { Admission } from '@plinth/sdk/middleware';
import type { Identity } from './auth.js';
import { GatewayCodes, noSuchStatus, problemBody } from './errors.js';
import type { EdgeHttp2Request, EdgeHttp2Response } from './http2.js';
import { stripIncoming } from './identity-headers.js';
import { challenge, edgeAuthenticate, hostOf, type EdgeOptions, type Forwarder } from './proxy.js';
import type { GatewayMetrics } from './metrics.js';
import { normalizePath, type HeaderEdit, type LiveRoutes } from './routes.js';
import { requestIdOf } from './request-id.js';
import type { UpstreamTls } from './upstream-tls.js';

/** Upstream answer headers never passed on a refused upgrade: hop-by-hop, and the framing the gateway redoes. */
const ANSWER_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** What one handshake try with an upstream instance ended in. */
type Handshake =
  | { readonly upgraded: true; readonly res: IncomingMessage; readonly socket: Socket; readonly head: Buffer }
  | { readonly upgraded: false; readonly res: IncomingMessage };

/** Where one WebSocket handshake goes, as a listener (edge, sidecar ingress or egress) decides it. */
export interface WebSocketTarget {
  readonly service: string;
  /** The upstream path, without the query; what admission, targets and routes match. */
  readonly path: string;
  readonly query: string;
  readonly route: string | undefined;
  readonly identity: Identity | undefined;
  /** What an authorization service gave for the upstream (auth mode external). */
  readonly authHeaders?: readonly string[] | undefined;
  /** Run the service's inbound admission (edge, ingress); without it, `context` is the request's context (egress). */
  readonly admit: boolean;
  readonly context?: RequestContext | undefined;
  /** One try straight to this address (the sidecar's app), no discovery; else through the engine. */
  readonly direct?: string | undefined;
  readonly timeoutMs: number | undefined;
  /** The route's retries of the handshake. */
  readonly retry?: RetryOverride | undefined;
  /** The route's edits of the handshake request. */
  readonly requestHeaders?: HeaderEdit | undefined;
}

/** A refusal before any upstream: status, stable code, detail and extra headers. */
export interface WebSocketRefusal {
  readonly refused: true;
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly headers?: readonly string[] | undefined;
  /** Set when a route matched, for the metrics and the log. */
  readonly route?: string | undefined;
}

/** Decides a handshake's target from the request (path already normalized, without the query). */
export type WebSocketResolver = (req: IncomingMessage, path: string, query: string) => WebSocketTarget | WebSocketRefusal | Promise<WebSocketTarget | WebSocketRefusal>;

export const wsRefusal = (status: number, code: string, detail: string, headers?: readonly string[], route?: string): WebSocketRefusal => ({ refused: true, status, code, detail, headers, route });

/** The edge: the route table (matched as GET), the route's auth, then admission and the engine. */
export function edgeWebSocketResolver(routes: LiveRoutes, edge: EdgeOptions, metrics: GatewayMetrics, clientIp: (req: IncomingMessage) => string | undefined): WebSocketResolver {
  return async (req, path, query) => {
    stripIncoming(req.headers, { keepIdentity: false, keepCaller: false });
    const host = hostOf(req);
    const m = routes.table.match(host, 'GET', path, req.headers, query);
    if (m === undefined) return wsRefusal(404, GatewayCodes.routeNotFound, `no route for GET ${host}${path}`);
    const route = m.route;
    const ip = clientIp(req);
    if (route.clientIps !== undefined) {
      if (!route.clientIps.admits(ip)) return wsRefusal(403, GatewayCodes.ipForbidden, `the client address ${ip ?? '(unknown)'} may not use this route`, undefined, route.id);
    }
    if (route.service === undefined && route.split === undefined) return wsRefusal(400, GatewayCodes.badRequest, `route ${route.id} answers by itself and takes no WebSocket`, undefined, route.id);
    let identity: Identity | undefined;
    let authHeaders: readonly string[] | undefined;
    let a = edgeAuthenticate(req, route, edge, metrics);
    if (a !== undefined) {
      if (a instanceof Promise) a = await a;
      if (!a.ok) return a.answer !== undefined ? wsRefusal(a.answer.status, a.code, a.detail, a.answer.headers, route.id) : wsRefusal(a.status, a.code, a.detail, challenge(route, a.status), route.id);
      identity = a.identity;
      authHeaders = a.headers;
    }
    return { service: route.serviceFor(identity?.subject, ip)!, path: route.rewrite(path, m.params), query, route: route.id, identity, authHeaders, admit: true, timeoutMs: route.timeoutMs, retry: route.retry, requestHeaders: route.requestHeaders };
  };
}

/**
 * WebSocket upgrades (node:http's `upgrade` event) on a gateway listener. The handshake goes through the
 * same admission and outbound engine as any request (lanes, balancing, breakers, retries of the handshake,
 * deadline), after the listener's own resolution (the edge's routes and auth, the sidecar's app or egress
 * target), so a WebSocket service is governed like the rest; once the upstream answers 101, the two sockets
 * are piped byte for byte and the gateway steps aside. The admission's slot is held until the connection
 * closes, so a concurrency limit bounds open connections. A refused or failed handshake gets the same
 * problem+json answer as a request; an upstream that declines the upgrade (401, 404, ...) has its answer
 * passed on.
 */
export class WebSocketProxy {
  private readonly open = new Set<Duplex>();

  constructor(
    private readonly f: Forwarder,
    private readonly resolve: WebSocketResolver,
  ) {}

  readonly listener = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // A client that resets mid-handshake must not take the process down.
    socket.on('error', noop);
    const client = new UpgradedConnection(socket);
    this.serve(req, client, head).catch(() => client.answer(500, PROBLEM_CONTENT_TYPE, problemBody(GatewayCodes.internal, 500, 'the gateway failed to handle the upgrade'), []));
  };

  /** A WebSocket opened on an HTTP/2 stream by extended CONNECT (RFC 8441), `:protocol` already checked. */
  readonly streamListener = (req: EdgeHttp2Request, res: EdgeHttp2Response): void => {
    res.stream.on('error', noop);
    const client = new WebSocketStream(res);
    this.serve(req as unknown as IncomingMessage, client, EMPTY).catch(() => client.answer(500, PROBLEM_CONTENT_TYPE, problemBody(GatewayCodes.internal, 500, 'the gateway failed to handle the WebSocket'), []));
  };

  /** Open proxied connections. */
  get size(): number {
    return this.open.size;
  }

  /** Closes every proxied connection (the gateway is shutting down; clients reconnect elsewhere). */
  closeAll(): void {
    for (const s of this.open) s.destroy();
    this.open.clear();
  }

  private async serve(req: IncomingMessage, side: ClientSide, head: Buffer): Promise<void> {
    const client = side.duplex;
    const f = this.f;
    const started = f.o.wheel.clock.now();
    const url = req.url ?? '/';
    const rid = f.o.requestId;
    const requestId = rid !== undefined ? requestIdOf(req, rid) : undefined;
    if (rid !== undefined) side.idHeader = [rid.header, requestId!];
    const entry = { method: req.method ?? 'GET', host: hostOf(req), path: '', route: undefined as string | undefined, service: undefined as string | undefined, identity: undefined as string | undefined, requestId };
    const refused = (status: number, code: string, detail: string, extra: readonly string[] = []): void => {
      f.o.metrics.rejected(entry.route, code);
      side.answer(status, PROBLEM_CONTENT_TYPE, problemBody(code, status, detail), extra);
      this.log(entry, status, started, undefined, 0, 0, undefined, code);
    };
    if (!side.http2 && !isWebSocketUpgrade(req)) return refused(400, GatewayCodes.badRequest, 'only WebSocket upgrades (GET with upgrade: websocket) are proxied');
    if (url.charCodeAt(0) !== 47 /* / */) return refused(400, GatewayCodes.badRequest, 'expected a request target starting with /');
    const q = url.indexOf('?');
    const path = normalizePath(q < 0 ? url : url.slice(0, q));
    entry.path = path;
    const ip = f.clientIp(req);
    const t = await this.resolve(req, path, q < 0 ? '' : url.slice(q));
    entry.route = t.route;
    if ('refused' in t) return refused(t.status, t.code, t.detail, t.headers);
    entry.service = t.service;
    const identity = t.identity;
    entry.identity = identity?.subject;
    const service = t.service;
    const upPath = t.path;

    let ctx: RequestContext;
    let release = noop;
    let lane: string | undefined;
    let stress = false;
    if (t.admit) {
      const rt = f.runtimeFor(service);
      const s = rt.start('GET', upPath, req.headers, ip, identity?.subject, identity?.userId);
      const pending = s.admission;
      const a: Admission = pending instanceof Promise ? await pending : pending;
      if (!a.ok) {
        f.o.metrics.rejected(t.route, a.code);
        const extra: string[] = [];
        for (const k in a.headers) extra.push(k, a.headers[k]!);
        side.answer(a.status, a.contentType, a.body, extra);
        return this.log(entry, a.status, started, undefined, 0, 0, undefined, a.code);
      }
      let released = false;
      release = () => {
        if (released) return;
        released = true;
        a.release();
      };
      if (a.delayMs > 0) await rt.wheel.delay(a.delayMs);
      ctx = s.ctx;
      lane = s.lane;
      stress = s.stress;
    } else {
      ctx = t.context!;
      lane = getLane(ctx.baggage);
      stress = isStress(ctx.baggage);
    }
    if (client.destroyed) {
      release();
      return this.log(entry, 499, started, undefined, 0, 0, undefined, 'client_closed');
    }

    const trace = ctx.trace ?? newTraceContext();
    // Over HTTP/2 the client sends no key (RFC 8441 §5): the upstream's HTTP/1.1 handshake gets one of the gateway's.
    const key = side.http2 ? randomBytes(16).toString('base64') : undefined;
    if (key !== undefined) delete req.headers['sec-websocket-key'];
    const wire = f.wireHeaders(req, identity, ctx, t.direct !== undefined, formatTraceparent(trace), t.requestHeaders, t.authHeaders, requestId);
    wire.push('connection', 'upgrade', 'upgrade', 'websocket');
    if (key !== undefined) wire.push('sec-websocket-key', key);
    const headers = pairsToObject(wire);
    const target = upPath + t.query;
    let losing: Handshake | undefined;
    let pending: ClientRequest | undefined;
    const send = (address: string, remainingMs: number): Promise<TryOutcome<Handshake>> => {
      // A try the engine moved on from (a 5xx it retries) must not hold its connection.
      if (losing !== undefined) discard(losing);
      pending?.destroy();
      const h = handshake(address, target, headers, remainingMs, f.o.upstreamTls);
      pending = h.request;
      return h.outcome.then((out) => {
        if (out.response !== undefined) losing = out.response;
        return out;
      });
    };

    let status: number;
    let upstream: string;
    let hs: Handshake;
    try {
      if (t.direct !== undefined) {
        const now = f.o.wheel.clock.now();
        const budget = t.timeoutMs ?? f.o.defaultTimeoutMs;
        const deadline = ctx.deadlineAt === undefined ? now + budget : Math.min(ctx.deadlineAt, now + budget);
        const out = await send(t.direct, deadline - now);
        if (out.response === undefined) {
          release();
          const timedOut = out.timedOut;
          const code = timedOut ? 'deadline_exceeded' : 'upstream_error';
          side.answer(timedOut ? 504 : 502, PROBLEM_CONTENT_TYPE, problemBody(code, timedOut ? 504 : 502, `${service} ${timedOut ? 'did not answer in time' : 'failed'}`), []);
          return this.log(entry, timedOut ? 504 : 502, started, t.direct, 0, 0, trace.traceId, code);
        }
        status = out.status;
        upstream = t.direct;
        hs = out.response;
      } else {
        const call: OutboundCall = {
          method: 'GET',
          path: upPath,
          headers: req.headers as Readonly<Record<string, string>>,
          hasIdempotencyKey: false,
          hashKey: undefined,
          timeoutMs: t.timeoutMs,
          lane,
          baggage: ctx.baggage,
          deadlineAt: ctx.deadlineAt,
          stress,
          retry: t.retry,
        };
        const result = await f.engine.call(service, call, (tc: TryContext) => send(tc.endpoint.address, tc.remainingMs));
        if (result.kind === 'fallback') {
          release();
          const extra: string[] = [];
          for (const k in result.action.headers) extra.push(k, result.action.headers[k]!);
          side.answer(result.action.statusCode, result.action.contentType, result.action.body, extra);
          return this.log(entry, result.action.statusCode, started, undefined, 0, 0, trace.traceId, 'fallback');
        }
        status = result.status;
        upstream = result.endpoint.address;
        hs = result.response;
      }
    } catch (e) {
      release();
      if (!isCallError(e)) return refused(500, GatewayCodes.internal, 'the gateway failed to forward the upgrade');
      const extra = e.retryAfterMs !== undefined && e.retryAfterMs > 0 ? ['retry-after', String(Math.ceil(e.retryAfterMs / 1000))] : [];
      side.answer(e.status, PROBLEM_CONTENT_TYPE, problemBody(e.code, e.status, e.message), extra);
      return this.log(entry, e.status, started, undefined, 0, 0, trace.traceId, e.code);
    }
    losing = undefined;
    f.o.metrics.begin();
    f.o.metrics.end(t.route, status, (f.o.wheel.clock.now() - started) / 1000);
    if (!hs.upgraded) {
      release();
      side.decline(hs.res);
      return this.log(entry, hs.res.statusCode ?? 502, started, upstream, 0, 0, trace.traceId, 'upgrade_declined');
    }
    // An HTTP/1.1 client checks the accept value itself; over HTTP/2 nobody else would.
    if (key !== undefined && hs.res.headers['sec-websocket-accept'] !== acceptOf(key)) {
      release();
      hs.socket.destroy();
      side.answer(502, PROBLEM_CONTENT_TYPE, problemBody('upstream_error', 502, `${service} answered the WebSocket handshake with a wrong sec-websocket-accept`), []);
      return this.log(entry, 502, started, upstream, 0, 0, trace.traceId, 'upstream_error');
    }
    if (client.destroyed) {
      release();
      hs.socket.destroy();
      return this.log(entry, 499, started, upstream, 0, 0, trace.traceId, 'client_closed');
    }
    this.splice(side, head, hs, (reason) => {
      release();
      this.log(entry, side.http2 ? 200 : 101, started, upstream, side.bytesIn(), side.bytesOut(), trace.traceId, reason);
    });
  }

  /** Answers the client's handshake with the upstream's acceptance and joins the two sides. */
  private splice(side: ClientSide, head: Buffer, hs: Extract<Handshake, { upgraded: true }>, closed: (reason: string | undefined) => void): void {
    const client = side.duplex;
    const up = hs.socket;
    up.on('error', noop);
    this.open.add(client);
    side.accept(hs.res, up, hs.head);
    if (head.length > 0) up.write(head);
    client.pipe(up);
    up.pipe(client);
    let done = false;
    let reason: string | undefined;
    const end = (): void => {
      if (done) return;
      done = true;
      this.open.delete(client);
      client.destroy();
      up.destroy();
      closed(reason);
    };
    client.on('close', end);
    up.on('close', end);
    // Traffic either way is activity on the client's socket or stream: one timer per connection, none per message.
    const idleMs = this.f.o.websocketIdleTimeoutMs;
    if (idleMs > 0) {
      side.idle(idleMs, () => {
        reason = 'idle_timeout';
        end();
      });
    }
  }

  private log(e: { method: string; host: string; path: string; route: string | undefined; service: string | undefined; identity: string | undefined; requestId: string | undefined }, status: number, started: number, upstream: string | undefined, bytesIn: number, bytesOut: number, traceId: string | undefined, reason: string | undefined): void {
    this.f.o.accessLog.write({
      method: e.method,
      host: e.host,
      path: e.path,
      route: e.route,
      service: e.service,
      status,
      durationMs: Math.round((this.f.o.wheel.clock.now() - started) * 1000) / 1000,
      upstream,
      bytesIn,
      bytesOut,
      traceId,
      requestId: e.requestId,
      identity: e.identity,
      lane: undefined,
      stress: false,
      reason,
    });
  }
}

function noop(): void {}

const NO_ID: readonly string[] = Object.freeze([]);

/** `name: value\r\n` of a header pair, '' for none. */
function rawPair(pair: readonly string[]): string {
  return pair.length === 2 ? `${pair[0]}: ${pair[1]}\r\n` : '';
}

/** One handshake try with `address`: node:http, a connection of its own (an upgraded socket leaves any pool). */
function handshake(address: string, path: string, headers: Record<string, string | string[]>, remainingMs: number, tls: UpstreamTls | undefined): { request: ClientRequest; outcome: Promise<TryOutcome<Handshake>> } {
  const { host, port, secure } = splitAddress(address);
  // Host: the instance, as undici sends it on every other upstream request.
  const r = secure
    ? httpsRequest({ ...tls?.requestOptions(), host, port, method: 'GET', path, headers, agent: false })
    : httpRequest({ host, port, method: 'GET', path, headers, agent: false });
  const outcome = new Promise<TryOutcome<Handshake>>((resolve) => {
    let settled = false;
    const done = (out: TryOutcome<Handshake>): void => {
      if (settled) return;
      settled = true;
      resolve(out);
    };
    // A handshake is not a hot path: node's own socket timeout is simplest here.
    if (Number.isFinite(remainingMs)) {
      r.setTimeout(Math.max(1, remainingMs), () => {
        r.destroy();
        done({ status: 0, retryAfter: undefined, response: undefined, error: new Error('handshake timed out'), timedOut: true });
      });
    }
    r.on('upgrade', (res, socket, upHead) => {
      socket.setTimeout(0);
      done({ status: 101, retryAfter: undefined, response: { upgraded: true, res, socket, head: upHead }, error: undefined, timedOut: false });
    });
    r.on('response', (res) => {
      if ((res.statusCode ?? 0) > 599) {
        // As for any answer (upstream.ts): a status HTTP does not have is the upstream's failure.
        res.destroy();
        return done({ status: 0, retryAfter: undefined, response: undefined, error: noSuchStatus(res.statusCode), timedOut: false });
      }
      const ra = res.headers['retry-after'];
      done({ status: res.statusCode ?? 502, retryAfter: typeof ra === 'string' ? ra : undefined, response: { upgraded: false, res }, error: undefined, timedOut: false });
    });
    r.on('error', (error) => done({ status: 0, retryAfter: undefined, response: undefined, error, timedOut: false }));
    r.end();
  });
  return { request: r, outcome };
}

/** RFC 6455 §4.1: a GET whose Upgrade names websocket (node only emits `upgrade` when Connection says so). */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const u = req.headers.upgrade;
  return req.method === 'GET' && typeof u === 'string' && u.split(',').some((p) => p.trim().toLowerCase() === 'websocket');
}

/** An instance's address, `host:port` or a URL (`https://10.0.0.7:8443`), as node:http(s) wants it. */
function splitAddress(address: string): { host: string; port: number; secure: boolean } {
  const u = new URL(originOf(address));
  const secure = u.protocol === 'https:';
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return { host, port: u.port === '' ? (secure ? 443 : 80) : Number(u.port), secure };
}

/** node:http wants an object; repeated names become arrays, as they arrived. */
function pairsToObject(pairs: readonly string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < pairs.length; i += 2) {
    const k = pairs[i]!;
    const v = pairs[i + 1]!;
    const prev = out[k];
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
}

/** The client's side of one proxied WebSocket, as its HTTP version frames the handshake's outcome. */
interface ClientSide {
  /** What the messages flow through once open. */
  readonly duplex: Duplex;
  readonly http2: boolean;
  /** A complete answer; then the connection (HTTP/1.1) or the stream (HTTP/2) closes: an unanswered handshake cannot go on. */
  answer(status: number, contentType: string, body: string | Buffer, extra: readonly string[]): void;
  /** With request IDs on: the header and this handshake's ID, added to whatever the client is answered. */
  idHeader: readonly string[];
  /** The upstream declined the upgrade: its status, headers and body go to the client. */
  decline(res: IncomingMessage): void;
  /** The upstream's 101, as this client's success, then what the upstream sent after it (`early`) and will send (`up`). */
  accept(res: IncomingMessage, up: Duplex, early: Buffer): void;
  bytesIn(): number;
  bytesOut(): number;
  /** Calls `onIdle` once nothing has passed either way for `ms`. */
  idle(ms: number, onIdle: () => void): void;
}

/** An HTTP/1.1 connection that asked to upgrade: answers are written raw on its socket. */
class UpgradedConnection implements ClientSide {
  readonly http2 = false;
  idHeader: readonly string[] = NO_ID;

  constructor(readonly duplex: Duplex) {}

  answer(status: number, contentType: string, body: string | Buffer, extra: readonly string[]): void {
    const socket = this.duplex;
    if (socket.destroyed) return;
    let head = `${statusLine(status)}content-type: ${contentType}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n`;
    for (let i = 0; i + 1 < extra.length; i += 2) head += `${extra[i]}: ${extra[i + 1]}\r\n`;
    head += rawPair(this.idHeader);
    socket.end(Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), typeof body === 'string' ? Buffer.from(body) : body]));
  }

  decline(res: IncomingMessage): void {
    const socket = this.duplex;
    let head = statusLine(res.statusCode ?? 502);
    const raw = res.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      if (!ANSWER_HOP.has(raw[i]!.toLowerCase())) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    socket.write(`${head}${rawPair(this.idHeader)}connection: close\r\n\r\n`, 'latin1');
    res.on('error', () => socket.destroy());
    res.pipe(socket);
  }

  /** The upstream's 101 as it sent it: Sec-WebSocket-Accept, the chosen protocol and extensions are its business. */
  accept(res: IncomingMessage, _up: Duplex, early: Buffer): void {
    let head = statusLine(101);
    const raw = res.rawHeaders;
    const id = this.idHeader[0];
    // The ID is the gateway's to give: an upstream that echoes it back does not give it twice.
    for (let i = 0; i + 1 < raw.length; i += 2) if (id === undefined || raw[i]!.toLowerCase() !== id) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
    this.duplex.write(`${head}${rawPair(this.idHeader)}\r\n`, 'latin1');
    if (early.length > 0) this.duplex.write(early);
  }

  bytesIn(): number {
    return (this.duplex as Partial<Socket>).bytesRead ?? 0;
  }

  bytesOut(): number {
    return (this.duplex as Partial<Socket>).bytesWritten ?? 0;
  }

  idle(ms: number, onIdle: () => void): void {
    (this.duplex as Socket).setTimeout?.(ms, onIdle);
  }
}

/**
 * A WebSocket on an HTTP/2 stream (RFC 8441): the handshake's outcome is the stream's answer, 200 for an open
 * connection, and the messages are the stream's DATA. The upstream still gets an HTTP/1.1 handshake.
 */
class WebSocketStream implements ClientSide {
  readonly http2 = true;
  idHeader: readonly string[] = NO_ID;
  readonly duplex: Duplex;
  private read = 0;
  private written = 0;

  constructor(private readonly res: EdgeHttp2Response) {
    this.duplex = res.stream;
  }

  answer(status: number, contentType: string, body: string | Buffer, extra: readonly string[]): void {
    const res = this.res;
    if (res.stream.destroyed) return;
    if (res.headersSent) return void res.stream.destroy();
    res.writeHead(status, ['content-type', contentType, 'content-length', String(Buffer.byteLength(body)), ...extra, ...this.idHeader]);
    res.end(body);
  }

  decline(up: IncomingMessage): void {
    const res = this.res;
    const headers: string[] = [];
    const raw = up.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      if (!ANSWER_HOP.has(name)) headers.push(name, raw[i + 1]!);
    }
    for (const x of this.idHeader) headers.push(x);
    res.writeHead(up.statusCode ?? 502, headers);
    up.on('error', () => res.stream.destroy());
    up.pipe(res as unknown as Writable);
  }

  accept(answer: IncomingMessage, up: Duplex, early: Buffer): void {
    const headers: OutgoingHttpHeaders = { ':status': 200 };
    const raw = answer.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      // The accept value proves the key the gateway sent; the client sent none (RFC 8441 §5).
      if (ANSWER_HOP.has(name) || name === 'sec-websocket-accept' || name === 'content-length') continue;
      const prev = headers[name];
      headers[name] = prev === undefined ? raw[i + 1]! : Array.isArray(prev) ? [...prev, raw[i + 1]!] : [String(prev), raw[i + 1]!];
    }
    if (this.idHeader.length === 2) headers[this.idHeader[0]!] = this.idHeader[1]!;
    const s = this.res.stream;
    s.respond(headers);
    if (early.length > 0) s.write(early);
    // Streams keep no byte counts of their own: counted for the access log, an addition per chunk each way.
    this.written = early.length;
    s.on('data', (c: Buffer) => (this.read += c.length));
    up.on('data', (c: Buffer) => (this.written += c.length));
  }

  bytesIn(): number {
    return this.read;
  }

  bytesOut(): number {
    return this.written;
  }

  idle(ms: number, onIdle: () => void): void {
    this.res.stream.setTimeout(ms, onIdle);
  }
}

/** RFC 6455 §4.2.2: what the upstream must answer to `key`. */
function acceptOf(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}

const EMPTY = Buffer.alloc(0);

function discard(h: Handshake): void {
  if (h.upgraded) h.socket.destroy();
  else h.res.destroy();
}
