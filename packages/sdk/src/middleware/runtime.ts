import type { IncomingHttpHeaders } from 'node:http';
import { getLane, isStress } from '../balancing/baggage.js';
import type { RequestContext } from '../context.js';
import { pathOf } from '../governance/match.js';
import type { CompiledTraffic } from '../governance/traffic.js';
import { monotonicClock, type Clock } from '../ratelimit/clock.js';
import { sharedWheel, type TimerWheel } from '../resilience/timer-wheel.js';
import { buildContext, compiledTrafficOf, type ContextOptions, type TrustMode } from '../inbound/context.js';
import type { InboundMetrics } from '../inbound/metrics.js';
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
}

/** One request on its way through an adapter. */
export interface Started {
  readonly ctx: RequestContext;
  readonly lane: string | undefined;
  readonly stress: boolean;
  readonly method: string;
  readonly startedAt: number;
  readonly admission: Admission | Promise<Admission>;
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
  private traffic: CompiledTraffic | undefined;
  private contextOptions: ContextOptions | undefined;

  constructor(o: PlinthOptions) {
    this.options = o;
    this.service = o.service;
    this.clock = o.clock ?? monotonicClock;
    this.wheel = o.wheel ?? sharedWheel;
    this.metrics = o.metrics;
    this.pipeline = new InboundPipeline(o);
  }

  /** Builds the context and asks the pipeline. `url` may carry a query string; it is cut off here. */
  start(method: string, url: string, headers: IncomingHttpHeaders, ip: string | undefined, identity: string | undefined): Started {
    const startedAt = this.clock.now();
    const path = pathOf(url);
    const ctx = buildContext({ method, path, headers, identity }, this.ctxOptions());
    const lane = getLane(ctx.baggage);
    const stress = isStress(ctx.baggage);
    this.metrics?.begin(this.service);
    const admission = this.pipeline.admit({ method, path, headers, ip, identity, caller: ctx.caller, lane, stress });
    return { ctx, lane, stress, method, startedAt, admission };
  }

  /** Records the end of a request; `status` 0 = the client left before a response was sent. */
  finish(s: Started, route: string | undefined, status: number): void {
    this.metrics?.end(this.service, s.method, route, status, s.lane, s.stress, (this.clock.now() - s.startedAt) / 1000);
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
