import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from './clock.js';
import { PacingLimiter, REJECTED, TokenBucket, WarmUpLimiter, createRateLimiter, type RateLimiter } from './token-bucket.js';

/** Offers `offered` requests spread evenly over one second and counts those admitted. */
function admittedInOneSecond(l: RateLimiter, clock: ManualClock, offered = 1000): number {
  let n = 0;
  const step = 1000 / offered;
  for (let i = 0; i < offered; i++) {
    if (l.tryAcquire() === 0) n++;
    clock.advance(step);
  }
  return n;
}

function drain(l: RateLimiter): number {
  let n = 0;
  while (l.tryAcquire() === 0) n++;
  return n;
}

describe('TokenBucket', () => {
  it('starts full, admits its burst at once, then refuses', () => {
    const clock = new ManualClock(5_000);
    const b = new TokenBucket({ rate: 10, burst: 5 }, clock);
    assert.equal(b.remaining(), 5);
    assert.equal(drain(b), 5);
    assert.equal(b.tryAcquire(), REJECTED);
    assert.equal(b.remaining(), 0);
  });

  it('refills continuously at rate and never beyond the burst', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ rate: 10, burst: 5 }, clock);
    drain(b);
    clock.advance(99);
    assert.equal(b.tryAcquire(), REJECTED, 'a token takes 100 ms at 10/s');
    clock.advance(1);
    assert.equal(b.tryAcquire(), 0);
    assert.equal(b.tryAcquire(), REJECTED);
    clock.advance(60_000);
    assert.equal(b.remaining(), 5, 'a long idle period refills to the burst, not beyond');
    assert.equal(drain(b), 5);
  });

  it('cannot be doubled across a window edge: at most burst + rate·t in any span t', () => {
    const clock = new ManualClock(999);
    const b = new TokenBucket({ rate: 100, burst: 100 }, clock);
    assert.equal(drain(b), 100);
    clock.advance(2); // across the second boundary a fixed window would reset here
    assert.equal(drain(b), 0);
    clock.advance(998);
    assert.equal(drain(b), 100);
  });

  it('answers retryAfterMs from the deficit, and Infinity above the burst', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ rate: 10, burst: 5 }, clock);
    assert.equal(b.retryAfterMs(), 0);
    drain(b);
    assert.equal(b.retryAfterMs(), 100);
    assert.equal(b.retryAfterMs(3), 300);
    clock.advance(40);
    assert.equal(b.retryAfterMs(), 60);
    assert.equal(b.retryAfterMs(6), Infinity);
    assert.equal(b.tryAcquire(6), REJECTED);
  });

  it('reports remaining as whole tokens and resetMs as the time to full', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ rate: 4, burst: 8 }, clock);
    assert.equal(b.resetMs(), 0);
    assert.equal(b.tryAcquire(3), 0);
    assert.equal(b.remaining(), 5);
    assert.equal(b.resetMs(), 750);
    clock.advance(125); // half a token back
    assert.equal(b.remaining(), 5);
    assert.equal(b.resetMs(), 625);
    assert.equal(b.quota, 8);
    assert.equal(b.windowSeconds, 2);
  });

  it('rejects negative and NaN permits instead of minting tokens', () => {
    const b = new TokenBucket({ rate: 1, burst: 1 }, new ManualClock());
    assert.throws(() => b.tryAcquire(-5), RangeError);
    assert.throws(() => b.tryAcquire(Number.NaN), RangeError);
    assert.equal(b.tryAcquire(0), 0);
    assert.equal(b.remaining(), 1);
  });
});

describe('createRateLimiter', () => {
  it('builds the limiter for each governance behavior', () => {
    const clock = new ManualClock();
    assert.ok(createRateLimiter({ rate: 10 }, clock) instanceof TokenBucket);
    assert.ok(createRateLimiter({ rate: 10, behavior: 'warmUp' }, clock) instanceof WarmUpLimiter);
    assert.ok(createRateLimiter({ rate: 10, behavior: 'throttle' }, clock) instanceof PacingLimiter);
  });

  it('defaults the burst to one second of traffic, and to at least one permit', () => {
    const clock = new ManualClock();
    assert.equal(drain(createRateLimiter({ rate: 20 }, clock)), 20);
    const slow = createRateLimiter({ rate: 0.5 }, clock);
    assert.equal(slow.tryAcquire(), 0, 'a rate under 1/s still admits a first request');
    assert.equal(slow.tryAcquire(), REJECTED);
    assert.equal(slow.retryAfterMs(), 2000);
  });
});

