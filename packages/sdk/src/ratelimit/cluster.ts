import type { Redis } from 'ioredis';
import { monotonicClock, type Clock } from './clock.js';
import { TokenBucket } from './token-bucket.js';

/** What a quota answers while Redis is down or slow (the rule's `cluster.fallback`). */
export type ClusterFallback = 'local' | 'allow' | 'reject';

export interface ClusterQuotaOptions {
  /** An ioredis client owned by the caller (this class never connects or quits it). */
  redis: Redis;
  /** Full Redis key, e.g. `plinth:quota:retail:orders:rule-name`. */
  key: string;
  /** Permits per second, cluster-wide. */
  rate: number;
  /** Permits that may pass at once after a quiet period; default `rate`. */
  burst?: number;
  /** Default 20: a slower answer counts as a Redis failure. */
  redisTimeoutMs?: number;
  /** Default `local`. */
  fallback?: ClusterFallback;
  /** Live instance count; the `local` fallback admits `rate / localShare()` per instance. Default 1. */
  localShare?: () => number;
  /** Told of each Redis error (not of timeouts: a slow answer is not an error, see `degraded`). */
  onError?: (err: unknown) => void;
  clock?: Clock;
}

export interface QuotaDecision {
  allowed: boolean;
  /** Ms until a retry could pass (0 when allowed); `Infinity` when it never can (permits above the burst). */
  retryAfterMs: number;
  /** Permits that would still pass right now. */
  remaining: number;
  /** Who decided: Redis, or the fallback in force while Redis is degraded. */
  source: 'redis' | 'local' | 'allow' | 'reject';
}

/**
 * GCRA (the generic cell rate algorithm, a token bucket stored as one timestamp) in one script, on the
 * server's own clock (`TIME`), so the hosts' clocks never matter. The key holds the theoretical arrival time
 * (TAT) in µs and expires when the TAT is reached, i.e. exactly when it would mean "bucket full" again: idle
 * quotas vanish by themselves.
 *
 * KEYS[1] the quota; ARGV[1] emission interval (1/rate), ARGV[2] burst tolerance (burst · interval),
 * ARGV[3] this request's cost (permits · interval), all in µs. Returns { allowed 0|1, remaining, retry µs }.
 * A refusal writes nothing.
 */
