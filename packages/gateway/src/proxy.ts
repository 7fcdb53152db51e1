import type { IncomingMessage, ServerResponse } from 'node:http';
import { Headers, PROBLEM_CONTENT_TYPE, type FallbackAction } from '@plinth/core';
import { type GovernanceSource, type RequestContext } from '@plinth/sdk';
import { formatTraceparent, newTraceContext, parseTraceparent, serializeBaggage, setStress, type Baggage, type TraceContext } from '@plinth/sdk/balancing';
import { EndpointPools, isCallError, OutboundEngine, type EngineResult, type OutboundCall, type TryContext, type TryOutcome } from '@plinth/sdk/client';
import { InboundRuntime, type Admission, type Rejection, type TrustMode } from '@plinth/sdk/middleware';
import type { TimerWheel } from '@plinth/sdk/resilience';
import { startClientSpan, startServerSpan, type ServerSpanHandle, type Tracing } from '@plinth/sdk/tracing';
import type { Redis } from 'ioredis';
import type { Dispatcher } from 'undici';
import type { AccessLog } from './access-log.js';
import type { Authenticator, AuthOutcome, Identity, RoleIndex } from './auth.js';
import type { OidcVerifier } from './oidc.js';
import { BodyTooLargeError, planBody, readBody, type BodyPlan, type BodyReader, type UpstreamBody } from './body.js';
import { authenticateCert, clientCertOf, forwardedCert, XFCC_HEADER } from './client-cert.js';
import { EdgeInboundGovernance } from './engine-governance.js';
import { GatewayCodes, problemBody } from './errors.js';
import { grpcMessage, grpcStatusOf, isGrpcRequest } from './grpc-status.js';
import { deadlineHeaders } from './deadline-headers.js';
import { REQUEST_ID_ATTRIBUTE, requestIdOf, type CompiledRequestId } from './request-id.js';
import { decodeTextBody, grpcRequestHeaders, grpcWebContentType, grpcWebModeOf, GrpcWebAnswer, type GrpcWebMode } from './grpc-web.js';
import type { CompiledCompression } from './compression.js';
import type { ExternalAuthorizer } from './external-auth.js';
import { pushIdentity, pushIncomingIdentity, stripIncoming } from './identity-headers.js';
import type { GatewayMetrics } from './metrics.js';
import { Mirror } from './mirror.js';
import type { UpstreamTls } from './upstream-tls.js';
import { normalizePath, type CompiledCors, type CompiledRoute, type HeaderEdit, type LiveRoutes } from './routes.js';
import { connectionTokens, TRY_TIMEOUT, UpstreamTry, type Sink } from './upstream.js';

function isTrailers(v: string | string[] | undefined): boolean {
  return typeof v === 'string' && v.trim().toLowerCase() === 'trailers';
}

/** Request headers never forwarded: hop-by-hop (RFC 9110 §7.6.1), the host, and the ones the gateway sets itself. */
const REQUEST_SKIP = new Set([
  // Rewritten per try with what is left of the budget.
  Headers.grpcTimeout,
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'expect',
  Headers.traceparent,
  Headers.baggage,
  Headers.timeout,
  Headers.caller,
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
  'plinth-identity',
  'plinth-identity-roles',
  'plinth-identity-via',
]);

const NO_HEADERS: readonly string[] = Object.freeze([]);
const EXCHANGE = Symbol('plinth.gateway.exchange');

/** The state of one request through the gateway; also the sink its answer streams into. */
export class Exchange implements Sink {
  readonly res: ServerResponse;
  readonly startedAt: number;
  method: string;
  host = '';
  path = '';
  ip: string | undefined;
  route: CompiledRoute | undefined;
  service: string | undefined;
  upstream: string | undefined;
  identity: Identity | undefined;
  /** What an authorization service gave for the upstream (auth mode external). */
  authHeaders: readonly string[] | undefined = undefined;
  lane: string | undefined;
  stress = false;
  traceId: string | undefined;
  reason: string | undefined;
  bytesIn = 0;
  bytesOut = 0;
  extraHeaders: readonly string[] = NO_HEADERS;
  /** With `requestId` on: this request's, also the first pair of `extraHeaders`. */
  requestId: string | undefined;
  current: UpstreamTry | undefined;
  release: (() => void) | undefined;
  span: ServerSpanHandle | undefined;
  // The upstream request, shared by every try.
  upPath = '';
  wire: string[] = [];
  body: UpstreamBody | undefined;
  /** Sent upstream when the try has no client span of its own (then it is in `wire` already). */
  traceparent = '';
  /** With tracing, through the engine: each try is a client span, child of this (the hop's server span, or the app's at the egress). */
  clientParent: TraceContext | undefined;
  clientSpans = false;
  /** The fixed upstream of a sidecar's app (no discovery), else undefined: the engine picks the endpoint. */
  direct: Dispatcher | undefined;
  /** The client sent grpc-timeout: each try sends it again with the budget left. */
  grpcTimeout = false;
  /** A refusal answered as a gRPC status (HTTP 200): the HTTP status it stands for, for metrics, log and span. */
  refusedAs = 0;
  grpcStatus: number | undefined;
  /** A gRPC-Web call translated to gRPC: its answer is turned back on the way out. */
  grpcWeb: GrpcWebAnswer | undefined;

  constructor(
    readonly forwarder: Forwarder,
    readonly req: IncomingMessage,
    res: ServerResponse,
    startedAt: number,
  ) {
    this.res = res;
    this.startedAt = startedAt;
    this.method = req.method ?? 'GET';
  }

  get compression(): CompiledCompression | undefined {
    return this.route?.compression;
  }

