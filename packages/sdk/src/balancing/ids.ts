import { randomFillSync } from 'node:crypto';

// One pool of random bytes, hex-encoded once per refill: an id is then a slice of that string, where
// `Buffer#toString('hex')` per id costs a native call each (it was the largest item in a span's profile,
// and ~16 % of an outbound call's). The pool is encoded by one native `toString('hex')` (about 6 µs for
// 8 KiB, 0.02 µs an id) rather than a loop in JavaScript: refills come once in some 340 spans, too seldom
// for V8 to keep such a loop optimized, and a service whose loop fell back to the interpreter paid about
// 1.5 µs per request for it. Ids need uniqueness, not secrecy, but crypto randomness is what the W3C spec
// recommends.
const POOL_BYTES = 8192;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let hex = '';
let offset = POOL_BYTES;

function refill(): void {
  randomFillSync(pool);
  hex = pool.toString('hex');
  offset = 0;
}

/**
 * `bytes` random bytes as lowercase hex, never all zero. What `newTraceId` is without noting the sampling
 * randomness: the propagation-only client has no sampler to feed.
 */
export function randomHex(bytes: number): string {
  for (;;) {
    if (offset + bytes > POOL_BYTES) refill();
    const start = offset;
    offset += bytes;
    // An all-zero id is invalid on the wire; the odds are 2^-64 at worst, but the check is cheap.
    for (let i = start; i < start + bytes; i++) if (pool[i] !== 0) return hex.slice(2 * start, 2 * (start + bytes));
  }
}

/** One cell rather than a `let`: a module variable holding a non-small number boxes it on every write. */
const randomness = new Float64Array(1);

/** 32 lowercase hex, random, never all zero. */
export function newTraceId(): string {
  const id = randomHex(16);
  // Hex digits 18..30 of the id as a number, read off the bytes instead of parsed back from the text.
  const b = offset - 16;
  randomness[0] = (pool[b + 9]! * 2 ** 40 + pool[b + 10]! * 2 ** 32 + pool.readUInt32BE(b + 11)) * 16 + (pool[b + 15]! >> 4);
  return id;
}

/** The sampling randomness of the last id from newTraceId (see PlinthSampler), without parsing it again. */
export function lastTraceRandomness(): number {
  return randomness[0]!;
}

/** 16 lowercase hex, random, never all zero. */
export function newSpanId(): string {
  return randomHex(8);
}


