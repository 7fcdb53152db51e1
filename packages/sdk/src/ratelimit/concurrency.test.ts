import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConcurrencyLimiter } from './concurrency.js';

describe('ConcurrencyLimiter', () => {
  it('admits up to limit in flight and refuses the rest at once', () => {
    const c = new ConcurrencyLimiter(3);
    assert.deepEqual([c.tryAcquire(), c.tryAcquire(), c.tryAcquire(), c.tryAcquire()], [true, true, true, false]);
    assert.equal(c.inFlight, 3);
    c.release();
    assert.equal(c.tryAcquire(), true, 'a released slot is reusable');
    assert.equal(c.tryAcquire(), false);
  });

  it('is not widened by a double release', () => {
    const c = new ConcurrencyLimiter(1);
    assert.equal(c.tryAcquire(), true);
    c.release();
    c.release();
    assert.equal(c.inFlight, 0);
    assert.equal(c.tryAcquire(), true);
    assert.equal(c.tryAcquire(), false);
  });

  it('applies a lowered limit to new work without shedding work in flight', () => {
    const c = new ConcurrencyLimiter(4);
    for (let i = 0; i < 4; i++) c.tryAcquire();
    c.limit = 2;
    assert.equal(c.inFlight, 4);
    c.release();
    c.release();
    assert.equal(c.tryAcquire(), false, 'still at the new limit');
    c.release();
    assert.equal(c.tryAcquire(), true);
    c.limit = 10;
    assert.equal(c.tryAcquire(), true, 'a raised limit admits at once');
  });

  it('refuses limits that are not whole numbers >= 1', () => {
    assert.throws(() => new ConcurrencyLimiter(0), RangeError);
    assert.throws(() => new ConcurrencyLimiter(1.5), RangeError);
    const c = new ConcurrencyLimiter(1);
    assert.throws(() => (c.limit = Number.NaN), RangeError);
    assert.equal(c.limit, 1);
  });
});
