import { monotonicClock, type Clock } from './clock.js';

export interface AdaptiveOptions {
  /** Starting concurrency limit. Default 20. */
  initialLimit?: number;
  /** The limit never goes below this (keep serving something while overloaded). Default 4. */
  minLimit?: number;
  /** Nor above this. Default 1000. */
  maxLimit?: number;
  /** How much latency above the baseline is tolerated before shrinking (Gradient2's `rttTolerance`). Default 1.5. */
  tolerance?: number;
  /** Weight of each new estimate (Gradient2's `smoothing`). Default 0.2. */
  smoothing?: number;
  /** Windows averaged into the long-term (baseline) latency EMA. Default 600, as Gradient2. */
  longWindow?: number;
  /**
   * Extra headroom added per update so the limit can probe upwards; default ⌈√limit⌉ capped to [1, 4]
   * (Gradient2 uses a constant 4, under which no limit below 8 can shrink: L · 0.5 + 4 ≥ L for L ≤ 8).
   */
  queueSize?: (limit: number) => number;
  /** Length of one sample window. Default 1000 ms. */
  windowMs?: number;
  /** A window with fewer samples is extended rather than used (too noisy). Default 10. */
  minSamples?: number;
}

/**
 * Adaptive overload protection: a concurrency limit that follows Netflix concurrency-limits' **Gradient2**
 * algorithm, fed by per-window average latencies.
 *
 * - short RTT = the average latency of the last window (what the system does now);
 * - long RTT  = an exponential average of window averages over `longWindow` windows: the baseline, standing in
 *   for the no-load latency (unlike a minimum it adapts when the baseline legitimately moves);
 * - gradient  = clamp(tolerance · long / short, 0.5, 1): 1 while latency is within tolerance of the baseline,
 *   down to 0.5 when queueing inflates it;
 * - new limit = limit · gradient + queueSize(limit), smoothed: limit·(1−smoothing) + new·smoothing, clamped.
 *
 * So rising latency shrinks the limit (geometrically, at most halving per window before smoothing), and
 * latency back at the baseline grows it again by about `smoothing · queueSize` per window. When the long
 * average exceeds twice the short one (recovering from a long overload), it is decayed 5% per window so the
 * baseline returns faster than the EMA alone would. As in Gradient2, a window whose peak in-flight count was
 * under half the limit does not change it (an idle service has not shown it can take more). Additionally, a
 * window containing a drop (timeout, upstream overload) is treated as the worst gradient, 0.5.
 *
 * One clock read per request; all the math happens once per window.
 */
export class AdaptiveConcurrencyLimiter {
  readonly minLimit: number;
  readonly maxLimit: number;
  private readonly tolerance: number;
  private readonly smoothing: number;
  private readonly longWindow: number;
  private readonly queueSize: (limit: number) => number;
  private readonly windowMs: number;
  private readonly minSamples: number;

  private estimatedLimit: number;
  private intLimit: number;
  private current = 0;

  private longRtt = 0;
  private longCount = 0;
  private windowStart: number;
  private rttSum = 0;
  private samples = 0;
  private maxInFlight = 0;
  private dropped = false;

  constructor(opts: AdaptiveOptions = {}, private readonly clock: Clock = monotonicClock) {
    this.minLimit = opts.minLimit ?? 4;
    this.maxLimit = opts.maxLimit ?? 1000;
    this.estimatedLimit = opts.initialLimit ?? 20;
    this.tolerance = opts.tolerance ?? 1.5;
    this.smoothing = opts.smoothing ?? 0.2;
    this.longWindow = opts.longWindow ?? 600;
    this.queueSize = opts.queueSize ?? ((l) => Math.max(1, Math.min(4, Math.ceil(Math.sqrt(l)))));
    this.windowMs = opts.windowMs ?? 1000;
    this.minSamples = opts.minSamples ?? 10;
    if (!(this.minLimit >= 1 && this.minLimit <= this.maxLimit)) throw new RangeError('need 1 <= minLimit <= maxLimit');
    if (!(this.tolerance >= 1)) throw new RangeError('tolerance must be >= 1');
    if (!(this.smoothing > 0 && this.smoothing <= 1)) throw new RangeError('smoothing must be in (0, 1]');
    this.estimatedLimit = Math.max(this.minLimit, Math.min(this.maxLimit, this.estimatedLimit));
    this.intLimit = Math.floor(this.estimatedLimit);
    this.windowStart = clock.now();
  }

  /** Admit one request if fewer than `limit` are in flight. Pair each `true` with `release` or `abandon`. */
  tryAcquire(): boolean {
    if (this.current >= this.intLimit) return false;
    this.current++;
    if (this.current > this.maxInFlight) this.maxInFlight = this.current;
    return true;
  }

  /**
   * The request finished after `latencyMs`. `dropped` marks a failure that signals overload (timeout,
   * upstream 503/429); ordinary errors should be reported as samples with their latency, or `abandon`ed.
   */
  release(latencyMs: number, dropped = false): void {
    if (this.current > 0) this.current--;
    // A NaN or negative latency (a broken stopwatch) would poison the baseline for good: keep the slot only.
    if (!(latencyMs >= 0 && latencyMs < Infinity)) return;
    this.rttSum += latencyMs;
    this.samples++;
    if (dropped) this.dropped = true;
    const now = this.clock.now();
    if (now - this.windowStart >= this.windowMs && this.samples >= this.minSamples) this.closeWindow(now);
  }

  /** The request ended without a meaningful latency (e.g. cancelled by the client): free the slot only. */
  abandon(): void {
    if (this.current > 0) this.current--;
  }

  get limit(): number {
    return this.intLimit;
  }

  get inFlight(): number {
    return this.current;
  }

  /** The baseline latency the limit is judged against (0 before the first window closes). */
  get baselineRttMs(): number {
    return this.longRtt;
  }

  private closeWindow(now: number): void {
    const shortRtt = this.rttSum / this.samples;
    const peak = this.maxInFlight;
    const dropped = this.dropped;
    this.windowStart = now;
    this.rttSum = 0;
    this.samples = 0;
    this.maxInFlight = this.current;
    this.dropped = false;

    // As Gradient2's ExpAvgMeasurement: a plain average over the first 10 windows (one early sample must not
    // become the baseline), then an EMA over `longWindow` windows.
    this.longCount++;
    const k = this.longCount <= 10 ? 1 / this.longCount : 2 / (this.longWindow + 1);
    this.longRtt += (shortRtt - this.longRtt) * k;
    const longRtt = this.longRtt;
    // As Gradient2: the decay applies to the stored baseline, this window is judged on the undecayed one.
    if (longRtt > 2 * shortRtt) this.longRtt *= 0.95;

    if (!dropped && peak < this.estimatedLimit / 2) return; // app-limited: no evidence either way

    // A window of zero latencies (a coarse stopwatch) shows no queueing; dividing by it would give NaN.
    const gradient = dropped
      ? 0.5
      : shortRtt > 0
        ? Math.max(0.5, Math.min(1, (this.tolerance * longRtt) / shortRtt))
        : 1;
    let next = this.estimatedLimit * gradient + this.queueSize(this.estimatedLimit);
    next = this.estimatedLimit * (1 - this.smoothing) + next * this.smoothing;
    this.estimatedLimit = Math.max(this.minLimit, Math.min(this.maxLimit, next));
    this.intLimit = Math.floor(this.estimatedLimit);
  }
}
