import { Headers } from '@plinth/core';
import type { Registry } from 'prom-client';
import type { Dispatcher } from 'undici';
import { getLane, isStress, serializeBaggage, setLane, type Baggage } from '../balancing/baggage.js';
import type { Random } from '../balancing/balancer.js';
import { childContext, formatTraceparent, newTraceContext, type TraceContext } from '../balancing/traceparent.js';
import { currentContext } from '../context.js';
import { pathOf } from '../governance/match.js';
import type { GovernanceSource } from '../governance/source.js';
import type { Clock } from '../ratelimit/clock.js';
import { formatTimeout } from '../resilience/deadline.js';
import { OutboundEngine, type CalleeInfo, type OutboundCall, type TryContext, type Wheel } from './engine.js';
import { HttpTransport, type HttpResult, type HttpTryRequest } from './http-transport.js';
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
  /** Default `new Pool(origin, { connections, pipelining: 1 })`. */
  dispatcherFactory?: (origin: string) => Dispatcher;
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

class Outgoing implements HttpTryRequest {
  /** The current try's client span (tries are sequential, so one slot is enough). */
  span: ClientSpanHandle | undefined;

  constructor(
    readonly method: string,
    readonly path: string,
    readonly headers: readonly string[],
    readonly body: string | Uint8Array | undefined,
    private readonly trace: TraceContext,
    private readonly clock: Clock,
  ) {}

  tryHeaders(t: TryContext): readonly string[] {
    // A span per try: each try is its own client call to a (possibly different) instance.
    const tp = this.span?.traceparent ?? formatTraceparent(childContext(this.trace));
    if (t.deadlineAt === undefined) return [Headers.traceparent, tp];
    return [Headers.traceparent, tp, Headers.timeout, formatTimeout(Math.max(0, t.deadlineAt - this.clock.now()))];
  }
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
  private readonly tracing: Tracing | undefined;

  constructor(o: ClientOptions) {
    this.self = o.self;
    this.tracing = o.tracing;
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
    this.transport = transport = new HttpTransport({
      connectionsPerEndpoint: o.connectionsPerEndpoint ?? 64,
      dispatcherFactory: o.dispatcherFactory,
      wheel: this.engine.wheel,
      clock: this.engine.clock,
    });
  }

  /**
   * Calls `service`. Resolves with the upstream's answer whatever its status (after retries), or with the
   * rule's fallback; rejects with a CallError (no_endpoint, lane_unavailable, circuit_open, bulkhead_full,
   * deadline_exceeded, upstream_error) when there is no answer to give.
   */
  async request(service: string, opts: CallOptions): Promise<CallResponse> {
    const method = (opts.method ?? 'GET').toUpperCase();
    const ctx = currentContext();
    let baggage: Baggage | undefined = ctx?.baggage;
    const inheritedLane = baggage ? getLane(baggage) : undefined;
    const lane = opts.lane === undefined ? inheritedLane : opts.lane === '' || opts.lane === 'base' ? undefined : opts.lane;
    if (lane !== inheritedLane) {
      // The lane override travels on, so the callee's own calls stay in it; the inbound baggage is not touched.
      baggage = new Map(baggage);
      setLane(baggage, lane);
    }

    const wire: string[] = [];
    let lower: Record<string, string> = NO_HEADERS as Record<string, string>;
    let idemKey = opts.idempotencyKey;
    if (opts.headers !== undefined) {
      lower = {};
      for (const name in opts.headers) {
        const v = opts.headers[name];
        if (v === undefined) continue;
        const n = name.toLowerCase();
        lower[n] = v;
        if (n === Headers.idempotencyKey) idemKey ??= v;
        if (!OWNED.has(n)) wire.push(n, v);
      }
    }
    wire.push(Headers.caller, this.self);
    if (idemKey !== undefined) wire.push(Headers.idempotencyKey, idemKey);
    if (baggage !== undefined && baggage.size > 0) {
      const b = serializeBaggage(baggage);
      if (b.length > 0) wire.push(Headers.baggage, b);
    }

    const call: OutboundCall = {
      method,
      path: pathOf(opts.path),
      headers: lower,
      hasIdempotencyKey: idemKey !== undefined,
      hashKey: opts.hashKey,
      timeoutMs: opts.timeoutMs,
      lane,
      baggage,
      deadlineAt: ctx?.deadlineAt,
      stress: baggage !== undefined && isStress(baggage),
    };
    const trace = ctx?.trace ?? newTraceContext();
    const out = new Outgoing(method, opts.path, wire, opts.body, trace, this.engine.clock);
    const transport = this.transport;
    const tracing = this.tracing;
    const send =
      tracing === undefined
        ? (t: TryContext) => transport.send(t, out)
        : async (t: TryContext) => {
            const span = (out.span = startClientSpan(tracing, { callee: service, address: t.endpoint.address, method, lane, stress: call.stress, parent: trace }));
            try {
              const o = await transport.send(t, out);
              span.end(o.status === 0 ? undefined : o.status, o.error);
              return o;
            } catch (e) {
              span.end(undefined, e);
              throw e;
            }
          };
    const r = await this.engine.call<HttpResult>(service, call, send);
    if (r.kind === 'response') return new Response(r.status, r.response.headers, r.response.body, r.endpoint.id, r.attempts, false);
    const a = r.action;
    return new Response(a.statusCode, { ...a.headers, 'content-type': a.contentType }, Buffer.from(a.body ?? ''), undefined, r.attempts, true);
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
