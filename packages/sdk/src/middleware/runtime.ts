import type { IncomingHttpHeaders } from 'node:http';
import { getLane, isStress } from '../balancing/baggage.js';
import { parseTraceparent } from '../balancing/traceparent.js';
import type { Span } from '@opentelemetry/api';
import { runWithContext, type RequestContext } from '../context.js';
import { beginServerSpan, endServerSpan, runInServerSpan, serverSpanName, type Tracing } from '../tracing/hooks.js';
import { nowMs, PlinthSpan } from '../tracing/span.js';
import { Headers } from '@plinth/core';
import { pathOf } from '../governance/match.js';
import type { CompiledTraffic } from '../governance/traffic.js';
import { monotonicClock, type Clock } from '../ratelimit/clock.js';
import { sharedWheel, type TimerWheel } from '../resilience/timer-wheel.js';
import { compiledTrafficOf, headerValue, inboundContext, type ContextOptions, type TrustMode } from '../inbound/context.js';
import { ADMIT } from '../inbound/lease.js';
import { OTHER_ROUTE, type InboundMetrics } from '../inbound/metrics.js';
import { InboundPipeline, type Admission, type InboundOptions } from '../inbound/pipeline.js';
import type { Rejection } from '../inbound/rejection.js';

/** Options every adapter takes: the pipeline's, plus how the request context is built. */
export interface PlinthOptions extends InboundOptions {
  /** Who may send internal baggage; default `mesh` (see TrustMode). */
  trust?: TrustMode;
  /** Counts requests, durations, rejections and in-flight; none when absent. */
  metrics?: InboundMetrics;
  /** Where admitted requests wait out throttles and injected delays (and queue timeouts run); default `sharedWheel`. */
  wheel?: TimerWheel;
  /** A server span per request (`createTracing` from `@plinth/sdk/tracing`); none when absent. */
  tracing?: Tracing;
}

/** One request on its way through an adapter. */
export interface Started {
  readonly ctx: RequestContext;
  readonly lane: string | undefined;
  readonly stress: boolean;
  readonly method: string;
  readonly startedAt: number;
  readonly admission: Admission | Promise<Admission>;
  /** The request's server span, when tracing is on (and not in mode `off`). */
  readonly span: Span | undefined;
}

/**
 * What `InboundRuntime.start` returns: the Started fields, plus the slots an adapter keeps per request
 * (one object per request for all of it, so that end-of-response listeners can be shared functions).
 */
export class Call implements Started {
  /** The admission's release, once admitted. */
  release: (() => void) | undefined = undefined;
  /** The response ended (finish called, or the client left). */
  ended = false;
  /** The framework's request object, for the adapter to read the route template from at the end. */
  carrier: unknown = undefined;

  constructor(
    readonly runtime: InboundRuntime,
    readonly ctx: RequestContext,
    readonly lane: string | undefined,
    readonly stress: boolean,
    readonly method: string,
    readonly startedAt: number,
    readonly admission: Admission | Promise<Admission>,
    readonly span: Span | undefined,
  ) {}
}

/**
 * What the four adapters share: context building, admission, the delay wheel and the metrics, so each
 * adapter is only the framework's plumbing. One runtime per middleware instance; pipelines are not cheap.
 */
export class InboundRuntime {
  readonly pipeline: InboundPipeline;
  readonly metrics: InboundMetrics | undefined;
  readonly wheel: TimerWheel;
  readonly service: string;
  private readonly clock: Clock;
  private readonly options: PlinthOptions;
  private readonly tracing: Tracing | undefined;
  /** The server span's clock reads the same time as `clock`: one reading serves both, at start and at end. */
  private readonly oneClock: boolean;
  private traffic: CompiledTraffic | undefined;
  private contextOptions: ContextOptions | undefined;

  constructor(o: PlinthOptions) {
    this.options = o;
    this.service = o.service;
    this.clock = o.clock ?? monotonicClock;
    this.wheel = o.wheel ?? sharedWheel;
    this.metrics = o.metrics;
    this.tracing = o.tracing;
    this.oneClock = o.tracing !== undefined && this.clock === monotonicClock && o.tracing.provider.now === nowMs;
    this.pipeline = new InboundPipeline(o);
  }

