import { monotonicClock, type Clock } from './clock.js';

/** `tryAcquire` answer for a refused request. Any other answer is a wait in ms (0 = go now). */
export const REJECTED = -1;

/**
 * One local rate limiter. `tryAcquire` is the hot path: a clock read and a few float operations, no
 * allocation, no timer. It answers a number rather than an object for that reason: `REJECTED`, or how many
 * milliseconds the caller must wait before proceeding (only the `throttle` behaviour ever answers > 0;
 * the caller schedules the wait on its own shared timer instead of the limiter sleeping).
 *
 * The other methods feed the 429 answer and the RateLimit headers; they are read on the cold path.
 */
export interface RateLimiter {
  readonly behavior: ControlBehavior;
  /** Permits per second in steady state. */
  readonly rate: number;
  /** The quota advertised in `RateLimit-Policy` (`q`) and the window it refills over (`w`, seconds). */
  readonly quota: number;
  readonly windowSeconds: number;
  tryAcquire(permits?: number): number;
  /** Ms until `permits` would be admitted (0 if now); `Infinity` if never (more than the bucket holds). */
  retryAfterMs(permits?: number): number;
  /** Permits that would be admitted right now (throttle: including those given a wait); RateLimit `r`. */
  remaining(): number;
  /** Ms until the limiter is back to its full quota (RateLimit `t`). */
  resetMs(): number;
}

/**
 * The governance `behavior` of a `rateLimit` strategy (docs/governance.md), i.e. Sentinel's `controlBehavior`:
 * reject (0, default), warm up (1), rate limiter / throttle (2, queueing).
 */
export type ControlBehavior = 'reject' | 'warmUp' | 'throttle';

export interface RateLimitRule {
  /** Permits per second (Sentinel's `count` with grade QPS). */
  rate: number;
  behavior?: ControlBehavior;
  /**
   * reject: bucket capacity; defaults to `rate` (one second of traffic may arrive at once), but at least 1, or
   * a rate under 1/s would build a bucket that can never hold a whole permit.
   */
  burst?: number;
  /** warm-up: seconds to ramp from `rate / coldFactor` to `rate` (Sentinel's `warmUpPeriodSec`, default 10). */
  warmUpPeriodSec?: number;
  /** warm-up: how much slower a cold system starts (Sentinel's `coldFactor`, default 3, must be > 1). */
  coldFactor?: number;
  /** throttle: longest wait a request may be given before it is refused instead (default 500 ms). */
  maxQueueingTimeMs?: number;
}

export function createRateLimiter(rule: RateLimitRule, clock: Clock = monotonicClock): RateLimiter {
  switch (rule.behavior ?? 'reject') {
    case 'reject':
      return new TokenBucket({ rate: rule.rate, burst: rule.burst ?? Math.max(1, rule.rate) }, clock);
    case 'warmUp':
      return new WarmUpLimiter(
        { rate: rule.rate, warmUpPeriodSec: rule.warmUpPeriodSec ?? 10, coldFactor: rule.coldFactor ?? 3 },
        clock,
      );
    case 'throttle':
      return new PacingLimiter({ rate: rule.rate, maxQueueingTimeMs: rule.maxQueueingTimeMs ?? 500 }, clock);
  }
}

/**
 * Negative or NaN permits would mint tokens (or poison the state with NaN) instead of spending them. Checked
 * with one comparison on the hot path; the throw lives out of line.
 */
function badPermits(permits: number): RangeError {
  return new RangeError(`permits must be a number >= 0, got ${permits}`);
}

function positive(name: string, v: number): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new RangeError(`${name} must be a positive finite number, got ${v}`);
  return v;
}

/**
 * The classic token bucket (Sentinel's "reject" behaviour, but continuous instead of Sentinel's per-second
 * window count, so a burst cannot be doubled across a window edge). Holds up to `burst` tokens, refills at
 * `rate` per second, lazily on each call: no refill timer exists.
 */
export class TokenBucket implements RateLimiter {
  readonly behavior = 'reject' as const;
  readonly rate: number;
  readonly burst: number;
  private readonly perMs: number;
  private tokens: number;
  private last: number;

  constructor(opts: { rate: number; burst: number }, private readonly clock: Clock = monotonicClock) {
    this.rate = positive('rate', opts.rate);
    this.burst = positive('burst', opts.burst);
    this.perMs = this.rate / 1000;
    // A new bucket starts full: a caller seen for the first time (or whose bucket was evicted) gets its burst.
    this.tokens = this.burst;
    this.last = clock.now();
  }

  get quota(): number {
    return this.burst;
  }

  /** The time an empty bucket takes to refill, so `quota / windowSeconds` is the steady rate. */
  get windowSeconds(): number {
    return this.burst / this.rate;
  }

