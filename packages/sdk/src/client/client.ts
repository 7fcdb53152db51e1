import { Headers } from '@plinth/core';
import type { Registry } from 'prom-client';
import { Pool, type Dispatcher } from 'undici';
import { defaultPool, type UpstreamProtocol } from './pools.js';
import { getLane, isStress, serializeBaggage, setLane, type Baggage } from '../balancing/baggage.js';
import type { Random } from '../balancing/balancer.js';
import { childTraceparent, FLAG_SAMPLED, randomSpanId, randomTraceId, type TraceContext } from '../balancing/traceparent.js';
import { currentContext } from '../context.js';
import type { GovernanceSource } from '../governance/source.js';
import type { Clock } from '../ratelimit/clock.js';
import { formatTimeout } from '../resilience/deadline.js';
import { OutboundEngine, type CalleeInfo, type EngineResult, type OutboundCall, type RetryOverride, type SendCallback, type TryContext, type TryOutcome, type TryReceiver, type Wheel } from './engine.js';
import { HttpTransport, type HttpResult, type HttpTrySource } from './http-transport.js';
import { outboundMetrics } from './metrics.js';
import { startClientSpan, type ClientSpanHandle, type Tracing } from '../tracing/hooks.js';

export interface ClientOptions {
  /** This service's name: sent as plinth-caller, matched against targets' `callers`. */
  self: string;
  governance: GovernanceSource;
  /** The caller's zone, for zoneAware balancing. */
  zone?: string;
  /** undici Pool size per endpoint (pipelining 1). Default 64. */
  connectionsPerEndpoint?: number;
  /** Call budget when there is no timeout rule and no inherited deadline. Default 30000. */
  defaultTimeoutMs?: number;
  /** Must share its time base with `wheel` and with inherited deadlines (`RequestContext.deadlineAt`). */
  clock?: Clock;
  random?: Random;
  wheel?: Wheel;
  /**
   * Default `new Pool(origin, { connections, pipelining: 1 })`, or cleartext HTTP/2 for an instance whose
   * metadata says `plinth.dev/protocol: h2c`.
   */
  dispatcherFactory?: (origin: string, protocol: UpstreamProtocol) => Dispatcher;
  /**
   * For instances registered with an https:// address: the CA bundle they are verified against (default the
   * system's roots) and the client certificate presented to those that ask (mutual TLS, as a sidecar's
   * ingress with `--tls-client-ca` does). PEM text or bytes. Ignored when `dispatcherFactory` is given.
   */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** Outbound RED metrics, breaker states, retries and ejections are registered here. */
  metrics?: Registry;
  /** A client span per try (`createTracing` from `@plinth/sdk/tracing`); without it, context is only propagated. */
  tracing?: Tracing;
}

export interface CallOptions {
  method?: string;
  /** Path and query. */
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Sent as Idempotency-Key; makes a non-idempotent method retryable. */
  idempotencyKey?: string;
  /** Consistent-hash key; overrides the LoadBalancing hashKey source. */
  hashKey?: string;
  /** Budget of the whole call (retries included); the inherited deadline can only shorten it. */
  timeoutMs?: number;
  /** Overrides the lane inherited from baggage. */
  lane?: string;
  /**
   * Tries and retry statuses for this call instead of the matching FaultTolerance rule's; the backoff and the
   * retry budget stay the callee's. Keep one object per purpose (a module constant): the client keeps one
   * policy per object.
   */
  retry?: RetryOverride;
}

export interface CallResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
  /** The instance that answered; undefined for a fallback. */
  readonly endpoint: string | undefined;
  readonly attempts: number;
  /** The rule's fallbackAction, served because a breaker was open or the bulkhead full. */
  readonly fallback: boolean;
  text(): string;
  json<T = unknown>(): T;
}

class Response implements CallResponse {
  constructor(
    readonly status: number,
    readonly headers: Record<string, string | string[]>,
    readonly body: Buffer,
    readonly endpoint: string | undefined,
    readonly attempts: number,
    readonly fallback: boolean,
  ) {}

  text(): string {
    return this.body.toString('utf8');
  }

  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }
}

/** Headers the client owns on the wire; a caller's values for them are replaced, not duplicated. */
const OWNED = new Set<string>([Headers.traceparent, Headers.tracestate, Headers.baggage, Headers.timeout, Headers.caller, Headers.idempotencyKey]);

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * One call: what the engine sees of it (OutboundCall), the HTTP request the transport sends on each try
 * (HttpTrySource) and the per-call state of `send`, in one object (no closure, no second object per call).
 * Each try's header list is built at its final length in one go, not concatenated.
 */
class Outgoing implements OutboundCall, HttpTrySource {
  /** The current try's client span (tries are sequential, so one slot is enough). */
  span: ClientSpanHandle | undefined = undefined;