describe('WarmUpLimiter (Sentinel WarmUpController)', () => {
  it("computes Sentinel's thresholds: rate 10, 10 s, coldFactor 3 gives warning 50, max 100", () => {
    const l = new WarmUpLimiter({ rate: 10, warmUpPeriodSec: 10, coldFactor: 3 }, new ManualClock());
    assert.equal(l.warningToken, 50);
    assert.equal(l.maxToken, 100);
    assert.equal(l.slope, 0.004);
    assert.ok(Math.abs(l.currentQps() - 10 / 3) < 1e-9, 'cold: rate / coldFactor');
  });

  it('starts cold at rate / coldFactor and reaches rate after about warmUpPeriodSec under full load', () => {
    const clock = new ManualClock();
    const l = new WarmUpLimiter({ rate: 100, warmUpPeriodSec: 10, coldFactor: 3 }, clock);
    const perSecond: number[] = [];
    for (let s = 0; s < 16; s++) perSecond.push(admittedInOneSecond(l, clock));
    assert.equal(perSecond[0], 33, 'first second: 100 / 3');
    for (let s = 1; s < perSecond.length; s++) {
      assert.ok(perSecond[s]! >= perSecond[s - 1]!, `the ramp never goes down: ${perSecond.join(' ')}`);
      assert.ok(perSecond[s]! <= 100, 'never above rate');
    }
    const firstFull = perSecond.indexOf(100);
    // Guava's and Sentinel's math make the ramp take exactly the period; a pass count only feeds the next
    // second's sync, hence up to a second more.
    assert.ok(firstFull >= 10 && firstFull <= 11, `full rate reached at second ${firstFull}: ${perSecond.join(' ')}`);
    assert.ok(perSecond[5]! > 33 && perSecond[5]! < 100, 'halfway it is in between');
    assert.deepEqual(perSecond.slice(firstFull), perSecond.slice(firstFull).map(() => 100), 'and stays there');
  });

  it('cools partly in a short pause, rewarms faster than from cold, and is cold again after a long quiet', () => {
    const clock = new ManualClock();
    const l = new WarmUpLimiter({ rate: 100, warmUpPeriodSec: 10, coldFactor: 3 }, clock);
    for (let s = 0; s < 15; s++) admittedInOneSecond(l, clock);
    assert.equal(admittedInOneSecond(l, clock), 100);
    // Warm under full load, Sentinel's bucket hovers just under the warning line (refilled at rate, drained at
    // rate), so idle seconds push it back above: a pause costs some warmth, not all of it.
    clock.advance(2_000);
    const afterPause = admittedInOneSecond(l, clock);
    assert.ok(afterPause > 33 && afterPause < 100, `after 2 s idle: ${afterPause}`);
    let seconds = 1;
    while (admittedInOneSecond(l, clock) < 100) seconds++;
    assert.ok(seconds < 10, `back to full rate in ${seconds} s, sooner than a cold start`);
    // From the warning line to maxToken (1000) idle time refills at rate: under 10 s at 100/s.
    clock.advance(12_000);
    assert.equal(admittedInOneSecond(l, clock), 33, 'cold again');
  });

  it('keeps cooling while traffic stays under rate / coldFactor, as Sentinel does', () => {
    const clock = new ManualClock();
    const l = new WarmUpLimiter({ rate: 100, warmUpPeriodSec: 10, coldFactor: 3 }, clock);
    for (let s = 0; s < 15; s++) admittedInOneSecond(l, clock);
    for (let s = 0; s < 15; s++) admittedInOneSecond(l, clock, 20); // a trickle of 20/s < 33/s
    assert.ok(l.currentQps() < 40, `a trickle does not keep it warm: ${l.currentQps()}`);
  });

  it('refuses, reports and resets per second', () => {
    const clock = new ManualClock(250);
    const l = new WarmUpLimiter({ rate: 10, warmUpPeriodSec: 10, coldFactor: 3 }, clock);
    assert.equal(l.remaining(), 3);
    assert.equal(drain(l), 3);
    assert.equal(l.remaining(), 0);
    assert.equal(l.retryAfterMs(), 750, 'the next chance is the next second');
    assert.equal(l.resetMs(), 750);
    assert.equal(l.retryAfterMs(11), Infinity, 'more than rate can never pass');
    clock.advance(750);
    assert.equal(l.tryAcquire(), 0);
    assert.throws(() => l.tryAcquire(-1), RangeError);
  });

  it('refuses a period too short to ramp over', () => {
    assert.throws(() => new WarmUpLimiter({ rate: 1, warmUpPeriodSec: 1, coldFactor: 3 }, new ManualClock()), RangeError);
    assert.throws(() => new WarmUpLimiter({ rate: 10, warmUpPeriodSec: 10, coldFactor: 1 }, new ManualClock()), RangeError);
  });
});