const GCRA_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + cost
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', math.ceil(new_tat)), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), 0}
`;

/** The command's name on the caller's client; versioned so a changed script never collides with an old one. */
const COMMAND = 'plinthGcraV1';

type GcraClient = Record<typeof COMMAND, (key: string, interval: number, tolerance: number, cost: number) => Promise<unknown>>;

/** While degraded, Redis is asked again (one probe request) at most this often. */
export const PROBE_INTERVAL_MS = 1000;

interface Pending {
  readonly startedAt: number;
  readonly permits: number;
  readonly probe: boolean;
  readonly resolve: (d: QuotaDecision) => void;
  settled: boolean;
}

/**
 * A cluster-wide quota in Redis: every instance spends from one GCRA bucket, so N instances admit `rate`
 * together, not N · rate.
 *
 * Redis must answer within `redisTimeoutMs`, or the request gets the fallback decision. That timeout sets
 * no timer per call (a timer per call costs ~10 µs and a heap entry each, at the rate the service is
 * called): pending calls sit in one insertion-ordered set and a single unref'd interval, running only while
 * some call is pending, resolves those older than the timeout. A call is therefore answered between
 * `redisTimeoutMs` and `1.25 · redisTimeoutMs` (plus event-loop lag) when Redis stays silent. Redis' late
 * answer is ignored (its permit stays spent in Redis: erring towards fewer admissions).
 *
 * A failure or timeout marks the quota `degraded`, and then Redis is not asked at all (no pile-up of calls
 * against a sick server) except for one probe request at most every PROBE_INTERVAL_MS; any timely answer
 * makes Redis the source again.
 */
export class ClusterQuota {
  readonly key: string;
  readonly rate: number;
  readonly burst: number;
  readonly redisTimeoutMs: number;
  readonly fallback: ClusterFallback;
  private readonly redis: GcraClient;
  private readonly clock: Clock;
  private readonly localShare: () => number;
  private readonly onError: ((err: unknown) => void) | undefined;
  private readonly intervalUs: number;
  private readonly toleranceUs: number;

  private readonly pending = new Set<Pending>();
  private sweeper: ReturnType<typeof setInterval> | undefined;
  private down = false;
  private probing = false;
  private nextProbeAt = 0;
  private local: TokenBucket | undefined;
  private localFor = 0;

  constructor(opts: ClusterQuotaOptions) {
    if (!(opts.rate > 0 && opts.rate < Infinity)) throw new RangeError(`rate must be a positive finite number, got ${opts.rate}`);
    const burst = opts.burst ?? opts.rate;
    if (!(burst >= 1 && burst < Infinity)) throw new RangeError(`burst must be a finite number >= 1, got ${burst}`);
    const timeout = opts.redisTimeoutMs ?? 20;
    if (!(timeout > 0 && timeout < Infinity)) throw new RangeError(`redisTimeoutMs must be > 0, got ${timeout}`);
    if (opts.key === '') throw new RangeError('key must not be empty');
    this.key = opts.key;
    this.rate = opts.rate;
    this.burst = burst;
    this.redisTimeoutMs = timeout;
    this.fallback = opts.fallback ?? 'local';
    this.clock = opts.clock ?? monotonicClock;
    this.localShare = opts.localShare ?? (() => 1);
    this.onError = opts.onError;
    this.intervalUs = 1e6 / this.rate;
    this.toleranceUs = this.burst * this.intervalUs;
    // ioredis' scripted command sends EVAL once per connection, then EVALSHA, and EVAL again on NOSCRIPT
    // (a restarted or flushed server). Defined once per client; every quota on it shares the script.
    if (typeof (opts.redis as unknown as Partial<GcraClient>)[COMMAND] !== 'function') {
      opts.redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: GCRA_LUA });
    }
    this.redis = opts.redis as unknown as GcraClient;
  }

  /** True while Redis is considered down or slow, i.e. while the fallback decides. */
  get degraded(): boolean {
    return this.down;
  }

  /** Spend `permits` from the cluster-wide quota. Never rejects for Redis' sake: Redis trouble = fallback. */
  acquire(permits = 1): Promise<QuotaDecision> {
    if (!(permits > 0 && permits < Infinity)) {
      return Promise.reject(new RangeError(`permits must be a positive finite number, got ${permits}`));
    }
    const now = this.clock.now();
    let probe = false;
    if (this.down) {
      if (this.probing || now < this.nextProbeAt) return Promise.resolve(this.fallbackDecision(permits, now));
      probe = true;
      this.probing = true;
      this.nextProbeAt = now + PROBE_INTERVAL_MS;
    }
    return new Promise<QuotaDecision>((resolve) => {
      const p: Pending = { startedAt: now, permits, probe, resolve, settled: false };
      this.pending.add(p);
      if (this.sweeper === undefined) {
        this.sweeper = setInterval(this.sweep, Math.max(1, Math.floor(this.redisTimeoutMs / 4)));
        this.sweeper.unref();
      }
      let call: Promise<unknown>;
      try {
        call = this.redis[COMMAND](this.key, this.intervalUs, this.toleranceUs, permits * this.intervalUs);
      } catch (err) {
        call = Promise.reject(err);
      }
      call.then(
        (reply) => this.answered(p, reply),
        (err: unknown) => this.failed(p, err),
      );
    });
  }

  private answered(p: Pending, reply: unknown): void {
    if (p.settled) return; // too late: already answered by the fallback
    if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number' || typeof reply[2] !== 'number') {
      this.failed(p, new TypeError(`unexpected reply from the quota script: ${JSON.stringify(reply)}`));
      return;
    }
    this.settle(p);
    this.down = false;
    if (p.probe) this.probing = false;
    const allowed = reply[0] === 1;
    p.resolve({
      allowed,
      retryAfterMs: allowed ? 0 : p.permits > this.burst ? Infinity : Math.ceil(reply[2] / 1000),
      remaining: reply[1],
      source: 'redis',
    });
  }

  private failed(p: Pending, err: unknown): void {
    if (p.settled) return;
    this.settle(p);
    const now = this.clock.now();
    this.markDown(p, now);
    if (this.onError !== undefined) {
      try {
        this.onError(err);
      } catch {
        // a failing error hook must not cost the caller its decision
      }
    }
    p.resolve(this.fallbackDecision(p.permits, now));
  }

  /** Answer calls Redis has not answered in time with the fallback; stop when nothing is pending. */
  private readonly sweep = (): void => {
    const now = this.clock.now();
    const startedBy = now - this.redisTimeoutMs;
    // Insertion order is start order, so the first call that is not overdue ends the scan.
    for (const p of this.pending) {
      if (p.startedAt > startedBy) break;
      this.settle(p);
      this.markDown(p, now);
      p.resolve(this.fallbackDecision(p.permits, now));
    }
    if (this.pending.size === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  };

  private settle(p: Pending): void {
    p.settled = true;
    this.pending.delete(p);
  }

  private markDown(p: Pending, now: number): void {
    // A failed probe waits a full interval from its failure; calls sent before the trouble began do not
    // postpone the next probe.
    if (!this.down || p.probe) this.nextProbeAt = now + PROBE_INTERVAL_MS;
    if (p.probe) this.probing = false;
    this.down = true;
  }

  private fallbackDecision(permits: number, now: number): QuotaDecision {
    switch (this.fallback) {
      case 'allow':
        // Nothing is known about the cluster's spending: report the quota as untouched.
        return { allowed: true, retryAfterMs: 0, remaining: Math.max(0, Math.floor(this.burst - permits)), source: 'allow' };
      case 'reject':
        return { allowed: false, retryAfterMs: Math.max(1, this.nextProbeAt - now), remaining: 0, source: 'reject' };
      case 'local': {
        const bucket = this.localBucket();
        const allowed = bucket.tryAcquire(permits) === 0;
        return { allowed, retryAfterMs: allowed ? 0 : bucket.retryAfterMs(permits), remaining: bucket.remaining(), source: 'local' };
      }
    }
  }

  /** This instance's share of the quota, rebuilt when the live instance count changes. */
  private localBucket(): TokenBucket {
    let share = 1;
    try {
      const n = this.localShare();
      if (n >= 1 && n < Infinity) share = n;
    } catch {
      // an unknown instance count is treated as one instance: over-admits rather than failing the call
    }
    if (this.local === undefined || share !== this.localFor) {
      this.local = new TokenBucket({ rate: this.rate / share, burst: Math.max(1, this.burst / share) }, this.clock);
      this.localFor = share;
    }
    return this.local;
  }
}