  private refill(): void {
    const now = this.clock.now();
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.perMs);
      this.last = now;
    }
  }

  tryAcquire(permits = 1): number {
    if (!(permits >= 0)) throw badPermits(permits);
    this.refill();
    if (this.tokens >= permits) {
      this.tokens -= permits;
      return 0;
    }
    return REJECTED;
  }

  retryAfterMs(permits = 1): number {
    if (permits > this.burst) return Infinity;
    this.refill();
    return this.tokens >= permits ? 0 : Math.ceil((permits - this.tokens) / this.perMs);
  }

  remaining(): number {
    this.refill();
    return Math.floor(this.tokens);
  }

  resetMs(): number {
    this.refill();
    return Math.ceil((this.burst - this.tokens) / this.perMs);
  }
}

/**
 * Sentinel's WarmUpController (itself Guava's SmoothWarmingUp restated as a token count): a bucket of
 * "stored tokens" that fills while the system is idle and drains as traffic passes. The fuller the bucket,
 * the colder the system and the lower the admitted QPS:
 *
 *   warningToken = ⌊warmUpPeriodSec · rate⌋ / (coldFactor − 1)
 *   maxToken     = warningToken + ⌊2 · warmUpPeriodSec · rate / (1 + coldFactor)⌋
 *   slope        = (coldFactor − 1) / rate / (maxToken − warningToken)
 *   allowed QPS  = rate                                         when stored < warningToken
 *                = 1 / ((stored − warningToken) · slope + 1/rate) above it (rate/coldFactor at maxToken)
 *
 * Once a second the bucket is synced with the previous second's passed count: it refills at `rate` when
 * below the warning line, or above it only while traffic is under `rate / coldFactor` (a nearly idle system
 * cools down again), then loses the tokens that traffic consumed. Under full load the QPS ramps from
 * rate/coldFactor to rate in `warmUpPeriodSec` (the area under Guava's interval curve is the period).
 *
 * Differences from Sentinel, on purpose: a fresh limiter starts cold (Sentinel gets the same effect because
 * its first sync sees `lastFilledTime = 0` and fills to maxToken) and the pass count is a tumbling 1 s window
 * rather than Sentinel's two 500 ms sliding buckets (single-threaded JS needs no CAS; the ramp is the same).
 */
export class WarmUpLimiter implements RateLimiter {
  readonly behavior = 'warmUp' as const;
  readonly rate: number;
  readonly coldFactor: number;
  readonly warningToken: number;
  readonly maxToken: number;
  readonly slope: number;
  private storedTokens: number;
  private lastFilledTime: number;
  private windowStart: number;
  private passed = 0;
  private previousPassed = 0;

  constructor(
    opts: { rate: number; warmUpPeriodSec: number; coldFactor: number },
    private readonly clock: Clock = monotonicClock,
  ) {
    this.rate = positive('rate', opts.rate);
    positive('warmUpPeriodSec', opts.warmUpPeriodSec);
    if (!(opts.coldFactor > 1)) throw new RangeError(`coldFactor must be > 1, got ${opts.coldFactor}`);
    this.coldFactor = opts.coldFactor;
    // Same integer truncation as Sentinel so thresholds match its dashboards exactly.
    this.warningToken = Math.trunc(Math.trunc(opts.warmUpPeriodSec * this.rate) / (this.coldFactor - 1));
    this.maxToken = this.warningToken + Math.trunc((2 * opts.warmUpPeriodSec * this.rate) / (1 + this.coldFactor));
    if (this.maxToken <= this.warningToken) {
      throw new RangeError('warm-up period too short for this rate: no token range to ramp over');
    }
    this.slope = (this.coldFactor - 1) / this.rate / (this.maxToken - this.warningToken);
    const now = clock.now();
    this.windowStart = now - (now % 1000);
    this.lastFilledTime = this.windowStart;
    this.storedTokens = this.maxToken;
  }

  get quota(): number {
    return this.rate;
  }

  get windowSeconds(): number {
    return 1;
  }

  /** The QPS admitted in the current second, from the stored tokens (what Sentinel's canPass compares to). */
  currentQps(): number {
    this.roll();
    return this.allowedQps();
  }

  private allowedQps(): number {
    if (this.storedTokens >= this.warningToken) {
      const above = this.storedTokens - this.warningToken;
      // Sentinel takes Math.nextUp so a computed 9.999999 still admits 10.
      return nextUp(1 / (above * this.slope + 1 / this.rate));
    }
    return this.rate;
  }

  /** Advance the tumbling second and, on a new second, sync the stored tokens (Sentinel's syncToken). */
  private roll(): void {
    const now = this.clock.now();
    const second = now - (now % 1000);
    if (second === this.windowStart) return;
    // The previous second's count only counts if it was the immediately preceding second.
    this.previousPassed = second - this.windowStart === 1000 ? this.passed : 0;
    this.passed = 0;
    this.windowStart = second;
    if (second <= this.lastFilledTime) return;
    const prev = this.previousPassed;
    let stored = this.storedTokens;
    const refill = Math.trunc(stored + ((second - this.lastFilledTime) * this.rate) / 1000);
    if (stored < this.warningToken) stored = refill;
    else if (stored > this.warningToken && prev < Math.trunc(Math.trunc(this.rate) / this.coldFactor)) stored = refill;
    stored = Math.min(stored, this.maxToken) - prev;
    this.storedTokens = stored < 0 ? 0 : stored;
    this.lastFilledTime = second;
  }