  /**
   * Builds the context and asks the pipeline. `url` may carry a query string; it is cut off here. `userId`:
   * the end user an edge verified (their token), set as `user.id` in the baggage before lanes are entered.
   */
  start(method: string, url: string, headers: IncomingHttpHeaders, ip: string | undefined, identity: string | undefined, userId?: string): Call {
    const startedAt = this.clock.now();
    const path = pathOf(url);
    const traceparent = headerValue(headers, Headers.traceparent);
    const ctx = inboundContext(method, path, headers, identity, this.ctxOptions(), traceparent, userId);
    const lane = getLane(ctx.baggage);
    const stress = isStress(ctx.baggage);
    let span: Span | undefined;
    const tracing = this.tracing;
    if (tracing !== undefined) {
      // Parsed once, for the span and the context both. The route template is known only once the
      // framework routed; the span is renamed when it ends.
      const parent = parseTraceparent(traceparent);
      span = beginServerSpan(tracing, method, OTHER_ROUTE, parent, lane, stress, ctx.caller, this.oneClock ? startedAt : undefined);
      ctx.follow(span, parent);
    }
    this.metrics?.begin(this.service);
    const pipeline = this.pipeline;
    const admission = pipeline.admitUngoverned() ?? pipeline.admit({ method, path, headers, ip, identity, caller: ctx.caller, lane, stress });
    return new Call(this, ctx, lane, stress, method, startedAt, admission, span);
  }

  /**
   * Whether an inbound rule or fault applies now. When none does, adapters need not read what only rules
   * look at (the client address: a getter and a native call per request on node's sockets).
   */
  get governed(): boolean {
    return this.pipeline.admitUngoverned() === undefined;
  }

  /**
   * Whether `finish` has anything to do for `s`: not when it was admitted with nothing held, with no
   * metrics and no span (an adapter may then skip watching for the response's end).
   */
  needsFinish(s: Started): boolean {
    return s.admission !== ADMIT || this.metrics !== undefined || s.span !== undefined;
  }

  /** Whether `finish` will use the route template (for metrics or a recorded span's name). */
  wantsRoute(s: Started): boolean {
    return this.metrics !== undefined || s.span?.isRecording() === true;
  }

  /** Runs the handler (or the rest of a framework's chain) in the request's context and span. */
  run<T>(s: Started, fn: () => T): T {
    const span = s.span;
    return span === undefined ? runWithContext(s.ctx, fn) : runInServerSpan(s.ctx, span, fn);
  }

  /** Records the end of a request; `status` 0 = the client left before a response was sent. */
  finish(s: Started, route: string | undefined, status: number, error?: unknown): void {
    let now: number | undefined;
    const metrics = this.metrics;
    if (metrics !== undefined) {
      now = this.clock.now();
      metrics.end(this.service, s.method, route, status, s.lane, s.stress, (now - s.startedAt) / 1000);
    }
    const span = s.span;
    if (span !== undefined) {
      if (route !== undefined && route !== OTHER_ROUTE && span.isRecording()) {
        span.updateName(serverSpanName(s.method, route));
        span.setAttribute('http.route', route);
      }
      // Only Plinth's own spans share the clock; an app's OpenTelemetry SDK keeps its own time.
      endServerSpan(span, status === 0 ? 499 : status, error, this.oneClock && span instanceof PlinthSpan ? now : undefined);
    }
  }

  close(): void {
    this.pipeline.close();
  }

  /** Rebuilt only when the TrafficPolicies compile changes, so a request allocates no options object. */
  private ctxOptions(): ContextOptions {
    const traffic = compiledTrafficOf(this.options.governance);
    if (traffic !== this.traffic || this.contextOptions === undefined) {
      this.traffic = traffic;
      const o: ContextOptions = { trust: this.options.trust ?? 'mesh', traffic, clock: this.clock };
      if (this.options.random !== undefined) o.random = this.options.random;
      this.contextOptions = o;
    }
    return this.contextOptions;
  }
}

/** Headers of a refusal, content type included, for frameworks that take them in one object. */
export function rejectionHeaders(r: Rejection): Record<string, string> {
  return { ...r.headers, 'content-type': r.contentType };
}

/** Whether an admission is still pending (a global quota or a queue), without `instanceof` on every call. */
export function isPending(a: Admission | Promise<Admission>): a is Promise<Admission> {
  return typeof (a as { then?: unknown }).then === 'function';
}
