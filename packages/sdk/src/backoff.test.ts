import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff, fullJitterDelay } from './backoff.js';

test('full jitter stays within [0, min(max, initial·2^n))', () => {
  for (let attempt = 0; attempt < 80; attempt++) {
    const ceiling = Math.min(15_000, 250 * 2 ** attempt);
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const d = fullJitterDelay(attempt, 250, 15_000, () => r);
      assert.ok(d >= 0 && d < ceiling, `attempt ${attempt}, random ${r}: ${d} not in [0, ${ceiling})`);
    }
  }
  // Extremes of the random source hit both ends of the window.
  assert.equal(fullJitterDelay(3, 100, 10_000, () => 0), 0);
  assert.equal(fullJitterDelay(3, 100, 10_000, () => 0.999999), 799);
  assert.equal(fullJitterDelay(1000, 100, 10_000, () => 0.999999), 9999);
});

test('Backoff doubles its ceiling per failure, caps at maxMs and starts over on reset', () => {
  const b = new Backoff({ initialMs: 10, maxMs: 100 }, () => 0.999999);
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [9, 19, 39, 79, 99, 99]);
  assert.equal(b.failures, 6);
  b.reset();
  assert.equal(b.failures, 0);
  assert.equal(b.next(), 9);
});

test('Backoff defaults to 250 ms .. 15 s and spreads real random delays', () => {
  const b = new Backoff();
  assert.equal(b.initialMs, 250);
  assert.equal(b.maxMs, 15_000);
  const delays = Array.from({ length: 200 }, () => fullJitterDelay(10, 250, 15_000));
  assert.ok(delays.every((d) => d >= 0 && d < 15_000));
  // With 200 draws from U[0, 15000) both halves of the window are hit; a fixed delay would fail this.
  assert.ok(delays.some((d) => d < 7500) && delays.some((d) => d >= 7500));
});

test('Backoff rejects nonsensical bounds', () => {
  assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: 100, maxMs: 50 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: Number.NaN }), RangeError);
});
