import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RetryStrategy } from '@plinth/core';
import { ManualClock } from '../ratelimit/clock.js';
import { parseRetryAfter, RetryBudget, RetryPolicy, retryBudgetOptionsOf, retryOptionsOf } from './retry.js';

const ALMOST_ONE = 1 - 2 ** -53;

describe('RetryPolicy.nextDelay', () => {
  it('uses full jitter: [0, min(cap, base × 2^(n-1))) for the n-th retry', () => {
    const opts = { maxAttempts: 10, backoffBaseMs: 25, backoffCapMs: 1000 };
    const low = new RetryPolicy(opts, undefined, () => 0);
    const high = new RetryPolicy(opts, undefined, () => ALMOST_ONE);
    const ceilings = [25, 50, 100, 200, 400, 800, 1000, 1000, 1000];
    ceilings.forEach((ceiling, i) => {
      assert.equal(low.nextDelay(i + 1, undefined, Infinity), 0);
      assert.equal(high.nextDelay(i + 1, undefined, Infinity), ceiling - 1, `retry ${i + 1}`);
    });
    const mid = new RetryPolicy(opts, undefined, () => 0.5);
    assert.equal(mid.nextDelay(3, undefined, Infinity), 50);
  });

  it('spreads delays over the whole range', () => {
    let seed = 42;
    const lcg = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const p = new RetryPolicy({ maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 100 }, undefined, lcg);
    const quarters = [0, 0, 0, 0];
    for (let i = 0; i < 2000; i++) {
      const d = p.nextDelay(1, undefined, Infinity);
      assert.ok(d >= 0 && d < 100);
      quarters[Math.floor(d / 25)]!++;
    }
    for (const q of quarters) assert.ok(q > 350, `each quarter of the range gets its share: ${quarters.join(',')}`);
  });

  it('stops after maxAttempts tries, the first included', () => {
    const p = new RetryPolicy({ maxAttempts: 3 }, undefined, () => 0.5);
    assert.equal(p.maxAttempts, 3);
    assert.ok(p.nextDelay(1, undefined, Infinity) >= 0);
    assert.ok(p.nextDelay(2, undefined, Infinity) >= 0);
    assert.equal(p.nextDelay(3, undefined, Infinity), -1);
    assert.equal(new RetryPolicy({ maxAttempts: 1 }).nextDelay(1, undefined, Infinity), -1, 'maxAttempts 1 never retries');
    assert.equal(p.nextDelay(0, undefined, Infinity), -1, 'nonsense attempt numbers do not retry');
  });

  it('honours Retry-After as a floor', () => {
    const p = new RetryPolicy({ backoffBaseMs: 25, backoffCapMs: 1000 }, undefined, () => 0.5);
    assert.equal(p.nextDelay(1, 2000, Infinity), 2000);
    assert.equal(p.nextDelay(1, 3, Infinity), 12, 'a shorter Retry-After leaves the jittered backoff');
    assert.equal(p.nextDelay(1, 0.2, Infinity), 12);
  });

  it('gives up on a Retry-After beyond maxRetryAfterMs', () => {
    const p = new RetryPolicy({ maxRetryAfterMs: 5000 }, undefined, () => 0);
    assert.equal(p.nextDelay(1, 5000, Infinity), 5000);
    assert.equal(p.nextDelay(1, 5001, Infinity), -1);
    assert.equal(new RetryPolicy({}, undefined, () => 0).nextDelay(1, 120_000, Infinity), -1, 'default 30 s');
  });

  it('does not retry when the delay would not leave time for the try', () => {
    const p = new RetryPolicy({ backoffBaseMs: 100, backoffCapMs: 100 }, undefined, () => 0.5);
    assert.equal(p.nextDelay(1, undefined, 51), 50);
    assert.equal(p.nextDelay(1, undefined, 50), -1);
    assert.equal(p.nextDelay(1, 400, 1000), 400);
    assert.equal(p.nextDelay(1, 400, 400), -1, 'Retry-After counts against the deadline');
    assert.equal(new RetryPolicy({}, undefined, () => 0).nextDelay(1, undefined, 0), -1, 'no time left at all');
  });

  it('asks the budget last, so a retry that would not happen spends nothing', () => {
    const budget = new RetryBudget({ budgetPercent: 0, minRetriesPerSecond: 0.1, windowMs: 10_000 }, new ManualClock());
    const p = new RetryPolicy({ maxAttempts: 2 }, budget, () => 0);
    assert.equal(p.nextDelay(2, undefined, Infinity), -1);
    assert.equal(p.nextDelay(1, undefined, 0), -1);
    assert.equal(p.nextDelay(1, 60_000, Infinity), -1);
    assert.equal(budget.available, 1);
    assert.equal(p.nextDelay(1, undefined, Infinity), 0);
    assert.equal(p.nextDelay(1, undefined, Infinity), -1, 'budget refused');
  });

  it('validates its options', () => {
    assert.throws(() => new RetryPolicy({ maxAttempts: 0 }), RangeError);
    assert.throws(() => new RetryPolicy({ backoffBaseMs: 100, backoffCapMs: 50 }), RangeError);
    assert.throws(() => new RetryPolicy({ retryOn: ['9xx'] }), RangeError);
  });
});

