/**
 * The latency histogram every rollup row carries. Fixed bounds (never configurable: rows written by
 * different servers or versions must add up bucket by bucket), roughly log-spaced on the 1-1.5-2-2.5-3-4-
 * 5-6-8 series from 0.1 ms to 60 s. Being round numbers, the usual SLO thresholds (100 ms, 250 ms, 300 ms,
 * 500 ms, 1 s, ...) fall exactly on a bound, so "slower than the threshold" counts are exact there and
 * interpolated only for thresholds inside a bucket. A bucket is at most 1.5x its lower bound wide: that is
 * the resolution of every percentile read from it.
 *
 * Bucket 0 holds [0, BOUNDS[0]), bucket i holds [BOUNDS[i-1], BOUNDS[i]), the last one [60 s, inf).
 */
const SERIES = [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8];

function makeBounds(): number[] {
  const out: number[] = [];
  for (let decade = 0.1; decade <= 10_000; decade *= 10) {
    for (const m of SERIES) {
      // Rounded so that 0.1 * 3 is 0.3, not 0.30000000000000004: bounds are compared with thresholds.
      const b = Math.round(decade * m * 1000) / 1000;
      if (b <= 60_000) out.push(b);
    }
  }
  return out;
}

/** Upper bounds in ms (exclusive), ascending. */
export const BOUNDS: readonly number[] = makeBounds();
/** Buckets: one per bound plus the overflow bucket. */
export const BUCKETS = BOUNDS.length + 1;

/** The bucket a duration falls into (binary search: 6 steps). */
export function bucketOf(ms: number): number {
  let lo = 0;
  let hi = BOUNDS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ms < BOUNDS[mid]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export function lowerBound(bucket: number): number {
  return bucket === 0 ? 0 : BOUNDS[bucket - 1]!;
}

/** The overflow bucket has no upper bound; its values are reported as its lower bound (60 s). */
export function upperBound(bucket: number): number {
  return BOUNDS[bucket] ?? BOUNDS[BOUNDS.length - 1]!;
}

/** Trailing empty buckets are left out of stored histograms: most rows never reach the slow buckets. */
export function trimmedLength(h: ArrayLike<number>): number {
  let n = h.length;
  while (n > 0 && h[n - 1] === 0) n--;
  return n;
}

/** Stored form in SQLite: little-endian uint32 per bucket, trailing zeros trimmed. */
export function encodeHist(h: ArrayLike<number>): Buffer {
  const n = trimmedLength(h);
  const buf = Buffer.allocUnsafe(n * 4);
  for (let i = 0; i < n; i++) buf.writeUInt32LE(h[i]!, i * 4);
  return buf;
}

export function addEncoded(into: number[] | Float64Array, buf: Uint8Array | null | undefined): void {
  if (!buf) return;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Math.min(buf.byteLength >> 2, into.length);
  for (let i = 0; i < n; i++) into[i]! += view.getUint32(i * 4, true);
}

/** Adds two stored histograms (the SQLite upsert's `hist_add`). */
export function addEncodedPair(a: Uint8Array | null, b: Uint8Array | null): Buffer {
  const sum = new Array<number>(BUCKETS).fill(0);
  addEncoded(sum, a);
  addEncoded(sum, b);
  return encodeHist(sum);
}

/** Total count of a histogram. */
export function histTotal(h: ArrayLike<number>): number {
  let t = 0;
  for (let i = 0; i < h.length; i++) t += h[i]!;
  return t;
}

/**
 * The q-quantile (0 < q <= 1), interpolated linearly inside the bucket that holds the rank. 0 for an empty
 * histogram. Error bound: the width of that bucket.
 */
export function quantile(h: ArrayLike<number>, q: number): number {
  const total = histTotal(h);
  if (total === 0) return 0;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < h.length; i++) {
    const c = h[i]!;
    if (c === 0) continue;
    if (below + c >= rank) {
      if (i >= BOUNDS.length) return lowerBound(i);
      const lo = lowerBound(i);
      return lo + ((upperBound(i) - lo) * (rank - below)) / c;
    }
    below += c;
  }
  return lowerBound(h.length - 1);
}

/**
 * How many observations were slower than `thresholdMs`: buckets wholly above count fully; the bucket the
 * threshold falls inside counts in proportion to the part above it, assuming values spread evenly in it.
 * Exact when the threshold is a bound.
 */
export function countAbove(h: ArrayLike<number>, thresholdMs: number): number {
  let bad = 0;
  for (let i = 0; i < h.length; i++) {
    const c = h[i]!;
    if (c === 0) continue;
    const lo = lowerBound(i);
    if (lo >= thresholdMs) bad += c;
    else if (i < BOUNDS.length && upperBound(i) > thresholdMs) bad += (c * (upperBound(i) - thresholdMs)) / (upperBound(i) - lo);
  }
  return bad;
}
