import type { CircuitBreakerStrategy } from '@plinth/core';
import { monotonicClock, type Clock } from '../ratelimit/clock.js';
import { BucketedCounters } from './window.js';

/**
 * The breaker's state. Objects are immutable and replaced on every change, so a listener or a reader may
 * keep one; the four field-less states are shared singletons. Half-open allocates a new object per probe,
 * which is bounded by `halfOpenProbes` per recovery: the closed hot path allocates nothing.
 */
export type BreakerState =
  | { readonly kind: 'closed' }
  | { readonly kind: 'open'; readonly openedAt: number; readonly halfOpenAt: number }
  | { readonly kind: 'halfOpen'; readonly probesInFlight: number; readonly probeSuccesses: number }
  | { readonly kind: 'forcedOpen' }
  | { readonly kind: 'forcedClosed' }
  | { readonly kind: 'disabled' };

export type BreakerStrategy = 'errorRatio' | 'slowRequestRatio' | 'consecutiveFailures';
export type BreakerWindow = { type: 'time'; durationMs: number } | { type: 'count'; size: number };

export interface BreakerOptions {
  strategy: BreakerStrategy;
  /** Percent (0, 100] for the ratio strategies; a whole count for consecutiveFailures. */
  threshold: number;
  /** slowRequestRatio: a call at least this slow counts as slow. */
  slowThresholdMs?: number;
  /** Default 5: fewer calls than this in the window never trip a ratio breaker. */
  minRequestAmount?: number;
  /** Default `{ type: 'time', durationMs: 10000 }`. */
  window?: BreakerWindow;
  /** Default 5000: how long the breaker stays open before letting probes through. */
  recoveryTimeoutMs?: number;
  /** Default 1: probes allowed while half-open; all must succeed to close, any failure re-opens. */
  halfOpenProbes?: number;
  /** Operator override: open (fail fast), closed (always pass, keep counting), disabled (pass, stop counting). */
  forcedState?: 'open' | 'closed' | 'disabled';
}

export const BREAKER_DEFAULTS = {
  minRequestAmount: 5,
  window: { type: 'time', durationMs: 10_000 },
  recoveryTimeoutMs: 5000,
  halfOpenProbes: 1,
} as const;

/** Buckets of a time window: 10 makes old calls leave in tenths of the window. */
const TIME_BUCKETS = 10;

const CLOSED: BreakerState = Object.freeze({ kind: 'closed' });
const FORCED_OPEN: BreakerState = Object.freeze({ kind: 'forcedOpen' });
const FORCED_CLOSED: BreakerState = Object.freeze({ kind: 'forcedClosed' });
const DISABLED: BreakerState = Object.freeze({ kind: 'disabled' });

/** The breaker options of a validated FaultTolerance `circuitBreaker` strategy (failureStatuses: see `statusClassifier`). */
export function breakerOptionsOf(s: CircuitBreakerStrategy): BreakerOptions {
  const o: BreakerOptions = {
    strategy: s.strategy,
    threshold: s.threshold,
    minRequestAmount: s.minRequestAmount,
    window: s.window.type === 'time' ? { type: 'time', durationMs: s.window.durationMs } : { type: 'count', size: s.window.size },
    recoveryTimeoutMs: s.recoveryTimeoutMs,
    halfOpenProbes: s.halfOpenProbes,
  };
  if (s.slowThresholdMs !== undefined) o.slowThresholdMs = s.slowThresholdMs;
  if (s.forcedState !== undefined) o.forcedState = s.forcedState;
  return o;
}

interface Resolved {
  readonly strategy: BreakerStrategy;
  readonly threshold: number;
  readonly slowThresholdMs: number;
  readonly minRequestAmount: number;
  readonly window: BreakerWindow;
  readonly recoveryTimeoutMs: number;
  readonly halfOpenProbes: number;
  readonly forcedState: 'open' | 'closed' | 'disabled' | undefined;
}

