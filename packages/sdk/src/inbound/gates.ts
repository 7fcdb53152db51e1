import type { IncomingHttpHeaders } from 'node:http';
import type { AdaptiveOverloadStrategy, ConcurrencyLimitStrategy, FallbackAction, RateLimitStrategy } from '@plinth/core';
import type { Redis } from 'ioredis';
import type { Clock } from '../ratelimit/clock.js';
import { ClusterQuota, type QuotaDecision } from '../ratelimit/cluster.js';
import { quotaHeaders, rateLimitHeaders } from '../ratelimit/headers.js';
import { KeyedLimiter } from '../ratelimit/keyed.js';
import { createRateLimiter, REJECTED, TokenBucket, type RateLimiter } from '../ratelimit/token-bucket.js';
import { Bulkhead } from '../resilience/bulkhead.js';
import type { TimerWheel } from '../resilience/timer-wheel.js';
import type { Holder, Lease } from './lease.js';
import { BbrEstimator, type OverloadSignal } from './overload.js';
import { fallbackRejection, INBOUND_STATUS, InboundCodes, problemRejection, type Rejection } from './rejection.js';

/** The request facts gates look at (a subset of InboundRequest). */
export interface GateRequest {
  readonly headers: IncomingHttpHeaders;
  readonly ip: string | undefined;
  readonly identity?: string | undefined;
}

/** What a gate needs of its rule: the name (for answers and headers) and the static fallback, if any. */
export interface RuleRef {
  readonly name: string;
  readonly fallback: FallbackAction | undefined;
}

/** A gate let the request through (possibly with a hold on the lease or a wait). */
export const PASS = 0;
export type GateResult = typeof PASS | Rejection | Promise<Rejection | undefined>;

/**
 * One inbound strategy of one rule, with its state (buckets, slots, estimates). Gates outlive compiles:
 * the pipeline keeps a gate as long as its rule keeps the strategy, so a config push resets nothing.
 */
export interface Gate {
  enter(req: GateRequest, lease: Lease, rule: RuleRef): GateResult;
  close(): void;
}

export interface GateEnv {
  readonly clock: Clock;
  readonly wheel: TimerWheel;
  readonly redis: Redis | undefined;
  /** Redis key of this rule's cluster quota (per-key quotas append the key). */
  readonly quotaKey: string;
  readonly instanceCount: () => number;
  /** The overload signal, started on first use (one shared sampler for the process). */
  readonly signal: () => OverloadSignal;
}

/** Per-caller keys are capped so a hostile header cannot make each map entry (or Redis key) kilobytes long. */
const MAX_KEY_LENGTH = 256;

function keyOf(s: RateLimitStrategy, req: GateRequest): string {
  let k: string | undefined;
  const key = s.key;
  if (key === undefined) return '';
  switch (key.source) {
    case 'header': {
      const v = req.headers[(key.header ?? '').toLowerCase()];
      k = typeof v === 'string' ? v : Array.isArray(v) ? v.join(',') : undefined;
      break;
    }
    case 'ip':
      k = req.ip;
      break;
    case 'identity':
      k = req.identity;
      break;
  }
  // Requests that lack the key share one bucket: they are one (anonymous) caller as far as the rule can tell.
  if (k === undefined) return '';
  return k.length > MAX_KEY_LENGTH ? k.slice(0, MAX_KEY_LENGTH) : k;
}

/** Permits per second and the burst of a rate rule, for one instance's `share` of it. */
function rateOf(s: RateLimitStrategy, share: number): { rate: number; burst: number } {
  const threshold = s.threshold / share;
  const seconds = s.statDurationSec ?? 1;
  return { rate: threshold / seconds, burst: Math.max(1, threshold) };
}

function localLimiter(s: RateLimitStrategy, share: number, clock: Clock): RateLimiter {
  const { rate, burst } = rateOf(s, share);
  try {
    switch (s.behavior ?? 'reject') {
      case 'warmUp':
        return createRateLimiter({ rate, behavior: 'warmUp', warmUpPeriodSec: s.warmUpPeriodSec ?? 10, coldFactor: s.coldFactor ?? 3 }, clock);
      case 'throttle':
        return createRateLimiter({ rate, behavior: 'throttle', maxQueueingTimeMs: s.maxQueueingTimeMs ?? 500 }, clock);
      default:
        return createRateLimiter({ rate, behavior: 'reject', burst }, clock);
    }
  } catch {
    // A warm-up too short to ramp at this rate (or a share too small to pace): still enforce the rate.
    return new TokenBucket({ rate, burst }, clock);
  }
}