  constructor(
    readonly method: string,
    /** Without the query string: what targets and routes match. */
    readonly path: string,
    /** Path and query: what is sent. */
    readonly target: string,
    /** Lower-case names, as the caller gave them (for hash keys and routes). */
    readonly headers: Readonly<Record<string, string>>,
    /** Sent on every try; without caller headers, idempotency key or baggage, the client's shared [caller, self]. */
    readonly wire: readonly string[],
    readonly body: string | Uint8Array | undefined,
    readonly hasIdempotencyKey: boolean,
    readonly hashKey: string | undefined,
    readonly timeoutMs: number | undefined,
    readonly lane: string | undefined,
    readonly baggage: Baggage | undefined,
    readonly deadlineAt: number | undefined,
    readonly stress: boolean,
    /** The trace the tries belong to (the inherited one, or a new root: which needs no span id of its own unless traced). */
    readonly traceId: string,
    readonly flags: number,
    /** The span the tries are children of, when tracing (created on the first traced try of a new trace). */
    public parent: TraceContext | undefined,
    readonly retry: RetryOverride | undefined,
  ) {}

  headersFor(t: TryContext): readonly string[] {
    const base = this.wire;
    // A span per try: each try is its own client call to a (possibly different) instance.
    const tp = this.span?.traceparent ?? childTraceparent(this.traceId, this.flags);
    const timed = t.deadlineAt !== undefined;
    if (base.length === 2) {
      const n = base[0]!;
      const v = base[1]!;
      return timed ? [n, v, Headers.traceparent, tp, Headers.timeout, formatTimeout(t.remainingMs)] : [n, v, Headers.traceparent, tp];
    }
    const h = base.slice();
    h.push(Headers.traceparent, tp);
    if (timed) h.push(Headers.timeout, formatTimeout(t.remainingMs));
    return h;
  }
}


/** Ends a try's client span, then passes the outcome on. */
class SpanEnd implements TryReceiver<HttpResult> {
  constructor(
    private readonly span: ClientSpanHandle,
    private readonly next: TryReceiver<HttpResult>,
  ) {}

  tryDone(out: TryOutcome<HttpResult>): void {
    try {
      this.span.end(out.status === 0 ? undefined : out.status, out.error);
    } catch (e) {
      // Tracing must not break the call it describes.
      process.emitWarning(e instanceof Error ? e : new Error(String(e)), 'PlinthTracingError');
    }
    this.next.tryDone(out);
  }
}

function plain(transport: HttpTransport): SendCallback<HttpResult, Outgoing> {
  return (t, o, receiver) => transport.dispatchTry(t, o, receiver);
}

function traced(tracing: Tracing, transport: HttpTransport): SendCallback<HttpResult, Outgoing> {
  return (t, o, receiver) => {
    const parent = (o.parent ??= { traceId: o.traceId, spanId: randomSpanId(), flags: o.flags });
    let span: ClientSpanHandle;
    try {
      span = o.span = startClientSpan(tracing, { callee: t.service, address: t.endpoint.address, method: o.method, lane: o.lane, stress: o.stress, parent });
    } catch (error) {
      receiver.tryDone({ status: 0, retryAfter: undefined, response: undefined, error, timedOut: false });
      return;
    }
    transport.dispatchTry(t, o, new SpanEnd(span, receiver));
  };
}

function toResponse(r: EngineResult<HttpResult>): CallResponse {
  if (r.kind === 'response') return new Response(r.status, r.response.headers, r.response.body, r.endpoint.id, r.attempts, false);
  const a = r.action;
  return new Response(a.statusCode, { ...a.headers, 'content-type': a.contentType }, Buffer.from(a.body ?? ''), undefined, r.attempts, true);
}

/** `pathOf` of governance/match.ts (the path without query and fragment), in one scan instead of two indexOf calls. */
function pathOnly(url: string): string {
  for (let i = 0; i < url.length; i++) {
    const ch = url.charCodeAt(i);
    if (ch === 63 || ch === 35) return url.slice(0, i); // '?' or '#'
  }
  return url;
}

/** `s.toUpperCase()`, without the new string when it already is (methods nearly always are). */
function upperCase(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    if ((ch >= 97 && ch <= 122) || ch > 127) return s.toUpperCase();
  }
  return s;
}

/**
 * The outbound service client: calls another service by name through the governance engine (lane and
 * version routing, load balancing with outlier ejection, breakers, deadline, retries under a budget,
 * bulkhead, fallback) and undici. Trace, baggage and deadline of the request being served
 * (`currentContext()`) are inherited.
 */
export class ServiceClient {
  readonly engine: OutboundEngine;
  private readonly transport: HttpTransport;
  private readonly self: string;
  /** The headers of a call that adds none of its own. */
  private readonly callerHeader: readonly string[];
  private readonly send: SendCallback<HttpResult, Outgoing>;