describe('PacingLimiter (Sentinel RateLimiterController, throttle)', () => {
  it('spaces simultaneous requests one interval apart and refuses past maxQueueingTimeMs', () => {
    const clock = new ManualClock(1_000);
    const l = new PacingLimiter({ rate: 10, maxQueueingTimeMs: 500 }, clock);
    const waits: number[] = [];
    for (let i = 0; i < 8; i++) waits.push(l.tryAcquire());
    assert.deepEqual(waits, [0, 100, 200, 300, 400, 500, REJECTED, REJECTED]);
  });

  it('admits at once when requests arrive no faster than the rate', () => {
    const clock = new ManualClock();
    const l = new PacingLimiter({ rate: 10, maxQueueingTimeMs: 0 }, clock);
    for (let i = 0; i < 20; i++) {
      assert.equal(l.tryAcquire(), 0);
      assert.equal(l.tryAcquire(), REJECTED, 'no queue: the second in the same interval is refused');
      clock.advance(100);
    }
  });

  it('drains the queue as time passes and keeps the spacing for later arrivals', () => {
    const clock = new ManualClock();
    const l = new PacingLimiter({ rate: 10, maxQueueingTimeMs: 500 }, clock);
    for (let i = 0; i < 6; i++) l.tryAcquire(); // turns at 0..500
    clock.advance(250);
    assert.equal(l.tryAcquire(), 350, 'next turn is 600, 350 ms from now');
    assert.equal(l.tryAcquire(), 450);
    assert.equal(l.tryAcquire(), REJECTED, 'turn 800 is 550 ms away');
  });

  it('keeps a fractional interval instead of rounding it (1500/s is not paced as 1000/s)', () => {
    const clock = new ManualClock();
    const l = new PacingLimiter({ rate: 1500, maxQueueingTimeMs: 1000 }, clock);
    let admitted = 0;
    while (l.tryAcquire() !== REJECTED) admitted++;
    assert.equal(admitted, 1501, 'one now plus 1500 turns within the next second');
  });

  it('reports remaining, retryAfterMs and resetMs from the queue', () => {
    const clock = new ManualClock();
    const l = new PacingLimiter({ rate: 10, maxQueueingTimeMs: 500 }, clock);
    assert.equal(l.quota, 6);
    assert.equal(l.remaining(), 6);
    assert.equal(l.resetMs(), 0);
    l.tryAcquire();
    l.tryAcquire();
    assert.equal(l.remaining(), 4);
    assert.equal(l.retryAfterMs(), 0, 'a wait within the queue limit is not a refusal');
    while (l.tryAcquire() !== REJECTED);
    assert.equal(l.remaining(), 0);
    assert.equal(l.retryAfterMs(), 100);
    assert.equal(l.resetMs(), 600, 'last turn at 500, plus one interval');
    clock.advance(600);
    assert.equal(l.remaining(), 6);
    assert.equal(l.resetMs(), 0);
  });
});
