import type { RetryStrategy } from '@plinth/core';
import { fullJitterDelay } from '../backoff.js';
import { monotonicClock, type Clock } from '../ratelimit/clock.js';
import { statusClassifier } from './breaker.js';
import { BucketedCounters } from './window.js';

export interface RetryOptions {
  /** Total tries, the first included. Default 3. */
  maxAttempts?: number;
  /** Ceiling of the first backoff. Default 25. */
  backoffBaseMs?: number;
  /** Largest backoff ceiling. Default 1000. */
  backoffCapMs?: number;
  /** Statuses worth retrying: codes or classes such as '5xx'. Default [502, 503, 504]. */
  retryOn?: readonly (number | string)[];
  /**
   * Longest Retry-After worth waiting for. Default 30000. A server asking for more gets its answer passed
   * back to the caller instead of parking the call (and its caller's connection) for minutes.
   */
  maxRetryAfterMs?: number;
}

export const RETRY_DEFAULTS = {
  maxAttempts: 3,
  backoffBaseMs: 25,
  backoffCapMs: 1000,
  retryOn: [502, 503, 504],
  maxRetryAfterMs: 30_000,
} as const;

/** The retry options of a validated FaultTolerance `retry` strategy; its budget fields: `retryBudgetOptionsOf`. */
export function retryOptionsOf(s: RetryStrategy): RetryOptions {
  return { maxAttempts: s.maxAttempts, backoffBaseMs: s.backoffBaseMs, backoffCapMs: s.backoffCapMs, retryOn: s.retryOn };
}

export function retryBudgetOptionsOf(s: RetryStrategy): RetryBudgetOptions {
  return { budgetPercent: s.budgetPercent, minRetriesPerSecond: s.minRetriesPerSecond };
}

export interface RetryBudgetOptions {
  /** Retries allowed as a percentage of the first tries seen in the window. Default 20. */
  budgetPercent?: number;
  /** A floor so low-traffic callers can still retry. Default 10. */
  minRetriesPerSecond?: number;
  /** Default 10000. */
  windowMs?: number;
}

export const RETRY_BUDGET_DEFAULTS = { budgetPercent: 20, minRetriesPerSecond: 10, windowMs: 10_000 } as const;

const REQUESTS = 0;
const RETRIES = 1;
const BUDGET_BUCKETS = 10;

/**
 * A retry budget (Finagle's RetryBudget, Envoy's retry_budget): over the sliding window, retries stay at
 * most `budgetPercent`% of the first tries plus `minRetriesPerSecond × window seconds`. Retries never earn
 * budget themselves, so however many tries each call may make, a callee that is down sees at most
 * (1 + budgetPercent/100) × the offered load plus the floor, instead of maxAttempts ×.
 *
 * Share one per upstream service (like the breaker); two counters in buckets, nothing allocated per call.
 */
export class RetryBudget {
  readonly budgetPercent: number;
  readonly minRetriesPerSecond: number;
  readonly windowMs: number;
  /** The floor over one window, in retries × 100 (the unit `tryRetry` compares in). */
  private readonly floor100: number;
  private readonly c: BucketedCounters;

  constructor(
    opts: RetryBudgetOptions = {},
    private readonly clock: Clock = monotonicClock,
  ) {
    this.budgetPercent = opts.budgetPercent ?? RETRY_BUDGET_DEFAULTS.budgetPercent;
    this.minRetriesPerSecond = opts.minRetriesPerSecond ?? RETRY_BUDGET_DEFAULTS.minRetriesPerSecond;
    this.windowMs = opts.windowMs ?? RETRY_BUDGET_DEFAULTS.windowMs;
    if (!(this.budgetPercent >= 0) || !Number.isFinite(this.budgetPercent)) throw new RangeError(`budgetPercent must be >= 0, got ${this.budgetPercent}`);
    if (!(this.minRetriesPerSecond >= 0) || !Number.isFinite(this.minRetriesPerSecond)) {
      throw new RangeError(`minRetriesPerSecond must be >= 0, got ${this.minRetriesPerSecond}`);
    }
    if (!(this.windowMs > 0) || !Number.isFinite(this.windowMs)) throw new RangeError(`windowMs must be > 0, got ${this.windowMs}`);
    this.floor100 = this.minRetriesPerSecond * (this.windowMs / 1000) * 100;
    this.c = new BucketedCounters(this.windowMs, BUDGET_BUCKETS, 2);
  }