  get acceptEncoding(): string | undefined {
    const v = this.req.headers['accept-encoding'];
    return typeof v === 'string' ? v : undefined;
  }

  brokenOff(error: Error): void {
    this.forwarder.brokenOff(this, error);
  }
}

export interface ForwarderOptions {
  /** The gateway's name: `plinth-caller` upstream, and the caller targets' `callers` match. */
  self: string;
  governance: GovernanceSource;
  wheel: TimerWheel;
  metrics: GatewayMetrics;
  accessLog: AccessLog;
  trust: TrustMode;
  /** Keep identity headers a previous hop set (sidecar ingress behind an edge gateway). */
  trustIdentityHeaders: boolean;
  /** Inject FaultInjection faults here (the sidecar, which is the callee's inbound); the edge leaves them to the callee. */
  injectFaults: boolean;
  /** Proxy hops in front of the gateway whose X-Forwarded-For / Forwarded entries are believed. */
  trustProxy: number;
  /** The listener verifies client certificates: a verified one is passed on in `x-forwarded-client-cert`. */
  clientCerts: boolean;
  connectionsPerEndpoint: number;
  /** TLS to instances registered with an https:// address (CA, client certificate, server identity); default node's. */
  upstreamTls?: UpstreamTls | undefined;
  defaultTimeoutMs: number;
  /** GatewayOptions.streamIdleTimeoutMs, 0 without: for routes without their own and for the sidecar. */
  streamIdleMs: number;
  mirrorMaxInFlight: number;
  /** A proxied WebSocket with no traffic either way for this long is closed; 0: never. */
  websocketIdleTimeoutMs: number;
  tracing: Tracing | undefined;
  redis: Redis | undefined;
  zone: string | undefined;
  /** Worker processes serving as this one gateway: each counts its share of local rate and concurrency limits. */
  processes: number;
  requestId: CompiledRequestId | undefined;
}

/**
 * What the edge, the sidecar ingress and the sidecar egress share: admission through the SDK's inbound
 * pipeline (one runtime per upstream service, built on first use), the outbound engine with a streaming
 * `send` on undici, answers, and the end-of-request accounting (metrics, access log, span).
 */
export class Forwarder {
  /** The one engine: every call shares its breakers, balancers, ejections and retry budgets. */
  readonly engine: OutboundEngine;
  readonly pools: EndpointPools;
  private readonly mirror: Mirror;
  private readonly runtimes = new Map<string, InboundRuntime>();
  private readonly inboundGovernance: GovernanceSource;
  inFlight = 0;
  draining = false;
  private onIdle: (() => void) | undefined;

  constructor(readonly o: ForwarderOptions) {
    const tls = o.upstreamTls;
    const pools = (this.pools = new EndpointPools({
      connectionsPerEndpoint: o.connectionsPerEndpoint,
      closedMessage: 'gateway closed',
      dispatcherFactory: tls === undefined ? undefined : (origin, protocol) => tls.dispatcher(origin, protocol, o.connectionsPerEndpoint),
    }));
    this.engine = new OutboundEngine({
      self: o.self,
      governance: o.governance,
      zone: o.zone,
      defaultTimeoutMs: o.defaultTimeoutMs,
      wheel: o.wheel,
      metrics: o.metrics.outbound,
      onEndpointsChange: (service, prev, next) => pools.endpointsChanged(service, prev, next),
    });
    this.inboundGovernance = o.injectFaults ? o.governance : new EdgeInboundGovernance(o.governance);
    this.mirror = new Mirror(this.engine, pools, o.wheel, o.metrics, o.mirrorMaxInFlight);
  }

  /** Starts the bookkeeping of a request; its end (finish or client gone) is accounted once, in `ended`. */
  begin(req: IncomingMessage, res: ServerResponse): Exchange {
    const ex = new Exchange(this, req, res, this.o.wheel.clock.now());
    (res as unknown as Record<symbol, Exchange>)[EXCHANGE] = ex;
    res.on('close', onResponseClose);
    this.inFlight++;
    this.o.metrics.begin();
    if (this.draining && !res.headersSent) res.setHeader('connection', 'close');
    const rid = this.o.requestId;
    if (rid !== undefined) ex.extraHeaders = [rid.header, (ex.requestId = requestIdOf(req, rid))];
    return ex;
  }

  ended(ex: Exchange): void {
    const res = ex.res;
    const finished = res.writableFinished;
    // A try that is not the answer (the gateway answered itself) must not hold its pooled connection.
    ex.current?.abort();
    ex.release?.();
    ex.release = undefined;
    // An answer the upstream broke off midway counts as the gateway's 502 (504 past the deadline), not as a
    // client that left.
    const status = finished ? ex.refusedAs || res.statusCode : ex.reason === 'upstream_error' ? 502 : ex.reason === 'deadline_exceeded' ? 504 : 0;
    const seconds = (this.o.wheel.clock.now() - ex.startedAt) / 1000;
    this.o.metrics.end(ex.route?.id, status, seconds);
    // What arrived of a body that streamed, which a gRPC call's or a chunked one's headers do not say.
    if (ex.body?.kind === 'stream') ex.bytesIn = ex.body.data.size;
    if (ex.grpcStatus !== undefined) this.o.metrics.grpcEnd(ex.route?.id, ex.grpcStatus);
    ex.span?.end(status === 0 ? 499 : status, undefined, ex.grpcStatus);
    this.o.accessLog.write({
      method: ex.method,
      host: ex.host,
      path: ex.path,
      route: ex.route?.id,
      service: ex.service,
      status: status === 0 ? 499 : status,
      durationMs: Math.round(seconds * 1e6) / 1000,
      upstream: ex.upstream,
      bytesIn: ex.bytesIn,
      bytesOut: ex.bytesOut,
      traceId: ex.traceId,
      requestId: ex.requestId,
      identity: ex.identity?.subject,
      lane: ex.lane,
      stress: ex.stress,
      reason: finished ? ex.reason : (ex.reason ?? 'client_closed'),
      grpcStatus: ex.grpcStatus,
    });
    this.inFlight--;
    if (this.draining) this.onIdle?.();
  }