function resolve(o: BreakerOptions): Resolved {
  const r: Resolved = {
    strategy: o.strategy,
    threshold: o.threshold,
    // Only slowRequestRatio looks at latency (NaN fails the check below when it is missing there).
    slowThresholdMs: o.strategy === 'slowRequestRatio' ? (o.slowThresholdMs ?? NaN) : 0,
    minRequestAmount: o.minRequestAmount ?? BREAKER_DEFAULTS.minRequestAmount,
    window: o.window ?? BREAKER_DEFAULTS.window,
    recoveryTimeoutMs: o.recoveryTimeoutMs ?? BREAKER_DEFAULTS.recoveryTimeoutMs,
    halfOpenProbes: o.halfOpenProbes ?? BREAKER_DEFAULTS.halfOpenProbes,
    forcedState: o.forcedState,
  };
  if (r.strategy !== 'errorRatio' && r.strategy !== 'slowRequestRatio' && r.strategy !== 'consecutiveFailures') {
    throw new RangeError(`unknown breaker strategy ${JSON.stringify(r.strategy)}`);
  }
  if (r.strategy === 'consecutiveFailures') {
    if (!Number.isInteger(r.threshold) || r.threshold < 1) throw new RangeError(`consecutiveFailures threshold must be an integer >= 1, got ${r.threshold}`);
  } else if (!(r.threshold > 0 && r.threshold <= 100)) {
    throw new RangeError(`${r.strategy} threshold must be a percentage in (0, 100], got ${r.threshold}`);
  }
  if (!(r.slowThresholdMs >= 0)) throw new RangeError('slowRequestRatio needs slowThresholdMs >= 0');
  if (!Number.isInteger(r.minRequestAmount) || r.minRequestAmount < 1) throw new RangeError(`minRequestAmount must be an integer >= 1, got ${r.minRequestAmount}`);
  if (r.window.type === 'time') {
    if (!(r.window.durationMs > 0) || !Number.isFinite(r.window.durationMs)) throw new RangeError(`window.durationMs must be > 0, got ${r.window.durationMs}`);
  } else if (r.window.type === 'count') {
    if (!Number.isInteger(r.window.size) || r.window.size < 1) throw new RangeError(`window.size must be an integer >= 1, got ${r.window.size}`);
    if (r.strategy !== 'consecutiveFailures' && r.minRequestAmount > r.window.size) {
      throw new RangeError(`minRequestAmount ${r.minRequestAmount} exceeds window.size ${r.window.size}: the breaker could never open`);
    }
  } else {
    throw new RangeError(`unknown window type ${JSON.stringify((r.window as { type: unknown }).type)}`);
  }
  if (!(r.recoveryTimeoutMs >= 0) || !Number.isFinite(r.recoveryTimeoutMs)) throw new RangeError(`recoveryTimeoutMs must be >= 0, got ${r.recoveryTimeoutMs}`);
  if (!Number.isInteger(r.halfOpenProbes) || r.halfOpenProbes < 1) throw new RangeError(`halfOpenProbes must be an integer >= 1, got ${r.halfOpenProbes}`);
  if (r.forcedState !== undefined && r.forcedState !== 'open' && r.forcedState !== 'closed' && r.forcedState !== 'disabled') {
    throw new RangeError(`unknown forcedState ${JSON.stringify(r.forcedState)}`);
  }
  return r;
}

/** Outcomes counted over the breaker's window; the sums are as of the last `record`. */
interface OutcomeWindow {
  record(now: number, failure: boolean, slow: boolean): void;
  readonly total: number;
  readonly failures: number;
  readonly slow: number;
  /** Whether `record` needs the time: a count window does not, and a clock read is the costliest part of a call. */
  readonly timed: boolean;
  reset(): void;
}

const TOTAL = 0;
const FAILURES = 1;
const SLOW = 2;

class TimeWindow implements OutcomeWindow {
  readonly timed = true;
  private readonly c: BucketedCounters;

