import { randomFillSync } from 'node:crypto';

// One pool of random bytes, hex-encoded once per refill: an id is then a slice of that string, where
// `Buffer#toString('hex')` per id costs a native call each (it was the largest item in a span's profile).
const POOL_BYTES = 4096;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let hex = '';
let offset = POOL_BYTES;

function refill(): void {
  randomFillSync(pool);
  hex = pool.toString('hex');
  offset = 0;
}

function randomHex(bytes: number): string {
  for (;;) {
    if (offset + bytes > POOL_BYTES) refill();
    const start = offset;
    offset += bytes;
    // An all-zero id is invalid on the wire; the odds are 2^-64 at worst, but the check is cheap.
    for (let i = start; i < start + bytes; i++) if (pool[i] !== 0) return hex.slice(2 * start, 2 * (start + bytes));
  }
}

let randomness = 0;

/** 32 lowercase hex, random, never all zero. */
export function newTraceId(): string {
  const id = randomHex(16);
  // Hex digits 18..30 of the id as a number, read off the bytes instead of parsed back from the text.
  const b = offset - 16;
  randomness = (pool[b + 9]! * 2 ** 40 + pool[b + 10]! * 2 ** 32 + pool.readUInt32BE(b + 11)) * 16 + (pool[b + 15]! >> 4);
  return id;
}

/** The sampling randomness of the last id from newTraceId (see PlinthSampler), without parsing it again. */
export function lastTraceRandomness(): number {
  return randomness;
}

/** 16 lowercase hex, random, never all zero. */
export function newSpanId(): string {
  return randomHex(8);
}
