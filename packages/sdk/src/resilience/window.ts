/**
 * Sliding counters over a time window, shared by the breaker's time window and the retry budget.
 *
 * A ring of `buckets` buckets, each `durationMs / buckets` wide. Buckets that slid out of the window are
 * zeroed lazily by `roll` when time moves, so there is no timer, and a running sum per field makes reading
 * the window O(1). Steady state allocates nothing: every count lives in two preallocated Float64Arrays
 * (doubles hold integers exactly up to 2^53, far beyond any window's volume).
 *
 * The window covers the current, partly filled bucket plus the `buckets - 1` before it, so its effective
 * span is between (buckets - 1) and buckets bucket widths: old calls leave one bucket at a time.
 */
export class BucketedCounters {
  readonly bucketMs: number;
  private readonly counts: Float64Array;
  private readonly sums: Float64Array;
  /** Epoch (time / bucketMs, floored) of the newest bucket; -Infinity until the first roll. */
  private head = -Infinity;
  /** Index in `counts` of the newest bucket's first field (kept by `moveTo`, so `add` computes no slot). */
  private headBase = 0;

  constructor(
    readonly durationMs: number,
    readonly buckets: number,
    readonly fields: number,
  ) {
    if (!(durationMs > 0) || !Number.isFinite(durationMs)) throw new RangeError(`window duration must be a positive number of ms, got ${durationMs}`);
    this.bucketMs = durationMs / buckets;
    this.counts = new Float64Array(buckets * fields);
    this.sums = new Float64Array(fields);
  }

  /** Moves the window to `now`. Call before `add` and `sum`. A clock that went backwards keeps the newest bucket. */
  roll(now: number): void {
    // Kept tiny so it inlines into the hot path: a double passed to a call that is not inlined is boxed.
    const epoch = Math.floor(now / this.bucketMs);
    if (epoch > this.head) this.moveTo(epoch);
  }

  private moveTo(epoch: number): void {
    const gap = epoch - this.head;
    if (gap >= this.buckets) {
      this.counts.fill(0);
      this.sums.fill(0);
    } else {
      const f = this.fields;
      for (let e = this.head + 1; e <= epoch; e++) {
        const base = slot(e, this.buckets) * f;
        for (let i = 0; i < f; i++) {
          this.sums[i]! -= this.counts[base + i]!;
          this.counts[base + i] = 0;
        }
      }
    }
    this.head = epoch;
    this.headBase = slot(epoch, this.buckets) * this.fields;
  }

  add(field: number, n = 1): void {
    this.counts[this.headBase + field]! += n;
    this.sums[field]! += n;
  }

  sum(field: number): number {
    return this.sums[field]!;
  }

  reset(): void {
    this.counts.fill(0);
    this.sums.fill(0);
    this.head = -Infinity;
    this.headBase = 0;
  }
}

/**
 * Non-negative modulo (clocks in tests may start below zero). By floor division: epochs of an epoch-aligned
 * clock are doubles to V8, for which `%` is a call of the C library's fmod, on every add.
 */
function slot(epoch: number, buckets: number): number {
  return epoch - Math.floor(epoch / buckets) * buckets;
}