  constructor(durationMs: number) {
    this.c = new BucketedCounters(durationMs, TIME_BUCKETS, 3);
  }

  record(now: number, failure: boolean, slow: boolean): void {
    const c = this.c;
    c.roll(now);
    c.add(TOTAL);
    if (failure) c.add(FAILURES);
    if (slow) c.add(SLOW);
  }

  get total(): number {
    return this.c.sum(TOTAL);
  }

  get failures(): number {
    return this.c.sum(FAILURES);
  }

  get slow(): number {
    return this.c.sum(SLOW);
  }

  reset(): void {
    this.c.reset();
  }
}

const FAILED_BIT = 1;
const SLOW_BIT = 2;

/** The last `size` outcomes, as bits in a ring; running sums make the ratio O(1). */
class CountWindow implements OutcomeWindow {
  readonly timed = false;
  private readonly ring: Uint8Array;
  private pos = 0;
  private filled = 0;
  private nFailures = 0;
  private nSlow = 0;

  constructor(size: number) {
    this.ring = new Uint8Array(size);
  }

  record(_now: number, failure: boolean, slow: boolean): void {
    const ring = this.ring;
    if (this.filled === ring.length) {
      const old = ring[this.pos]!;
      if (old & FAILED_BIT) this.nFailures--;
      if (old & SLOW_BIT) this.nSlow--;
    } else {
      this.filled++;
    }
    ring[this.pos] = (failure ? FAILED_BIT : 0) | (slow ? SLOW_BIT : 0);
    if (failure) this.nFailures++;
    if (slow) this.nSlow++;
    this.pos = this.pos + 1 === ring.length ? 0 : this.pos + 1;
  }

  get total(): number {
    return this.filled;
  }

  get failures(): number {
    return this.nFailures;
  }

  get slow(): number {
    return this.nSlow;
  }

  reset(): void {
    this.pos = 0;
    this.filled = 0;
    this.nFailures = 0;
    this.nSlow = 0;
  }
}

function makeWindow(w: BreakerWindow): OutcomeWindow {
  return w.type === 'time' ? new TimeWindow(w.durationMs) : new CountWindow(w.size);
}

function sameWindow(a: BreakerWindow, b: BreakerWindow): boolean {
  return a.type === 'time' ? b.type === 'time' && a.durationMs === b.durationMs : b.type === 'count' && a.size === b.size;
}

function forcedStateOf(f: Resolved['forcedState']): BreakerState | undefined {
  return f === 'open' ? FORCED_OPEN : f === 'closed' ? FORCED_CLOSED : f === 'disabled' ? DISABLED : undefined;
}

export type BreakerListener = (from: BreakerState, to: BreakerState) => void;

/**
 * A circuit breaker for one upstream (an instance or a whole service, per the rule's `scope`). Keep one per
 * upstream in a registry, never one per request.
 *
 * Protocol: every `tryAcquire()` that returns true is followed by exactly one of `onSuccess`, `onFailure`
 * or `release`. Outcomes of calls acquired before the breaker opened are ignored while it is open (they
 * describe the past), and count as probe results in half-open only while probes are in flight.
 *
 * slowRequestRatio follows Sentinel: a call is slow when its latency is >= slowThresholdMs whatever its
 * outcome (a timeout is slow), and a slow probe re-opens the breaker like a failed one.
 */
export class CircuitBreaker {
  private o: Resolved;
  private current: BreakerState;
  private win: OutcomeWindow;
  private consecutive = 0;
  /** Copy-on-write, so a listener that unsubscribes during delivery does not disturb the loop. */
  private listeners: readonly BreakerListener[] = [];

  constructor(
    opts: BreakerOptions,
    private readonly clock: Clock = monotonicClock,
  ) {
    this.o = resolve(opts);
    this.win = makeWindow(this.o.window);
    this.current = forcedStateOf(this.o.forcedState) ?? CLOSED;
  }