  tryAcquire(permits = 1): number {
    if (!(permits >= 0)) throw badPermits(permits);
    this.roll();
    if (this.passed + permits <= this.allowedQps()) {
      this.passed += permits;
      return 0;
    }
    return REJECTED;
  }

  retryAfterMs(permits = 1): number {
    this.roll();
    if (permits > this.rate) return Infinity;
    if (this.passed + permits <= this.allowedQps()) return 0;
    // The budget is per second: the next chance is the next second boundary.
    return this.windowStart + 1000 - this.clock.now();
  }

  remaining(): number {
    this.roll();
    return Math.max(0, Math.floor(this.allowedQps() - this.passed));
  }

  resetMs(): number {
    this.roll();
    return this.windowStart + 1000 - this.clock.now();
  }
}

/**
 * The next double above x (Java's Math.nextUp), for positive finite x: the bit pattern plus one. Done on two
 * 32-bit words of shared scratch, because BigInt arithmetic would allocate on every call.
 */
function nextUp(x: number): number {
  NEXT_UP_F64[0] = x;
  const lo = (NEXT_UP_U32[LO] ?? 0) + 1;
  NEXT_UP_U32[LO] = lo; // wraps to 0 on overflow, which is when the carry goes up
  if (lo > 0xffffffff) NEXT_UP_U32[HI] = (NEXT_UP_U32[HI] ?? 0) + 1;
  return NEXT_UP_F64[0] ?? x;
}
const NEXT_UP_F64 = new Float64Array(1);
const NEXT_UP_U32 = new Uint32Array(NEXT_UP_F64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const LO = LITTLE_ENDIAN ? 0 : 1;
const HI = LITTLE_ENDIAN ? 1 : 0;

/**
 * Sentinel's RateLimiterController: leaky-bucket pacing. Requests pass at a fixed interval (1000 / rate ms per
 * permit); one that arrives early is given its turn, a wait of at most `maxQueueingTimeMs`, and one whose turn
 * is further away is refused. The wait is returned, not slept: the caller defers on its shared timer (or its
 * deadline says not to bother), so the limiter holds no timers and no pending promises.
 *
 * The interval is kept as a float, unlike Sentinel's `Math.round(1000 / count)` (which paces 1500/s as 1000/s).
 */
export class PacingLimiter implements RateLimiter {
  readonly behavior = 'throttle' as const;
  readonly rate: number;
  readonly maxQueueingTimeMs: number;
  private readonly intervalMs: number;
  /** When the last admitted request's turn is (in the future while a queue exists). */
  private latestPassedTime = -Infinity;

  constructor(opts: { rate: number; maxQueueingTimeMs: number }, private readonly clock: Clock = monotonicClock) {
    this.rate = positive('rate', opts.rate);
    if (!(opts.maxQueueingTimeMs >= 0)) throw new RangeError('maxQueueingTimeMs must be >= 0');
    this.maxQueueingTimeMs = opts.maxQueueingTimeMs;
    this.intervalMs = 1000 / this.rate;
  }

  get quota(): number {
    // Requests that can be admitted at once: one now plus those that fit in the queue.
    return 1 + Math.floor(this.maxQueueingTimeMs / this.intervalMs);
  }

  get windowSeconds(): number {
    return this.quota / this.rate;
  }

  tryAcquire(permits = 1): number {
    if (!(permits >= 0)) throw badPermits(permits);
    const now = this.clock.now();
    const expected = this.latestPassedTime + permits * this.intervalMs;
    if (expected <= now) {
      this.latestPassedTime = now;
      return 0;
    }
    const wait = expected - now;
    if (wait > this.maxQueueingTimeMs) return REJECTED;
    this.latestPassedTime = expected;
    return Math.ceil(wait);
  }

  retryAfterMs(permits = 1): number {
    const wait = this.latestPassedTime + permits * this.intervalMs - this.clock.now();
    return wait <= this.maxQueueingTimeMs ? 0 : Math.ceil(wait - this.maxQueueingTimeMs);
  }

  remaining(): number {
    const now = this.clock.now();
    const start = Math.max(this.latestPassedTime, now - this.intervalMs);
    const free = Math.floor((now + this.maxQueueingTimeMs - start) / this.intervalMs);
    return Math.max(0, free);
  }

  /** The full quota is back once the last turn is one interval in the past (then a request passes at once). */
  resetMs(): number {
    return Math.max(0, Math.ceil(this.latestPassedTime + this.intervalMs - this.clock.now()));
  }
}