describe('RetryPolicy statuses and methods', () => {
  it('retries 502, 503 and 504 by default, and what retryOn says otherwise', () => {
    const d = new RetryPolicy({});
    assert.deepEqual([500, 502, 503, 504, 429].map((s) => d.retryableStatus(s)), [false, true, true, true, false]);
    const c = new RetryPolicy({ retryOn: ['5xx', 429] });
    assert.deepEqual([500, 599, 429, 404].map((s) => c.retryableStatus(s)), [true, true, true, false]);
  });

  it('treats only idempotent methods or keyed requests as safe to repeat', () => {
    for (const m of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE', 'get']) assert.equal(RetryPolicy.isIdempotent(m, false), true, m);
    for (const m of ['POST', 'PATCH', 'CONNECT', 'post', 'Patch', 'PROPFIND']) assert.equal(RetryPolicy.isIdempotent(m, false), false, m);
    for (const m of ['delete', 'Put', 'options']) assert.equal(RetryPolicy.isIdempotent(m, false), true, m);
    assert.equal(RetryPolicy.isIdempotent('POST', true), true);
  });
});

describe('RetryBudget', () => {
  it('caps retries in a full outage at budgetPercent of first tries plus the floor', () => {
    const clock = new ManualClock(0);
    const budget = new RetryBudget({ budgetPercent: 20, minRetriesPerSecond: 10, windowMs: 10_000 }, clock);
    const policy = new RetryPolicy({ maxAttempts: 3 }, budget, () => 0);
    let firstTries = 0;
    let retries = 0;
    // 1000 calls over 10 s (one per 10 ms), every try fails, each call retries while the policy allows.
    for (let i = 0; i < 1000; i++) {
      budget.onRequest();
      firstTries++;
      for (let attempt = 1; policy.nextDelay(attempt, undefined, Infinity) >= 0; attempt++) retries++;
      clock.advance(10);
    }
    const cap = 0.2 * firstTries + 10 * 10;
    assert.ok(retries <= cap, `${retries} retries for ${firstTries} calls, cap ${cap}`);
    // Without a budget the same outage costs 2000 retries; the budget is spent, not just refused.
    assert.ok(retries >= cap - 2, `${retries} retries: the budget should be used up to its cap`);
  });

  it('keeps amplification bounded in a long outage, window after window', () => {
    const clock = new ManualClock(0);
    const budget = new RetryBudget({ budgetPercent: 20, minRetriesPerSecond: 10, windowMs: 10_000 }, clock);
    const policy = new RetryPolicy({ maxAttempts: 5 }, budget, () => 0);
    let retries = 0;
    const calls = 6000; // 60 s at 100 calls/s
    for (let i = 0; i < calls; i++) {
      budget.onRequest();
      for (let attempt = 1; policy.nextDelay(attempt, undefined, Infinity) >= 0; attempt++) retries++;
      clock.advance(10);
    }
    // Each of the six back-to-back 10 s windows holds at most 20% of its calls plus a window's floor.
    assert.ok(retries <= 0.2 * calls + 10 * 60, `${retries} retries for ${calls} calls`);
    assert.ok((calls + retries) / calls < 1.4, 'a callee that is down sees at most ~1.3× its load');
  });

  it('lets low-traffic callers retry through the floor', () => {
    const clock = new ManualClock(0);
    const budget = new RetryBudget({ budgetPercent: 20, minRetriesPerSecond: 1, windowMs: 5000 }, clock);
    budget.onRequest();
    for (let i = 0; i < 5; i++) assert.equal(budget.tryRetry(), true, `retry ${i + 1} of the 5-per-window floor`);
    assert.equal(budget.tryRetry(), false);
    clock.advance(5000);
    assert.equal(budget.tryRetry(), true, 'spent retries slide out with the window');
  });

  it('earns budget from first tries only', () => {
    const budget = new RetryBudget({ budgetPercent: 10, minRetriesPerSecond: 0 }, new ManualClock());
    for (let i = 0; i < 9; i++) budget.onRequest();
    assert.equal(budget.tryRetry(), false, '10% of 9 is less than one retry');
    budget.onRequest();
    assert.equal(budget.tryRetry(), true);
    assert.equal(budget.tryRetry(), false);
  });

  it('refuses every retry with no percent and no floor', () => {
    const budget = new RetryBudget({ budgetPercent: 0, minRetriesPerSecond: 0 }, new ManualClock());
    for (let i = 0; i < 100; i++) budget.onRequest();
    assert.equal(budget.tryRetry(), false);
  });

  it('counts at the clock reading the caller passes, when it passes one', () => {
    const budget = new RetryBudget({ budgetPercent: 100, minRetriesPerSecond: 0, windowMs: 10_000 }, new ManualClock(0));
    budget.onRequest(0);
    assert.equal(budget.tryRetry(20_000), false, 'at 20 s the first try has left the window, although the clock says 0');
    assert.equal(budget.tryRetry(), false, 'and the window does not go back');
    budget.onRequest(20_000);
    const policy = new RetryPolicy({ maxAttempts: 3 }, budget, () => 0);
    assert.equal(policy.nextDelay(1, undefined, Infinity, 20_000), 0, 'nextDelay hands its reading to the budget');
    assert.equal(policy.nextDelay(1, undefined, Infinity, 20_000), -1);
  });

  it('validates its options', () => {
    assert.throws(() => new RetryBudget({ budgetPercent: -1 }), RangeError);
    assert.throws(() => new RetryBudget({ windowMs: 0 }), RangeError);
  });
});

describe('retryOptionsOf', () => {
  it('maps a validated strategy', () => {
    const s = RetryStrategy.parse({ type: 'retry', maxAttempts: 4, retryOn: ['5xx'] });
    assert.deepEqual(retryOptionsOf(s), { maxAttempts: 4, backoffBaseMs: 25, backoffCapMs: 1000, retryOn: ['5xx'] });
    assert.deepEqual(retryBudgetOptionsOf(s), { budgetPercent: 20, minRetriesPerSecond: 10 });
  });
});

describe('parseRetryAfter', () => {
  const now = Date.UTC(2025, 0, 15, 12, 0, 0);

  it('reads delta-seconds', () => {
    assert.equal(parseRetryAfter('120', now), 120_000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('99999999999999999999999', now), Number.MAX_SAFE_INTEGER);
  });

  it('reads the three HTTP-date forms, in UTC', () => {
    assert.equal(parseRetryAfter('Wed, 15 Jan 2025 12:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Wednesday, 15-Jan-25 12:01:00 GMT', now), 60_000);
    assert.equal(parseRetryAfter('Wed Jan 15 12:00:05 2025', now), 5000);
    assert.equal(parseRetryAfter('Sat Feb  1 12:00:00 2025', now), 17 * 86_400_000);
  });

  it('reads a past date as 0', () => {
    assert.equal(parseRetryAfter('Tue, 14 Jan 2025 12:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('Sunday, 06-Nov-94 08:49:37 GMT', now), 0, 'a two-digit year far ahead means the last century');
  });

  it('rejects what is neither', () => {
    for (const v of [undefined, '', '-1', '1.5', '1e3', '0x10', 'soon', 'Wed, 15 Jan 2025 12:00:30 UTC', 'Wed, 30 Feb 2025 12:00:00 GMT', 'Wed, 15 Jan 2025 25:00:00 GMT', 'Wed, 5 Jan 2025 12:00:00 GMT']) {
      assert.equal(parseRetryAfter(v, now), undefined, JSON.stringify(v));
    }
  });
});
