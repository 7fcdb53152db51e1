import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AdaptiveConcurrencyLimiter } from './adaptive.js';
import { ManualClock } from './clock.js';

/**
 * One sample window at full load: fill every slot, finish them all with `latencyMs`, a few rounds, then
 * move past the window so the next release closes it.
 */
function loadedWindow(l: AdaptiveConcurrencyLimiter, clock: ManualClock, latencyMs: number, opts: { inFlight?: number; dropped?: boolean } = {}): void {
  for (let round = 0; round < 3; round++) {
    let n = 0;
    while (n < (opts.inFlight ?? Infinity) && l.tryAcquire()) n++;
    for (let i = 0; i < n; i++) l.release(latencyMs, opts.dropped === true && i === 0);
  }
  clock.advance(1_000);
  l.tryAcquire();
  l.release(latencyMs);
}

function limitsOver(l: AdaptiveConcurrencyLimiter, clock: ManualClock, windows: number, latencyMs: number): number[] {
  const limits: number[] = [];
  for (let w = 0; w < windows; w++) {
    loadedWindow(l, clock, latencyMs);
    limits.push(l.limit);
  }
  return limits;
}

describe('AdaptiveConcurrencyLimiter (Gradient2)', () => {
  it('enforces its limit on requests in flight', () => {
    const l = new AdaptiveConcurrencyLimiter({ initialLimit: 5 }, new ManualClock());
    let n = 0;
    while (l.tryAcquire()) n++;
    assert.equal(n, 5);
    assert.equal(l.inFlight, 5);
    l.abandon();
    assert.equal(l.tryAcquire(), true);
  });

  it('shrinks under rising latency, down to minLimit, and recovers when latency returns to the baseline', () => {
    const clock = new ManualClock();
    const l = new AdaptiveConcurrencyLimiter({ initialLimit: 50, minLimit: 8, maxLimit: 100 }, clock);
    const steady = limitsOver(l, clock, 15, 10);
    assert.ok(steady.at(-1)! >= 50, `at the baseline it does not shrink: ${steady.join(' ')}`);
    assert.ok(Math.abs(l.baselineRttMs - 10) < 1e-9);

    const before = l.limit;
    const overloaded = limitsOver(l, clock, 40, 40); // 4x the baseline, over the 1.5 tolerance
    for (let i = 1; i < overloaded.length; i++) assert.ok(overloaded[i]! <= overloaded[i - 1]!, `monotone: ${overloaded.join(' ')}`);
    assert.ok(overloaded[4]! < before, 'shrinking starts within a few windows');
    // Each window: 0.8 · L + 0.2 · (0.5 · L + queueSize), heading for 2 · queueSize = 6, clamped at minLimit.
    assert.equal(overloaded.at(-1), 8, `it ends at minLimit: ${overloaded.join(' ')}`);
    assert.ok(l.baselineRttMs < 15, 'the baseline is a slow average and is not dragged along');

    const low = l.limit;
    const recovered = limitsOver(l, clock, 40, 10);
    assert.ok(recovered.at(-1)! > low + 10, `it grows back: ${recovered.join(' ')}`);
    assert.ok(recovered.at(-1)! <= 100, 'never above maxLimit');
  });

  it('does not shrink an app-limited service (peak in flight under half the limit)', () => {
    const clock = new ManualClock();
    const l = new AdaptiveConcurrencyLimiter({ initialLimit: 40 }, clock);
    for (let w = 0; w < 12; w++) loadedWindow(l, clock, 10, { inFlight: 12 });
    for (let w = 0; w < 10; w++) loadedWindow(l, clock, 100, { inFlight: 12 });
    assert.equal(l.limit, 40);
  });

  it('treats a window with a drop as the worst gradient', () => {
    const clock = new ManualClock();
    const l = new AdaptiveConcurrencyLimiter({ initialLimit: 40 }, clock);
    for (let w = 0; w < 12; w++) loadedWindow(l, clock, 10);
    const before = l.limit;
    for (let w = 0; w < 3; w++) loadedWindow(l, clock, 10, { dropped: true });
    assert.ok(l.limit < before, `${l.limit} < ${before} with latency unchanged`);
  });

  it('is not poisoned by NaN, negative or all-zero latencies', () => {
    const clock = new ManualClock();
    const l = new AdaptiveConcurrencyLimiter({ initialLimit: 10 }, clock);
    for (let w = 0; w < 5; w++) loadedWindow(l, clock, 0);
    loadedWindow(l, clock, Number.NaN);
    loadedWindow(l, clock, -3);
    assert.ok(Number.isInteger(l.limit) && l.limit >= 10, `limit ${l.limit}`);
    let n = 0;
    while (l.tryAcquire()) n++;
    assert.equal(n, l.limit, 'and it still enforces its limit');
  });

  it('validates its options', () => {
    assert.throws(() => new AdaptiveConcurrencyLimiter({ minLimit: 0 }), RangeError);
    assert.throws(() => new AdaptiveConcurrencyLimiter({ minLimit: 10, maxLimit: 5 }), RangeError);
    assert.throws(() => new AdaptiveConcurrencyLimiter({ tolerance: 0.5 }), RangeError);
    assert.throws(() => new AdaptiveConcurrencyLimiter({ smoothing: 0 }), RangeError);
  });
});