function rateRejection(rule: RuleRef, headers: Record<string, string>): Rejection {
  if (rule.fallback !== undefined) return fallbackRejection(InboundCodes.rateLimited, rule.fallback);
  // A 429 without Retry-After invites an immediate retry; a never-refilling bucket still says "later".
  if (headers['Retry-After'] === undefined) headers['Retry-After'] = '1';
  return problemRejection(InboundCodes.rateLimited, INBOUND_STATUS.rate_limited, `rate limit of rule ${rule.name} exceeded`, headers);
}

/** Keys unused for this long lose their bucket (at least a full refill, so nothing is forgotten early). */
function idleMsOf(s: RateLimitStrategy): number {
  return Math.max(60_000, (s.statDurationSec ?? 1) * 2000);
}

/** rateLimit counted in this instance: local, globalToLocal, and global without Redis. */
export class LocalRateGate implements Gate {
  private readonly single: RateLimiter | undefined;
  private readonly keyed: KeyedLimiter<RateLimiter> | undefined;

  constructor(private readonly s: RateLimitStrategy, share: number, clock: Clock) {
    if (s.key === undefined) this.single = localLimiter(s, share, clock);
    else this.keyed = new KeyedLimiter({ create: () => localLimiter(s, share, clock), idleMs: idleMsOf(s) }, clock);
  }

  enter(req: GateRequest, lease: Lease, rule: RuleRef): GateResult {
    const limiter = this.single ?? this.keyed!.get(keyOf(this.s, req));
    const wait = limiter.tryAcquire();
    if (wait === 0) return PASS;
    if (wait === REJECTED) return rateRejection(rule, rateLimitHeaders(limiter, rule.name));
    lease.waitAtLeast(wait);
    return PASS;
  }

  close(): void {}
}

/** rateLimit with limitMode global and a Redis client: one GCRA quota for the cluster (per key with `key`). */
export class ClusterRateGate implements Gate {
  private readonly single: ClusterQuota | undefined;
  private readonly keyed: KeyedLimiter<ClusterQuota> | undefined;
  private readonly windowSeconds: number;

  constructor(private readonly s: RateLimitStrategy, env: GateEnv) {
    const { rate, burst } = rateOf(s, 1);
    this.windowSeconds = burst / rate;
    const redis = env.redis!;
    const make = (key: string) =>
      new ClusterQuota({
        redis,
        key,
        rate,
        burst,
        redisTimeoutMs: s.cluster?.redisTimeoutMs ?? 20,
        fallback: s.cluster?.fallback ?? 'local',
        localShare: env.instanceCount,
        clock: env.clock,
      });
    if (s.key === undefined) this.single = make(env.quotaKey);
    else this.keyed = new KeyedLimiter({ create: (k) => make(`${env.quotaKey}:${k}`), idleMs: idleMsOf(s) }, env.clock);
  }

  enter(req: GateRequest, _lease: Lease, rule: RuleRef): GateResult {
    const quota = this.single ?? this.keyed!.get(keyOf(this.s, req));
    return quota.acquire().then(
      (d) => (d.allowed ? undefined : rateRejection(rule, this.headers(d, quota, rule))),
      // ClusterQuota answers Redis trouble with its fallback; a throw here is a bug, and fails open.
      () => undefined,
    );
  }

  private headers(d: QuotaDecision, quota: ClusterQuota, rule: RuleRef): Record<string, string> {
    try {
      return quotaHeaders(d, quota.burst, this.windowSeconds, rule.name);
    } catch {
      return {};
    }
  }

  close(): void {}
}

/** concurrencyLimit, side inbound: a bulkhead over handling, with the strategy's queue. */
export class ConcurrencyGate implements Gate, Holder {
  private readonly bulkhead: Bulkhead;
  private maxQueue: number;
  private rejection: Rejection | undefined;
  private rejectionFor: RuleRef | undefined;

