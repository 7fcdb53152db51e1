import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from './clock.js';
import { quotaHeaders, rateLimitHeaders, retryAfterSeconds } from './headers.js';
import { PacingLimiter, TokenBucket, WarmUpLimiter } from './token-bucket.js';

describe('retryAfterSeconds', () => {
  it('rounds up to whole seconds, so a client never retries too early', () => {
    assert.equal(retryAfterSeconds(0), '0');
    assert.equal(retryAfterSeconds(-5), '0');
    assert.equal(retryAfterSeconds(1), '1');
    assert.equal(retryAfterSeconds(1000), '1');
    assert.equal(retryAfterSeconds(1001), '2');
    assert.throws(() => retryAfterSeconds(Infinity), RangeError);
    assert.throws(() => retryAfterSeconds(Number.NaN), RangeError);
  });
});

describe('rateLimitHeaders', () => {
  it('advertises a token bucket as quota per window and what is left, in structured-field form', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ rate: 100, burst: 100 }, clock);
    for (let i = 0; i < 58; i++) b.tryAcquire();
    assert.deepEqual(rateLimitHeaders(b), {
      'RateLimit-Policy': '"default";q=100;w=1',
      RateLimit: '"default";r=42;t=1',
    });
  });

  it('adds Retry-After once the next request would be refused', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ rate: 0.5, burst: 2 }, clock);
    b.tryAcquire(2);
    clock.advance(500);
    assert.deepEqual(rateLimitHeaders(b, 'per-tenant'), {
      'RateLimit-Policy': '"per-tenant";q=2;w=4',
      RateLimit: '"per-tenant";r=0;t=4',
      'Retry-After': '2',
    });
  });

  it('widens a sub-second window to one second with the quota scaled, keeping q / w the steady rate', () => {
    const clock = new ManualClock();
    assert.equal(rateLimitHeaders(new TokenBucket({ rate: 100, burst: 5 }, clock))['RateLimit-Policy'], '"default";q=100;w=1');
    assert.equal(rateLimitHeaders(new TokenBucket({ rate: 3, burst: 10 }, clock))['RateLimit-Policy'], '"default";q=12;w=4');
    const pacing = new PacingLimiter({ rate: 10, maxQueueingTimeMs: 500 }, clock);
    assert.deepEqual(rateLimitHeaders(pacing), { 'RateLimit-Policy': '"default";q=10;w=1', RateLimit: '"default";r=6;t=0' });
    const warm = new WarmUpLimiter({ rate: 10, warmUpPeriodSec: 10, coldFactor: 3 }, clock);
    assert.equal(rateLimitHeaders(warm).RateLimit, '"default";r=3;t=1', 'cold: a third of the rate this second');
  });

  it('escapes the policy name as a structured-field String and refuses what it cannot carry', () => {
    const b = new TokenBucket({ rate: 1, burst: 1 }, new ManualClock());
    assert.equal(rateLimitHeaders(b, 'a "b" \\c').RateLimit, '"a \\"b\\" \\\\c";r=1;t=0');
    assert.throws(() => rateLimitHeaders(b, 'naïve'), RangeError);
    assert.throws(() => rateLimitHeaders(b, 'x\r\nSet-Cookie: a=b'), RangeError);
  });
});

describe('quotaHeaders', () => {
  it('builds the fields from a cluster quota decision', () => {
    const ok = quotaHeaders({ allowed: true, retryAfterMs: 0, remaining: 40, source: 'redis' }, 100, 1, 'orders');
    assert.deepEqual(ok, { 'RateLimit-Policy': '"orders";q=100;w=1', RateLimit: '"orders";r=40;t=1' });
    const refused = quotaHeaders({ allowed: false, retryAfterMs: 2500, remaining: 0, source: 'redis' }, 10, 10);
    assert.deepEqual(refused, { 'RateLimit-Policy': '"default";q=10;w=10', RateLimit: '"default";r=0;t=10', 'Retry-After': '3' });
  });

  it('omits Retry-After when no retry can pass, and validates the policy', () => {
    const never = quotaHeaders({ allowed: false, retryAfterMs: Infinity, remaining: 0, source: 'redis' }, 5, 1);
    assert.equal(never['Retry-After'], undefined);
    assert.equal(never.RateLimit, '"default";r=0;t=1');
    assert.throws(() => quotaHeaders({ allowed: true, retryAfterMs: 0, remaining: 1, source: 'allow' }, 0, 1), RangeError);
    assert.throws(() => quotaHeaders({ allowed: true, retryAfterMs: 0, remaining: 1, source: 'allow' }, 1, 0), RangeError);
  });
});