  get state(): BreakerState {
    return this.current;
  }

  get options(): Readonly<BreakerOptions> {
    const o = this.o;
    const out: BreakerOptions = {
      strategy: o.strategy,
      threshold: o.threshold,
      minRequestAmount: o.minRequestAmount,
      window: o.window,
      recoveryTimeoutMs: o.recoveryTimeoutMs,
      halfOpenProbes: o.halfOpenProbes,
    };
    if (o.strategy === 'slowRequestRatio') out.slowThresholdMs = o.slowThresholdMs;
    if (o.forcedState !== undefined) out.forcedState = o.forcedState;
    return out;
  }

  /**
   * `now`, on every hot-path method: the breaker's clock as the caller just read it, if it did (a clock
   * read is the costliest part of a closed breaker's work). Omitted: the breaker reads its clock.
   */
  tryAcquire(now?: number): boolean {
    const s = this.current;
    switch (s.kind) {
      case 'closed':
      case 'forcedClosed':
      case 'disabled':
        return true;
      case 'forcedOpen':
        return false;
      case 'open':
        if ((now ?? this.clock.now()) < s.halfOpenAt) return false;
        this.transition({ kind: 'halfOpen', probesInFlight: 1, probeSuccesses: 0 });
        return true;
      case 'halfOpen':
        if (s.probesInFlight + s.probeSuccesses >= this.o.halfOpenProbes) return false;
        this.current = { kind: 'halfOpen', probesInFlight: s.probesInFlight + 1, probeSuccesses: s.probeSuccesses };
        return true;
    }
  }

  onSuccess(latencyMs: number, now?: number): void {
    const s = this.current;
    const slow = this.isSlow(latencyMs);
    if (s.kind === 'closed' || s.kind === 'forcedClosed') {
      this.record(false, slow, now);
    } else if (s.kind === 'halfOpen' && s.probesInFlight > 0) {
      if (slow) return this.trip(now);
      const successes = s.probeSuccesses + 1;
      if (successes >= this.o.halfOpenProbes) {
        this.resetCounts();
        this.transition(CLOSED);
      } else {
        this.current = { kind: 'halfOpen', probesInFlight: s.probesInFlight - 1, probeSuccesses: successes };
      }
    }
  }

  onFailure(latencyMs: number, now?: number): void {
    const s = this.current;
    if (s.kind === 'closed' || s.kind === 'forcedClosed') this.record(true, this.isSlow(latencyMs), now);
    else if (s.kind === 'halfOpen' && s.probesInFlight > 0) this.trip(now);
  }

  release(): void {
    const s = this.current;
    if (s.kind === 'halfOpen' && s.probesInFlight > 0) {
      this.current = { kind: 'halfOpen', probesInFlight: s.probesInFlight - 1, probeSuccesses: s.probeSuccesses };
    }
  }

  /** While open: ms until probes are let through (for a Retry-After). 0 in every other state. */
  retryAfterMs(now?: number): number {
    const s = this.current;
    return s.kind === 'open' ? Math.max(0, s.halfOpenAt - (now ?? this.clock.now())) : 0;
  }

