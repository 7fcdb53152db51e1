/**
 * A bulkhead: at most `limit` requests in flight. `tryAcquire` never queues; a refused request is answered
 * at once (429 + `concurrency_limited`), which is what an overloaded server should do with excess work.
 *
 * Every successful `tryAcquire` must be paired with exactly one `release`, typically in a `finally`.
 */
export class ConcurrencyLimiter {
  private current = 0;
  private maxLimit: number;

  constructor(limit: number) {
    this.maxLimit = checkLimit(limit);
  }

  tryAcquire(): boolean {
    if (this.current >= this.maxLimit) return false;
    this.current++;
    return true;
  }

  release(): void {
    // Never below zero: a double release must not permanently widen the bulkhead.
    if (this.current > 0) this.current--;
  }

  get inFlight(): number {
    return this.current;
  }

  get limit(): number {
    return this.maxLimit;
  }

  /** Rules change live; lowering the limit sheds nothing in flight, it only refuses new work until below. */
  set limit(value: number) {
    this.maxLimit = checkLimit(value);
  }
}

function checkLimit(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`concurrency limit must be an integer >= 1, got ${n}`);
  return n;
}