  constructor(s: ConcurrencyLimitStrategy, wheel: TimerWheel) {
    this.maxQueue = s.maxQueue ?? 0;
    this.bulkhead = new Bulkhead({ maxConcurrency: s.maxConcurrency, maxQueue: s.maxQueue ?? 0, queueTimeoutMs: s.queueTimeoutMs ?? 1000 }, wheel);
  }

  get inFlight(): number {
    return this.bulkhead.inFlight;
  }

  reconfigure(s: ConcurrencyLimitStrategy): void {
    this.maxQueue = s.maxQueue ?? 0;
    this.bulkhead.reconfigure({ maxConcurrency: s.maxConcurrency, maxQueue: s.maxQueue ?? 0, queueTimeoutMs: s.queueTimeoutMs ?? 1000 });
  }

  enter(_req: GateRequest, lease: Lease, rule: RuleRef): GateResult {
    if (this.bulkhead.tryAcquire()) {
      lease.hold(this);
      return PASS;
    }
    // Refusals without a queue (or with a full one) stay synchronous; only a real wait is a promise.
    if (this.bulkhead.queued >= this.maxQueue) return this.refusal(rule);
    const got = this.bulkhead.acquire();
    if (got === true) {
      lease.hold(this);
      return PASS;
    }
    return got.then((ok) => {
      if (!ok) return this.refusal(rule);
      lease.hold(this);
      return undefined;
    });
  }

  exit(): void {
    this.bulkhead.release();
  }

  /** The answer is the same for every refusal of a rule: built once per rule object. */
  private refusal(rule: RuleRef): Rejection {
    if (this.rejection === undefined || this.rejectionFor !== rule) {
      this.rejectionFor = rule;
      this.rejection =
        rule.fallback !== undefined
          ? fallbackRejection(InboundCodes.concurrencyLimited, rule.fallback)
          : problemRejection(InboundCodes.concurrencyLimited, INBOUND_STATUS.concurrency_limited, `concurrency limit of rule ${rule.name} reached`);
    }
    return this.rejection;
  }

  close(): void {}
}

/** adaptiveOverload: shed when the load metric is above the threshold (and, with bbr, in-flight exceeds capacity). */
export class AdaptiveGate implements Gate, Holder {
  private readonly estimator: BbrEstimator;
  private s: AdaptiveOverloadStrategy;
  private signal: OverloadSignal | undefined;
  private rejection: Rejection | undefined;
  private rejectionFor: RuleRef | undefined;

  constructor(s: AdaptiveOverloadStrategy, private readonly env: GateEnv) {
    this.s = s;
    this.estimator = new BbrEstimator(env.clock);
  }

  /** A changed threshold or metric keeps the capacity estimate: it describes the instance, not the rule. */
  reconfigure(s: AdaptiveOverloadStrategy): void {
    this.s = s;
  }

  get inFlight(): number {
    return this.estimator.inFlight;
  }

  enter(_req: GateRequest, lease: Lease, rule: RuleRef): GateResult {
    const signal = (this.signal ??= this.env.signal());
    const value = this.s.metricType === 'cpuPercentage' ? signal.cpuPercent : signal.eventLoopDelayMs;
    const over = value > this.s.triggerThreshold;
    if (this.s.adaptiveStrategy === 'none') return over ? this.refusal(rule) : PASS;
    if (!this.estimator.tryEnter(over)) return this.refusal(rule);
    lease.hold(this);
    return PASS;
  }

  exit(startedAt: number, completed: boolean): void {
    if (completed) this.estimator.exit(startedAt);
    else this.estimator.abandon();
  }

  private refusal(rule: RuleRef): Rejection {
    if (this.rejection === undefined || this.rejectionFor !== rule) {
      this.rejectionFor = rule;
      this.rejection =
        rule.fallback !== undefined
          ? fallbackRejection(InboundCodes.overloaded, rule.fallback)
          : problemRejection(InboundCodes.overloaded, INBOUND_STATUS.overloaded, `instance overloaded (rule ${rule.name})`);
    }
    return this.rejection;
  }

  close(): void {}
}