  /** Called on every change of `state.kind` (not on probe counts). Returns the unsubscribe function. */
  onStateChange(listener: BreakerListener): () => void {
    this.listeners = [...this.listeners, listener];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  /**
   * Applies a changed rule. The state survives when it still means something: an open breaker stays open
   * (its half-open time recomputed from the new recoveryTimeoutMs), half-open keeps its probes, the
   * window keeps its counts unless its shape or the strategy changed. A forced state takes over at once;
   * removing it resumes closed, with the counts forcedClosed kept (so a known-bad upstream trips at once).
   */
  reconfigure(opts: BreakerOptions): void {
    const prev = this.o;
    const next = resolve(opts);
    this.o = next;
    if (!sameWindow(prev.window, next.window)) this.win = makeWindow(next.window);
    else if (prev.strategy !== next.strategy || prev.slowThresholdMs !== next.slowThresholdMs) this.win.reset();
    if (prev.strategy !== next.strategy) this.consecutive = 0;

    const s = this.current;
    const forced = forcedStateOf(next.forcedState);
    if (forced !== undefined) {
      if (forced === s) return;
      if (!(forced === FORCED_CLOSED && s === CLOSED)) this.resetCounts();
      this.transition(forced);
    } else if (s === FORCED_OPEN || s === DISABLED) {
      this.resetCounts();
      this.transition(CLOSED);
    } else if (s === FORCED_CLOSED) {
      this.transition(CLOSED);
    } else if (s.kind === 'open' && prev.recoveryTimeoutMs !== next.recoveryTimeoutMs) {
      this.current = { kind: 'open', openedAt: s.openedAt, halfOpenAt: s.openedAt + next.recoveryTimeoutMs };
    } else if (s.kind === 'halfOpen' && s.probeSuccesses >= next.halfOpenProbes) {
      // Fewer probes are required now and enough already succeeded: waiting would leave no probe to run.
      this.resetCounts();
      this.transition(CLOSED);
    }
  }

  private isSlow(latencyMs: number): boolean {
    return this.o.strategy === 'slowRequestRatio' && latencyMs >= this.o.slowThresholdMs;
  }

  private record(failure: boolean, slow: boolean, now: number | undefined): void {
    const o = this.o;
    let trip: boolean;
    if (o.strategy === 'consecutiveFailures') {
      this.consecutive = failure ? this.consecutive + 1 : 0;
      trip = this.consecutive >= o.threshold;
    } else {
      const w = this.win;
      w.record(w.timed ? (now ?? this.clock.now()) : 0, failure, slow);
      const total = w.total;
      const bad = o.strategy === 'errorRatio' ? w.failures : w.slow;
      // bad / total >= threshold%, without a division.
      trip = total >= o.minRequestAmount && bad * 100 >= o.threshold * total;
    }
    if (trip && this.current === CLOSED) this.trip(now);
  }

  private trip(now: number = this.clock.now()): void {
    this.resetCounts();
    this.transition({ kind: 'open', openedAt: now, halfOpenAt: now + this.o.recoveryTimeoutMs });
  }

  private resetCounts(): void {
    this.win.reset();
    this.consecutive = 0;
  }

  private transition(to: BreakerState): void {
    const from = this.current;
    this.current = to;
    if (from.kind === to.kind) return;
    const ls = this.listeners;
    for (let i = 0; i < ls.length; i++) {
      try {
        ls[i]!(from, to);
      } catch (e) {
        // A broken listener (metrics, logging) must never break the breaker or the call that moved it.
        process.emitWarning(e instanceof Error ? e : new Error(String(e)), 'PlinthBreakerListenerError');
      }
    }
  }
}

/**
 * Compiled once per rule: does this HTTP status count (as a breaker failure, or as worth a retry)? Entries
 * are codes (`503`, `"503"`) or classes (`"5xx"`). Default `['5xx']`. The answer is one typed-array read.
 */
export function statusClassifier(statuses: readonly (number | string)[] = ['5xx']): (status: number) => boolean {
  const table = new Uint8Array(600);
  for (const s of statuses) {
    if (typeof s === 'number') {
      if (!Number.isInteger(s) || s < 100 || s > 599) throw new RangeError(`not an HTTP status: ${s}`);
      table[s] = 1;
      continue;
    }
    const cls = /^([1-5])xx$/i.exec(s);
    if (cls) {
      const lo = Number(cls[1]) * 100;
      table.fill(1, lo, lo + 100);
    } else if (/^[1-5]\d\d$/.test(s)) {
      table[Number(s)] = 1;
    } else {
      throw new RangeError(`not an HTTP status or class: ${JSON.stringify(s)}`);
    }
  }
  return (status) => table[status] === 1;
}