  /** Counts a first try (never a retry). `now`: the budget's clock as the caller just read it, if it did. */
  onRequest(now: number = this.clock.now()): void {
    this.c.roll(now);
    this.c.add(REQUESTS);
  }

  /** Withdraws one retry when the budget allows it; false means do not retry. */
  tryRetry(now: number = this.clock.now()): boolean {
    const c = this.c;
    c.roll(now);
    // (retries + 1) <= percent% × requests + floor, kept in integers × 100 so 20% of 5 is exactly 1.
    if ((c.sum(RETRIES) + 1) * 100 > this.budgetPercent * c.sum(REQUESTS) + this.floor100) return false;
    c.add(RETRIES);
    return true;
  }

  /** Retries the budget would grant right now (for metrics and tests). */
  get available(): number {
    const c = this.c;
    c.roll(this.clock.now());
    return Math.max(0, Math.floor((this.budgetPercent * c.sum(REQUESTS) + this.floor100) / 100 - c.sum(RETRIES)));
  }
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/**
 * When and how long to wait before trying again. Stateless per call: the caller counts its attempts, so
 * one policy serves every call of a rule.
 */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly backoffBaseMs: number;
  readonly backoffCapMs: number;
  readonly maxRetryAfterMs: number;
  private readonly retryable: (status: number) => boolean;

