export interface BackoffOptions {
  /** Ceiling of the first delay. Default 250 ms. */
  initialMs?: number;
  /** Largest ceiling, reached by doubling. Default 15 s. */
  maxMs?: number;
}

export const DEFAULT_BACKOFF = { initialMs: 250, maxMs: 15_000 } as const;

/**
 * Exponential backoff with full jitter: attempt n waits a uniformly random time in [0, min(max, initial·2ⁿ)).
 * Full jitter (rather than ±x% around the ceiling) is what spreads a fleet that lost the control plane at the
 * same instant: reconnects arrive evenly over the window instead of in waves.
 */
export function fullJitterDelay(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  // 2 ** 53 already exceeds any sensible maxMs; clamping the exponent keeps the product finite.
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(Math.max(0, attempt), 53));
  return Math.floor(random() * ceiling);
}

/** One reconnect schedule: `next()` after each failure, `reset()` once the connection proved healthy. */
export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  private attempt = 0;

  constructor(options: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.initialMs = options.initialMs ?? DEFAULT_BACKOFF.initialMs;
    this.maxMs = options.maxMs ?? DEFAULT_BACKOFF.maxMs;
    if (!(this.initialMs > 0) || !Number.isFinite(this.initialMs)) throw new RangeError(`backoff.initialMs must be a positive number, not ${this.initialMs}`);
    if (!(this.maxMs >= this.initialMs) || !Number.isFinite(this.maxMs)) {
      throw new RangeError(`backoff.maxMs must be a number >= initialMs (${this.initialMs}), not ${this.maxMs}`);
    }
  }

  /** Failures since the last reset. */
  get failures(): number {
    return this.attempt;
  }

  next(): number {
    return fullJitterDelay(this.attempt++, this.initialMs, this.maxMs, this.random);
  }

  reset(): void {
    this.attempt = 0;
  }
}