  /** Resolves once no request is in flight, or after `timeoutMs` (false). */
  drained(timeoutMs: number): Promise<boolean> {
    if (this.inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.onIdle = undefined;
        resolve(false);
      }, timeoutMs);
      this.onIdle = () => {
        if (this.inFlight > 0) return;
        clearTimeout(timer);
        this.onIdle = undefined;
        resolve(true);
      };
    });
  }

  runtimeFor(service: string): InboundRuntime {
    let rt = this.runtimes.get(service);
    if (rt === undefined) {
      rt = new InboundRuntime({
        service,
        governance: this.inboundGovernance,
        trust: this.o.trust,
        wheel: this.o.wheel,
        processes: this.o.processes,
        ...(this.o.redis !== undefined ? { redis: this.o.redis } : {}),
      });
      this.runtimes.set(service, rt);
    }
    return rt;
  }

  /** The client's address; behind `trustProxy` hops, what the nearest trusted hop saw. */
  clientIp(req: IncomingMessage): string | undefined {
    const direct = req.socket.remoteAddress;
    if (this.o.trustProxy <= 0) return direct;
    const xff = req.headers['x-forwarded-for'];
    if (typeof xff !== 'string' || xff === '') return direct;
    const parts = xff.split(',');
    const i = parts.length - this.o.trustProxy;
    return (parts[Math.max(0, i)] ?? '').trim() || direct;
  }

  /**
   * Runs the inbound policies of `service` for the request. Undefined: refused (and answered). Else the
   * request context (trace, baggage with internal keys only for trusted senders, lane entered, deadline).
   * With tracing, the hop's SERVER span starts here, so refusals are traced too and the span covers the wait.
   */
  async admit(ex: Exchange, service: string, path: string): Promise<RequestContext | undefined> {
    const rt = this.runtimeFor(service);
    const id = ex.identity;
    const s = rt.start(ex.method, path, ex.req.headers, ex.ip, id?.subject, id?.userId);
    ex.lane = s.lane;
    ex.stress = s.stress;
    let ctx = s.ctx;
    const tracing = this.o.tracing;
    if (tracing !== undefined) {
      const parent = parseTraceparent(headerOf(ex.req, Headers.traceparent));
      const span = (ex.span = startServerSpan(tracing, { method: ex.method, route: ex.route?.id ?? service, traceparent: parent, lane: s.lane, stress: s.stress, caller: ctx.caller }));
      if (ex.requestId !== undefined) span.span?.setAttribute(REQUEST_ID_ATTRIBUTE, ex.requestId);
      if (span.traceContext !== undefined) ctx = { trace: span.traceContext, baggage: ctx.baggage, deadlineAt: ctx.deadlineAt, caller: ctx.caller };
    }
    ex.traceId = ctx.trace?.traceId;
    const pending = s.admission;
    const a: Admission = pending instanceof Promise ? await pending : pending;
    if (!a.ok) {
      this.reject(ex, a);
      return undefined;
    }
    ex.release = a.release;
    if (ex.res.destroyed) return undefined;
    if (a.delayMs > 0) await rt.wheel.delay(a.delayMs);
    return ctx;
  }

  reject(ex: Exchange, r: Rejection): void {
    ex.reason = r.code;
    this.o.metrics.rejected(ex.route?.id, r.code);
    const head: string[] = [];
    for (const k in r.headers) head.push(k, r.headers[k]!);
    this.answer(ex, r.status, r.contentType, r.body, head, r.code);
  }

  /**
   * Sends the request to `service` through the engine (`ex.lane` and `ex.stress` already set from `ctx`, by
   * admission or by the caller) (or, with `direct`, to one fixed upstream, for the
   * sidecar's app) and streams the answer back.
   */
  async forward(ex: Exchange, service: string, upPath: string, ctx: RequestContext, plan: BodyPlan, maxBody: number, timeoutMs: number | undefined, direct?: Dispatcher): Promise<void> {
    const req = ex.req;
    ex.service = service;
    const cl = req.headers['content-length'];
    if (cl !== undefined) ex.bytesIn = Number(cl) || 0;
    // gRPC-Web from a browser, to an upstream that speaks gRPC (the route's choice; edge routes only).
    const web = ex.route?.spec.grpcWeb === 'translate' ? grpcWebModeOf(req.headers['content-type']) : undefined;
    let body: UpstreamBody;
    try {
      // A gRPC call streams from its first byte: a bidirectional one's client waits for answers before it ends.
      const b = readBody(req, plan, maxBody, plan.kind === 'read' && web === undefined && isGrpcRequest(req, ex.res));
      body = b instanceof Promise ? await b : b;
      if (body.kind === 'whole' && body.data !== null) ex.bytesIn = body.data.length;
      if (web === 'text') body = await decodedText(body, ex);
    } catch (e) {
      if (e instanceof BodyTooLargeError) return this.tooLarge(ex, maxBody);
      ex.reason = 'client_closed';
      return;
    }
    ex.body = body;
    ex.upPath = upPath;
    const trace = ctx.trace ?? newTraceContext();
    ex.traceparent = formatTraceparent(trace);
    ex.traceId = trace.traceId;
    if (this.o.tracing !== undefined && direct === undefined) {
      // The edge's tries are children of its server span; the egress has none (it is the app's client), so
      // its tries are children of the span the app named in its traceparent.
      ex.clientSpans = true;
      ex.clientParent = ex.span !== undefined ? ex.span.traceContext : parseTraceparent(headerOf(req, Headers.traceparent));
    }
    ex.wire = this.wireHeaders(req, ex.identity, ctx, direct !== undefined, ex.clientSpans ? undefined : ex.traceparent, ex.route?.requestHeaders, ex.authHeaders, ex.requestId);
    if (web !== undefined) {
      ex.wire = grpcRequestHeaders(ex.wire, web);
      ex.grpcWeb = new GrpcWebAnswer(web);
    }
    ex.grpcTimeout = req.headers[Headers.grpcTimeout] !== undefined;
    ex.direct = direct;

    if (direct !== undefined) return this.forwardDirect(ex, service, ctx, timeoutMs);
    const mirror = ex.route?.mirror;
    if (mirror !== undefined && (mirror.share >= 1 || Math.random() < mirror.share)) this.copyTo(mirror.service, ex, body, ctx, timeoutMs, web !== undefined);

    const call: OutboundCall = {
      method: ex.method,
      path: pathOnly(upPath),
      headers: req.headers as Readonly<Record<string, string>>,
      hasIdempotencyKey: req.headers[Headers.idempotencyKey] !== undefined,
      hashKey: undefined,
      timeoutMs,
      lane: ex.lane,
      baggage: ctx.baggage,
      deadlineAt: ctx.deadlineAt,
      stress: ex.stress,
      // A body streaming through is sent again only while its copy is kept; else one try, under the same
      // breakers and balancer as the rest.
      retryable: body.kind === 'whole' || body.data.replayable,
      replay: body.kind === 'stream' && body.data.replayable ? body.data : undefined,
      retry: ex.route?.retry,
    };
    let r: EngineResult<UpstreamTry>;
    try {
      r = await this.engine.callWith(service, call, this.sendOf, ex);
    } catch (e) {
      return this.callFailed(ex, e, maxBody);
    }
    if (r.kind === 'fallback') return this.fallback(ex, r.action);
    ex.upstream = r.endpoint.address;
    r.response.healthTo(r.late);
    this.deliver(ex, r.response);
  }

  /** The try's answer to the client, or a whole 502/504 when the upstream broke it off before any of it left. */
  private deliver(ex: Exchange, t: UpstreamTry): void {
    if (ex.res.destroyed) return;
    const broken = t.brokenOff;
    if (broken === undefined) t.attach(ex, this.head(t, ex));
    else this.brokenOff(ex, broken);
  }

  brokenOff(ex: Exchange, error: Error): void {
    if (error === TRY_TIMEOUT) return this.problem(ex, 504, 'deadline_exceeded', `${ex.service} did not finish its answer in time`);
    this.problem(ex, 502, 'upstream_error', `${ex.service} broke off its answer: ${errorText(error)}`);
  }

  /**
   * A shadow copy of the request to `service` (the route's mirror), with the pressure-test mark in its
   * baggage, so that the mirror's services keep it out of real figures and data. Only a body read whole can
   * be sent twice; a streaming one (large, or a gRPC call's) and gRPC-Web calls are skipped.
   */
  private copyTo(service: string, ex: Exchange, body: UpstreamBody, ctx: RequestContext, timeoutMs: number | undefined, web: boolean): void {
    const route = ex.route!;
    if (body.kind !== 'whole' || web) return this.mirror.skip(route.id);
    const baggage: Baggage = new Map(ctx.baggage);
    setStress(baggage, true);
    const wire = this.wireHeaders(ex.req, ex.identity, { trace: ctx.trace, baggage, deadlineAt: ctx.deadlineAt, caller: ctx.caller }, false, ex.traceparent, route.requestHeaders, ex.authHeaders, ex.requestId);
    this.mirror.copy({
      route: route.id,
      service,
      method: ex.method,
      path: pathOnly(ex.upPath),
      upPath: ex.upPath,
      requestHeaders: ex.req.headers,
      wire,
      body: body.data,
      baggage,
      timeoutMs: timeoutMs ?? this.o.defaultTimeoutMs,
      deadlineAt: ctx.deadlineAt,
    });
  }

  /** One try straight to a fixed upstream (no discovery), under the request's deadline. */
  private async forwardDirect(ex: Exchange, service: string, ctx: RequestContext, timeoutMs: number | undefined): Promise<void> {
    const now = this.o.wheel.clock.now();
    let deadline = ctx.deadlineAt;
    const budget = timeoutMs ?? this.o.defaultTimeoutMs;
    deadline = deadline === undefined ? now + budget : Math.min(deadline, now + budget);
    if (deadline <= now) return this.problem(ex, 504, 'deadline_exceeded', `the deadline passed before the request reached ${service}`);
    const out = await this.sendTry(ex, { service, endpoint: undefined as never, attempt: 1, deadlineAt: deadline, remainingMs: deadline - now });
    if (out.status === 0 || out.response === undefined) {
      if (out.error instanceof BodyTooLargeError) return this.tooLarge(ex, out.error.limit);
      if (out.timedOut) return this.problem(ex, 504, 'deadline_exceeded', `${service} did not answer in time`);
      return this.problem(ex, 502, 'upstream_error', `${service} failed: ${errorText(out.error)}`);
    }
    this.deliver(ex, out.response);
  }

  private head(t: UpstreamTry, ex: Exchange): string[] {
    const head = t.responseHead(ex.extraHeaders, ex.route?.responseHeaders, ex.requestId !== undefined ? this.o.requestId?.header : undefined);
    // Draining: the client's next request must go to another gateway, not to this closing one.
    if (this.draining) head.push('connection', 'close');
    return head;
  }

  /**
   * The engine's transport: one function for every request, the exchange its argument. With a closure per
   * request here (made inside `forward` and held by the engine's call and the exchange), a quarter of all
   * the bytes the gateway allocated survived each young-generation collection instead of under 2 %, at
   * 13 ms a collection and 30-40 µs a request on V8's helper threads (docs/benchmarks.md).
   */
  private readonly sendOf = (t: TryContext, ex: Exchange): Promise<TryOutcome<UpstreamTry>> => this.sendTry(ex, t);

  private sendTry(ex: Exchange, t: TryContext): Promise<TryOutcome<UpstreamTry>> {
    const prev = ex.current;
    if (prev !== undefined) {
      ex.current = undefined;
      prev.discard();
    }
    const wheel = this.o.wheel;
    return new Promise<TryOutcome<UpstreamTry>>((resolve) => {
      const h = new UpstreamTry(resolve, wheel);
      h.idleMs = ex.route !== undefined && ex.route.streamIdleMs > 0 ? ex.route.streamIdleMs : this.o.streamIdleMs;
      const b = ex.body;
      let data: Buffer | BodyReader | null = null;
      if (b !== undefined) data = b.kind === 'whole' ? b.data : (h.body = b.data.open());
      ex.current = h;
      let dispatcher: Dispatcher;
      try {
        dispatcher = ex.direct ?? this.pools.get(t.service, t.endpoint.address, t.endpoint.metadata);
      } catch (e) {
        h.fail(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      let headers = ex.wire;
      if (ex.clientSpans) {
        // A span per try, as the SDK client does: each try is its own call to a (possibly different) instance.
        const span = (h.span = startClientSpan(this.o.tracing!, { callee: t.service, address: t.endpoint.address, method: ex.method, lane: ex.lane, stress: ex.stress, parent: ex.clientParent }));
        const tp = span.traceparent ?? ex.traceparent;
        if (t.deadlineAt !== undefined) {
          h.token = wheel.add(t.deadlineAt, h);
          headers = deadlineHeaders(headers, ex.grpcTimeout, t.deadlineAt - wheel.clock.now(), tp);
        } else headers = headers.concat(Headers.traceparent, tp);
      } else if (t.deadlineAt !== undefined) {
        h.token = wheel.add(t.deadlineAt, h);
        headers = deadlineHeaders(headers, ex.grpcTimeout, t.deadlineAt - wheel.clock.now());
      }
      try {
        dispatcher.dispatch(
          {
            path: ex.upPath,
            method: ex.method as Dispatcher.HttpMethod,
            headers,
            body: data,
            // The engine decides about retries; undici must not replay on its own.
            idempotent: false,
          },
          h,
        );
      } catch (e) {
        h.fail(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /**
   * The upstream request's headers, flat: the client's minus hop-by-hop and owned ones, plus forwarding,
   * identity and context. `traceparent` undefined: each try adds its own (it has a client span).
   */
  wireHeaders(req: IncomingMessage, identity: Identity | undefined, ctx: RequestContext, direct: boolean, traceparent: string | undefined, edit?: HeaderEdit, authHeaders?: readonly string[], requestId?: string): string[] {
    const h = req.headers;
    const ridHeader = requestId !== undefined ? this.o.requestId?.header : undefined;
    const drop = connectionTokens(h.connection);
    const out: string[] = [];
    // An API key is a long-lived credential: verified here, it goes no further (the identity headers say who it was).
    const viaKey = identity?.via === 'apiKey';
    for (const name in h) {
      if (REQUEST_SKIP.has(name) || (drop !== undefined && drop.includes(name))) {
        // The one TE an HTTP/2 hop may carry, and what gRPC servers ask of their callers (RFC 9113 §8.2.2).
        if (name === 'te' && isTrailers(h.te)) out.push('te', 'trailers');
        continue;
      }
      if (viaKey && (name === 'x-api-key' || name === 'authorization')) continue;
      if (edit !== undefined && edit.drop.has(name)) continue;
      if (name === ridHeader) continue;
      const v = h[name];
      if (v === undefined) continue;
      if (typeof v === 'string') out.push(name, v);
      else for (const x of v) out.push(name, x);
    }
    // The route's own: names the gateway sets below are not editable (the Route kind refuses them).
    if (edit !== undefined) {
      for (let i = 0; i + 1 < edit.append.length; i += 2) if (edit.append[i] !== ridHeader) out.push(edit.append[i]!, edit.append[i + 1]!);
    }
    if (ridHeader !== undefined) out.push(ridHeader, requestId!);
    const trusted = this.o.trustProxy > 0;
    const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
    const proto = encrypted ? 'https' : 'http';
    if (encrypted && this.o.clientCerts) {
      const xfcc = forwardedCert(clientCertOf(req), Date.now());
      if (xfcc !== undefined) out.push(XFCC_HEADER, xfcc);
    }
    const ip = req.socket.remoteAddress ?? '';
    const xff = trusted ? headerOf(req, 'x-forwarded-for') : undefined;
    out.push('x-forwarded-for', xff ? `${xff}, ${ip}` : ip);
    out.push('x-forwarded-proto', (trusted ? headerOf(req, 'x-forwarded-proto') : undefined) ?? proto);
    out.push('x-forwarded-host', (trusted ? headerOf(req, 'x-forwarded-host') : undefined) ?? (headerOf(req, 'host') ?? ''));
    const fwd = `for=${forwardedNode(ip)};host=${quoteIfNeeded(headerOf(req, 'host') ?? '')};proto=${proto}`;
    const prevFwd = trusted ? headerOf(req, 'forwarded') : undefined;
    out.push('forwarded', prevFwd ? `${prevFwd}, ${fwd}` : fwd);
    // Straight to the app (sidecar ingress), the caller is whoever called; through the engine, it is us.
    const caller = direct ? ctx.caller : this.o.self;
    if (caller !== undefined) out.push(Headers.caller, caller);
    if (authHeaders !== undefined) for (let i = 0; i < authHeaders.length; i++) out.push(authHeaders[i]!);
    if (identity !== undefined) pushIdentity(out, identity, this.rolesOf?.(identity.subject) ?? []);
    else if (this.o.trustIdentityHeaders) pushIncomingIdentity(out, h);
    if (ctx.baggage.size > 0) {
      const b = serializeBaggage(ctx.baggage);
      if (b.length > 0) out.push(Headers.baggage, b);
    }
    if (traceparent !== undefined) out.push(Headers.traceparent, traceparent);
    return out;
  }

  /**
   * The scheme the client used: the connection's, or behind `--trust-proxy` what the proxies say
   * (X-Forwarded-Proto's first value, the outermost hop's, as a TLS-terminating load balancer sets it).
   */
  schemeOf(req: IncomingMessage): 'http' | 'https' {
    if (this.o.trustProxy > 0) {
      const v = headerOf(req, 'x-forwarded-proto');
      if (v !== undefined) {
        const first = v.split(',')[0]!.trim().toLowerCase();
        if (first === 'https' || first === 'http') return first;
      }
    }
    return (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http';
  }

  /** Set by the edge (roles of verified identities). */
  rolesOf: ((subject: string) => readonly string[]) | undefined;

  private callFailed(ex: Exchange, e: unknown, maxBody: number): void {
    if (isCallError(e)) {
      if (e.cause instanceof BodyTooLargeError) return this.tooLarge(ex, maxBody);
      const headers: string[] = [];
      if (e.retryAfterMs !== undefined && e.retryAfterMs > 0) headers.push('retry-after', String(Math.ceil(e.retryAfterMs / 1000)));
      return this.problem(ex, e.status, e.code, e.message, headers);
    }
    this.problem(ex, 500, GatewayCodes.internal, 'the gateway failed to forward the request');
  }

  private fallback(ex: Exchange, a: FallbackAction): void {
    ex.reason = 'fallback';
    const head: string[] = [];
    for (const k in a.headers) head.push(k, a.headers[k]!);
    this.answer(ex, a.statusCode, a.contentType, a.body, head);
  }

  tooLarge(ex: Exchange, limit: number): void {
    this.o.metrics.rejected(ex.route?.id, GatewayCodes.bodyTooLarge);
    // The rest of the body is not read: the connection cannot be reused.
    this.problem(ex, 413, GatewayCodes.bodyTooLarge, `the request body is larger than ${limit} bytes`, ['connection', 'close']);
  }

  problem(ex: Exchange, status: number, code: string, detail: string, headers: readonly string[] = NO_HEADERS): void {
    ex.reason = code;
    this.answer(ex, status, PROBLEM_CONTENT_TYPE, problemBody(code, status, detail), headers, detail);
  }

  /**
   * A complete answer from the gateway itself; CORS headers of the exchange included. To a gRPC client, a
   * refusal (4xx, 5xx) is a gRPC status instead, with `detail` (else the reason) as its message.
   */
  answer(ex: Exchange, status: number, contentType: string, body: string | Buffer, headers: readonly string[], detail?: string): void {
    const res = ex.res;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (res.destroyed) return;
    if (status >= 400) {
      const message = detail ?? ex.reason ?? `HTTP ${status}`;
      if (isGrpcRequest(ex.req, res)) return this.grpcRefusal(ex, status, message, headers);
      const web = grpcWebModeOf(ex.req.headers['content-type']);
      if (web !== undefined) return this.grpcWebRefusal(ex, web, status, message, headers);
    }
    const len = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    ex.bytesOut += len;
    res.writeHead(status, this.ownHead(ex, ['content-type', contentType, 'content-length', String(len)], headers));
    res.end(body);
  }

  /** The head of an answer the gateway makes itself: `head`, the refusal's `headers`, CORS, and `close` while draining. */
  private ownHead(ex: Exchange, head: string[], headers: readonly string[]): string[] {
    for (let i = 0; i < headers.length; i++) head.push(headers[i]!);
    for (let i = 0; i < ex.extraHeaders.length; i++) head.push(ex.extraHeaders[i]!);
    if (this.draining) head.push('connection', 'close');
    return head;
  }

  /** HTTP 200, the status in trailers (after the headers, as node's HTTP/2 compatibility API sends them). */
  /**
   * A refusal to a gRPC-Web client: HTTP 200 with the status in the headers (a trailers-only answer, which
   * gRPC-Web clients read as such), so the browser sees UNAUTHENTICATED or RESOURCE_EXHAUSTED, not a
   * transport error. Route CORS must expose grpc-status and grpc-message for a page to read them.
   */
  private grpcWebRefusal(ex: Exchange, web: GrpcWebMode, status: number, message: string, headers: readonly string[]): void {
    ex.refusedAs = status;
    ex.grpcStatus = grpcStatusOf(status, ex.reason);
    ex.res.writeHead(200, this.ownHead(ex, ['content-type', grpcWebContentType(web), 'grpc-status', String(ex.grpcStatus), 'grpc-message', grpcMessage(message)], headers));
    ex.res.end();
  }

  private grpcRefusal(ex: Exchange, status: number, message: string, headers: readonly string[]): void {
    ex.refusedAs = status;
    // A stream closed with unread request data is reset, which would drop the trailers: the rest of the request
    // is read and discarded (a stream still uploading after the request timeout is reset, as any).
    ex.req.resume();
    const head: string[] = ['content-type', 'application/grpc'];
    // Retry-After, RateLimit-*, CORS: kept; connection-level ones mean nothing on an HTTP/2 stream.
    for (let i = 0; i + 1 < headers.length; i += 2) if (headers[i] !== 'connection') head.push(headers[i]!, headers[i + 1]!);
    for (let i = 0; i < ex.extraHeaders.length; i++) head.push(ex.extraHeaders[i]!);
    ex.res.writeHead(200, head);
    ex.grpcStatus = grpcStatusOf(status, ex.reason);
    ex.res.addTrailers({ 'grpc-status': String(ex.grpcStatus), 'grpc-message': grpcMessage(message) });
    ex.res.end();
  }

  async close(): Promise<void> {
    for (const rt of this.runtimes.values()) rt.close();
    this.runtimes.clear();
    await this.pools.close();
  }
}

function onResponseClose(this: ServerResponse): void {
  const ex = (this as unknown as Record<symbol, Exchange | undefined>)[EXCHANGE];
  if (ex === undefined) return;
  (this as unknown as Record<symbol, Exchange | undefined>)[EXCHANGE] = undefined;
  ex.forwarder.ended(ex);
}

const EMPTY_BODY = Buffer.alloc(0);

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : Array.isArray(v) ? v.join(', ') : undefined;
}

function pathOnly(pathAndQuery: string): string {
  const q = pathAndQuery.indexOf('?');
  return q < 0 ? pathAndQuery : pathAndQuery.slice(0, q);
}

/** RFC 7239: IPv6 nodes are quoted and bracketed. */
function forwardedNode(ip: string): string {
  if (ip.startsWith('::ffff:') && ip.includes('.')) return ip.slice(7);
  return ip.includes(':') ? `"[${ip}]"` : ip || 'unknown';
}

// A gateway sees few distinct hosts: the last answer is the next one's, nearly always.
let lastHost = '';
let lastQuoted = '';
function quoteIfNeeded(v: string): string {
  if (v === lastHost) return lastQuoted;
  lastHost = v;
  return (lastQuoted = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------------------
// The edge: routes, CORS, auth, then the forwarder
// ---------------------------------------------------------------------------------------------------------

export interface EdgeOptions {
  routes: LiveRoutes;
  auth: Authenticator | undefined;
  /** End users' tokens (routes of auth mode oidc). */
  oidc: OidcVerifier;
  roles: RoleIndex | undefined;
  /** The listener verifies client certificates (`tls.clientCa`), so routes of mode mtls can take them. */
  clientCerts: boolean;
  /** Routes of auth mode external: their authorization services, called through the engine. */
  external: ExternalAuthorizer;
}

/**
 * A route's auth on a request: a certificate (mode mtls) or a token or key. Shared by requests and WebSocket
 * handshakes; undefined when the route is anonymous.
 */
export function edgeAuthenticate(req: IncomingMessage, route: CompiledRoute, o: EdgeOptions, metrics: GatewayMetrics): AuthOutcome | Promise<AuthOutcome> | undefined {
  const auth = route.auth;
  if (auth.mode === 'anonymous') return undefined;
  if (auth.mode === 'mtls') {
    const c = authenticateCert(req, auth, o.clientCerts, o.roles);
    if (c.reason !== undefined) metrics.mtlsRefused(c.reason);
    return c.outcome;
  }
  if (auth.mode === 'oidc') return o.oidc.authenticate(req.headers, auth.oidc!);
  if (auth.mode === 'external') return o.external.authorize(req, auth.external!);
  if (o.auth === undefined) return NO_PROVIDER;
  return o.auth.authenticate(req.headers, auth);
}

const NO_PROVIDER: AuthOutcome = { ok: false, status: 503, code: GatewayCodes.authUnavailable, detail: 'this gateway has no identity provider configured' };

/** What a 401 says about how to authenticate: a bearer challenge for tokens; a certificate has no HTTP scheme. */
export function challenge(route: CompiledRoute, status: number): readonly string[] {
  return status === 401 && route.auth.mode !== 'mtls' ? BEARER_CHALLENGE : NO_HEADERS;
}

const BEARER_CHALLENGE: readonly string[] = Object.freeze(['www-authenticate', 'Bearer realm="plinth"']);

/** The edge gateway's request listener. */
export class EdgeProxy {
  constructor(
    private readonly f: Forwarder,
    private readonly o: EdgeOptions,
  ) {
    f.rolesOf = o.roles ? (s) => o.roles!.rolesOf(s) : undefined;
  }

  readonly listener = (req: IncomingMessage, res: ServerResponse): void => {
    const ex = this.f.begin(req, res);
    this.serve(ex).catch(() => this.f.problem(ex, 500, GatewayCodes.internal, 'the gateway failed to handle the request'));
  };

  private async serve(ex: Exchange): Promise<void> {
    const f = this.f;
    const req = ex.req;
    const url = req.url ?? '/';
    if (url.charCodeAt(0) !== 47 /* / */) return f.problem(ex, 400, GatewayCodes.badRequest, 'expected a request target starting with /');
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    const path = normalizePath(rawPath);
    const query = q < 0 ? '' : url.slice(q);
    ex.path = path;
    ex.host = hostOf(req);
    ex.ip = f.clientIp(req);
    stripIncoming(req.headers, { keepIdentity: false, keepCaller: false });

    const table = this.o.routes.table;
    const origin = req.headers.origin;
    const acrm = req.headers['access-control-request-method'];
    const preflight = ex.method === 'OPTIONS' && origin !== undefined && typeof acrm === 'string';
    let m = preflight ? table.match(ex.host, acrm.toUpperCase(), path, req.headers, query) : undefined;
    if (m === undefined || (preflight && m.route.cors === undefined)) m = table.match(ex.host, ex.method, path, req.headers, query) ?? m;
    if (m === undefined) return f.problem(ex, 404, GatewayCodes.routeNotFound, `no route for ${ex.method} ${ex.host}${path}`);
    const route = m.route;
    ex.route = route;
    if (route.clientIps !== undefined && !route.clientIps.admits(ex.ip)) {
      f.o.metrics.rejected(route.id, GatewayCodes.ipForbidden);
      return f.problem(ex, 403, GatewayCodes.ipForbidden, `the client address ${ex.ip ?? '(unknown)'} may not use this route`);
    }

    const cors = route.cors;
    if (cors !== undefined && origin !== undefined) {
      if (preflight) return this.preflight(ex, cors, origin, (acrm as string).toUpperCase());
      if (originAllowed(cors, origin)) ex.extraHeaders = ex.extraHeaders.length === 0 ? corsHeaders(cors, origin) : ex.extraHeaders.concat(corsHeaders(cors, origin));
    }

    let a = edgeAuthenticate(req, route, this.o, f.o.metrics);
    if (a !== undefined) {
      if (a instanceof Promise) a = await a;
      if (!a.ok) {
        f.o.metrics.rejected(route.id, a.code);
        const v = a.answer;
        if (v !== undefined) {
          ex.reason = a.code;
          return f.answer(ex, v.status, v.contentType, v.body, v.headers, a.detail);
        }
        return f.problem(ex, a.status, a.code, a.detail, challenge(route, a.status));
      }
      ex.identity = a.identity;
      ex.authHeaders = a.headers;
    }

    const st = route.staticAnswer;
    if (st !== undefined) {
      const head: string[] = [];
      let type = 'text/plain; charset=utf-8';
      for (const k in st.headers) {
        if (k.toLowerCase() === 'content-type') type = st.headers[k]!;
        else head.push(k, st.headers[k]!);
      }
      return f.answer(ex, st.status, type, st.body, head);
    }
    const rd = route.redirect;
    if (rd !== undefined) {
      const location = rd.location(f.schemeOf(req), headerOf(req, 'host') ?? '', path, m.params, query);
      if (location === undefined) return f.problem(ex, 400, GatewayCodes.badRequest, 'the Host header is no host name to redirect to');
      return f.answer(ex, rd.status, 'text/plain; charset=utf-8', EMPTY_BODY, ['location', location]);
    }

    const plan = planBody(req, route.maxBodyBytes);
    if (plan.kind === 'tooLarge') return f.tooLarge(ex, route.maxBodyBytes);
    const service = route.serviceFor(ex.identity?.subject, ex.ip)!;
    const upPath = route.rewrite(path, m.params);
    const ctx = await f.admit(ex, service, upPath);
    if (ctx === undefined) return;
    await f.forward(ex, service, upPath + query, ctx, plan, route.maxBodyBytes, route.timeoutMs);
  }

  private preflight(ex: Exchange, cors: CompiledCors, origin: string, method: string): void {
    if (!originAllowed(cors, origin) || !cors.methods.has(method)) {
      return this.f.problem(ex, 403, GatewayCodes.corsRejected, `CORS: ${origin} may not send ${method} here`, ['vary', 'origin']);
    }
    const head = corsHeaders(cors, origin).concat('access-control-allow-methods', cors.allowMethods, 'access-control-max-age', cors.maxAge);
    if (cors.allowHeaders !== '') head.push('access-control-allow-headers', cors.allowHeaders);
    const res = ex.res;
    ex.reason = 'preflight';
    res.writeHead(204, head);
    res.end();
  }
}

function originAllowed(c: CompiledCors, origin: string | undefined): boolean {
  return origin !== undefined && (c.anyOrigin || c.origins.has(origin));
}

function corsHeaders(c: CompiledCors, origin: string): string[] {
  const out = ['access-control-allow-origin', c.anyOrigin && !c.credentials ? '*' : origin, 'vary', 'origin'];
  if (c.credentials) out.push('access-control-allow-credentials', 'true');
  if (c.exposeHeaders !== '') out.push('access-control-expose-headers', c.exposeHeaders);
  return out;
}

/** The Host header, lower case, without the port. */
export function hostOf(req: IncomingMessage): string {
  const h = req.headers.host;
  if (h === undefined || h === '') return '';
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']');
    return (end < 0 ? h : h.slice(0, end + 1)).toLowerCase();
  }
  const colon = h.indexOf(':');
  return (colon < 0 ? h : h.slice(0, colon)).toLowerCase();
}

/** A gRPC-Web `-text` request body, base64 decoded; it is sent whole (gRPC-Web calls carry no client stream). */
async function decodedText(body: UpstreamBody, ex: Exchange): Promise<UpstreamBody> {
  if (body.kind === 'whole') return body.data === null ? body : { kind: 'whole', data: decodeTextBody(body.data) };
  const chunks: Buffer[] = [];
  const rest = body.data.open();
  let error: unknown;
  try {
    for await (const c of rest) chunks.push(c as Buffer);
  } catch (e) {
    error = e;
  }
  // A body stopped early ends without an error of its own; its reason (over the limit) is on it.
  if (rest.failure !== undefined) throw rest.failure;
  if (error !== undefined) throw error;
  const whole = Buffer.concat(chunks);
  ex.bytesIn = whole.length;
  return { kind: 'whole', data: decodeTextBody(whole) };
}