  constructor(o: ClientOptions) {
    this.self = o.self;
    this.callerHeader = Object.freeze([Headers.caller, o.self]);
    let transport: HttpTransport | undefined;
    this.engine = new OutboundEngine({
      self: o.self,
      governance: o.governance,
      zone: o.zone,
      defaultTimeoutMs: o.defaultTimeoutMs,
      clock: o.clock,
      random: o.random,
      wheel: o.wheel,
      metrics: o.metrics ? outboundMetrics(o.metrics) : undefined,
      onEndpointsChange: (service, prev, next) => transport?.endpointsChanged(service, prev, next),
    });
    const connections = o.connectionsPerEndpoint ?? 64;
    this.transport = transport = new HttpTransport({
      connectionsPerEndpoint: connections,
      dispatcherFactory: o.dispatcherFactory ?? (o.tls === undefined ? undefined : tlsDispatchers(o.tls, connections)),
      wheel: this.engine.wheel,
      clock: this.engine.clock,
    });
    this.send = o.tracing === undefined ? plain(transport) : traced(o.tracing, transport);
  }

  /**
   * Calls `service`. Resolves with the upstream's answer whatever its status (after retries), or with the
   * rule's fallback; rejects with a CallError (no_endpoint, lane_unavailable, circuit_open, bulkhead_full,
   * deadline_exceeded, upstream_error) when there is no answer to give.
   */
  request(service: string, opts: CallOptions): Promise<CallResponse> {
    try {
      return this.start(service, opts);
    } catch (err) {
      // A bad argument rejects, as it did when this was an async function.
      return Promise.reject(err);
    }
  }

  private start(service: string, opts: CallOptions): Promise<CallResponse> {
    const method = opts.method === undefined ? 'GET' : upperCase(opts.method);
    const ctx = currentContext();
    let baggage: Baggage | undefined = ctx?.baggage;
    const inheritedLane = baggage ? getLane(baggage) : undefined;
    const lane = opts.lane === undefined ? inheritedLane : opts.lane === '' || opts.lane === 'base' ? undefined : opts.lane;
    if (lane !== inheritedLane) {
      // The lane override travels on, so the callee's own calls stay in it; the inbound baggage is not touched.
      baggage = new Map(baggage);
      setLane(baggage, lane);
    }

    let wire = this.callerHeader;
    let lower: Record<string, string> = NO_HEADERS as Record<string, string>;
    let idemKey = opts.idempotencyKey;
    const hasBaggage = baggage !== undefined && baggage.size > 0;
    if (opts.headers !== undefined || idemKey !== undefined || hasBaggage) {
      const w: string[] = [];
      if (opts.headers !== undefined) {
        lower = {};
        for (const name in opts.headers) {
          const v = opts.headers[name];
          if (v === undefined) continue;
          const n = name.toLowerCase();
          lower[n] = v;
          if (n === Headers.idempotencyKey) idemKey ??= v;
          if (!OWNED.has(n)) w.push(n, v);
        }
      }
      w.push(Headers.caller, this.self);
      if (idemKey !== undefined) w.push(Headers.idempotencyKey, idemKey);
      if (hasBaggage) {
        const b = serializeBaggage(baggage!);
        if (b.length > 0) w.push(Headers.baggage, b);
      }
      wire = w;
    }

    const trace = ctx?.trace;
    const out = new Outgoing(
      method,
      pathOnly(opts.path),
      opts.path,
      lower,
      wire,
      opts.body,
      idemKey !== undefined,
      opts.hashKey,
      opts.timeoutMs,
      lane,
      baggage,
      ctx?.deadlineAt,
      baggage !== undefined && isStress(baggage),
      trace === undefined ? randomTraceId() : trace.traceId,
      trace === undefined ? FLAG_SAMPLED : trace.flags,
      trace,
      opts.retry,
    );
    return this.engine.dispatch(service, out, this.send, out, toResponse);
  }

  /** Breakers and ejections of one callee (for the console and tests). */
  inspect(service: string): CalleeInfo {
    return this.engine.inspect(service);
  }

  /** Closes every connection pool; in-flight calls finish first. */
  close(): Promise<void> {
    return this.transport.close();
  }
}

export function createClient(opts: ClientOptions): ServiceClient {
  return new ServiceClient(opts);
}

/** Pools that speak TLS with `tls` to https:// origins, and plain HTTP to the rest. */
function tlsDispatchers(tls: NonNullable<ClientOptions['tls']>, connections: number): (origin: string, protocol: UpstreamProtocol) => Dispatcher {
  if ((tls.cert === undefined) !== (tls.key === undefined)) throw new TypeError('createClient: tls.cert and tls.key go together');
  const connect = { ...(tls.ca !== undefined ? { ca: tls.ca } : {}), ...(tls.cert !== undefined ? { cert: tls.cert } : {}), ...(tls.key !== undefined ? { key: tls.key } : {}) };
  return (origin, protocol) => (origin.startsWith('https:') ? new Pool(origin, { connections, pipelining: 1, connect }) : defaultPool(origin, protocol, connections));
}