  constructor(
    opts: RetryOptions,
    private readonly budget?: RetryBudget,
    private readonly random: () => number = Math.random,
  ) {
    this.maxAttempts = opts.maxAttempts ?? RETRY_DEFAULTS.maxAttempts;
    this.backoffBaseMs = opts.backoffBaseMs ?? RETRY_DEFAULTS.backoffBaseMs;
    this.backoffCapMs = opts.backoffCapMs ?? RETRY_DEFAULTS.backoffCapMs;
    this.maxRetryAfterMs = opts.maxRetryAfterMs ?? RETRY_DEFAULTS.maxRetryAfterMs;
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1) throw new RangeError(`maxAttempts must be an integer >= 1, got ${this.maxAttempts}`);
    if (!(this.backoffBaseMs > 0) || !Number.isFinite(this.backoffBaseMs)) throw new RangeError(`backoffBaseMs must be > 0, got ${this.backoffBaseMs}`);
    if (!(this.backoffCapMs >= this.backoffBaseMs) || !Number.isFinite(this.backoffCapMs)) {
      throw new RangeError(`backoffCapMs must be >= backoffBaseMs (${this.backoffBaseMs}), got ${this.backoffCapMs}`);
    }
    if (!(this.maxRetryAfterMs >= 0)) throw new RangeError(`maxRetryAfterMs must be >= 0, got ${this.maxRetryAfterMs}`);
    this.retryable = statusClassifier(opts.retryOn ?? RETRY_DEFAULTS.retryOn);
  }

  /** RFC 9110 §9.2.2 idempotent methods, or any request the caller made safe to repeat with an Idempotency-Key. */
  static isIdempotent(method: string, hasIdempotencyKey: boolean): boolean {
    if (hasIdempotencyKey) return true;
    // The usual upper-case spellings by compare, before hashing for the Set (this runs on every call).
    switch (method) {
      case 'GET':
      case 'HEAD':
      case 'PUT':
      case 'DELETE':
      case 'OPTIONS':
      case 'TRACE':
        return true;
      case 'POST':
      case 'PATCH':
        return false;
    }
    return IDEMPOTENT.has(method.toUpperCase());
  }

  retryableStatus(status: number): boolean {
    return this.retryable(status);
  }

  /**
   * `attempt` = tries already made (1 after the first). The delay before the next try, or -1 when not to
   * retry: attempts exhausted, the Retry-After is longer than maxRetryAfterMs, the delay would not leave
   * time for the try within `remainingMs`, or the budget refused. The budget is asked last, so a retry
   * that would not happen anyway spends nothing. `now` (optional) is the budget's clock as just read.
   *
   * Full jitter: the n-th retry waits random(0, min(cap, base × 2^(n-1))). A Retry-After is a floor: the
   * server said when it can take the call again, and retrying sooner only earns another refusal.
   */
  nextDelay(attempt: number, retryAfterMs: number | undefined, remainingMs: number, now?: number): number {
    if (!(attempt >= 1) || attempt >= this.maxAttempts) return -1;
    let delay = fullJitterDelay(attempt - 1, this.backoffBaseMs, this.backoffCapMs, this.random);
    if (retryAfterMs !== undefined && retryAfterMs > delay) {
      if (retryAfterMs > this.maxRetryAfterMs) return -1;
      delay = Math.ceil(retryAfterMs);
    }
    if (!(delay < remainingMs)) return -1;
    if (this.budget !== undefined && !this.budget.tryRetry(now)) return -1;
    return delay;
  }
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = '(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)';
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';
// RFC 9110 §5.6.7: senders use IMF-fixdate; recipients must also accept RFC 850 and asctime dates.
const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`);
const RFC850 = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`);
const ASCTIME = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ${MONTH} ([ \\d]\\d) ${TIME} (\\d{4})$`);
const DELTA_SECONDS = /^\d+$/;

/**
 * Retry-After (RFC 9110 §10.2.3): delta-seconds or an HTTP-date, as ms from `nowEpochMs` (wall clock, as
 * the date is). A date in the past is 0. Undefined when absent or malformed; `Date.parse` is not used
 * because it accepts nearly anything ("1", "2024") and reads asctime dates in local time.
 */
export function parseRetryAfter(value: string | undefined, nowEpochMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (DELTA_SECONDS.test(v)) return Math.min(Number(v) * 1000, Number.MAX_SAFE_INTEGER);
  const at = parseHttpDate(v, nowEpochMs);
  return at === undefined ? undefined : Math.max(0, at - nowEpochMs);
}

function parseHttpDate(v: string, nowEpochMs: number): number | undefined {
  let m = IMF_FIXDATE.exec(v);
  if (m) return utc(Number(m[3]), m[2]!, Number(m[1]), m[4]!, m[5]!, m[6]!);
  m = RFC850.exec(v);
  if (m) {
    // A two-digit year more than 50 years ahead means the most recent past year with those digits.
    const nowYear = new Date(nowEpochMs).getUTCFullYear();
    let year = Math.floor(nowYear / 100) * 100 + Number(m[3]);
    if (year > nowYear + 50) year -= 100;
    return utc(year, m[2]!, Number(m[1]), m[4]!, m[5]!, m[6]!);
  }
  m = ASCTIME.exec(v);
  if (m) return utc(Number(m[6]), m[1]!, Number(m[2]!.trim()), m[3]!, m[4]!, m[5]!);
  return undefined;
}

function utc(year: number, month: string, day: number, hh: string, mm: string, ss: string): number | undefined {
  const mon = MONTHS.indexOf(month);
  const h = Number(hh);
  const min = Number(mm);
  const s = Number(ss);
  // 60 is a leap second, which Date has not: read it as :59.
  if (h > 23 || min > 59 || s > 60 || day < 1) return undefined;
  const t = Date.UTC(year, mon, day, h, min, Math.min(s, 59));
  // Rejects Feb 30 and the like, which Date.UTC would silently roll into March. The weekday is not checked
  // against the date: RFC 9110 lets recipients ignore it.
  return new Date(t).getUTCDate() === day ? t : undefined;
}
