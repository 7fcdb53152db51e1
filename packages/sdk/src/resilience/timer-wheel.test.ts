import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../ratelimit/clock.js';
import { TimerWheel, type Expirable } from './timer-wheel.js';

interface FakeTimer {
  fn: () => void;
  ms: number;
  referenced: boolean;
  unref(): void;
  ref(): void;
}

/** A wheel on a ManualClock whose one real timer is recorded instead of armed. */
function fixture(tickMs = 5, start = 0) {
  const clock = new ManualClock(start);
  const timers: FakeTimer[] = [];
  const wheel = new TimerWheel({
    tickMs,
    clock,
    schedule: (fn, ms) => {
      const t: FakeTimer = {
        fn,
        ms,
        referenced: true,
        unref: () => void (t.referenced = false),
        ref: () => void (t.referenced = true),
      };
      timers.push(t);
      return t;
    },
  });
  const fired: string[] = [];
  const entry = (name: string): Expirable => ({ onExpire: () => void fired.push(name) });
  let ran = 0;
  /** Moves the clock and runs the armed timer (if one is armed and has not run), as the event loop would. */
  const run = (ms: number): void => {
    clock.advance(ms);
    const t = timers.at(-1);
    if (t && timers.length > ran) {
      ran = timers.length;
      t.fn();
    }
  };
  return { clock, timers, wheel, fired, entry, run };
}

describe('TimerWheel firing', () => {
  it('takes the clock reading a caller passes to add, as its own read would be', () => {
    const { clock, wheel, fired, entry, run } = fixture(5, 0);
    clock.set(3_600_000); // an idle hour: nothing to walk through
    wheel.add(3_600_012, entry('a'), 3_600_000);
    run(10);
    assert.deepEqual(fired, []);
    run(5);
    assert.deepEqual(fired, ['a']);
  });

  it('fires no earlier than `at` and at most a tick late', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    wheel.add(12, entry('a'));
    clock.set(11.9);
    wheel.advance();
    clock.set(14.9);
    wheel.advance();
    assert.deepEqual(fired, [], 'not before its time, nor before the tick that covers it');
    clock.set(15);
    wheel.advance();
    assert.deepEqual(fired, ['a']);
    assert.equal(wheel.size, 0);
  });

  it('fires on a tick boundary exactly at `at` when `at` is one', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    wheel.add(10, entry('a'));
    clock.set(9.99);
    wheel.advance();
    assert.deepEqual(fired, []);
    clock.set(10);
    wheel.advance();
    assert.deepEqual(fired, ['a']);
  });

  it('fires in deadline order, then insertion order within a tick', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    wheel.add(40, entry('d'));
    wheel.add(7, entry('b1'));
    wheel.add(6, entry('b2'));
    wheel.add(3, entry('a'));
    wheel.add(22, entry('c'));
    clock.set(100);
    wheel.advance();
    assert.deepEqual(fired, ['a', 'b1', 'b2', 'c', 'd']);
  });

  it('keeps the order after a stall longer than a turn of the wheel', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    // 512 slots × 5 ms: these land in every part of the wheel and some on later turns.
    const ats = [5000, 2, 2600, 2559, 7, 12_000, 2561];
    for (const at of ats) wheel.add(at, entry(String(at)));
    clock.set(4000);
    wheel.advance();
    assert.deepEqual(fired, ['2', '7', '2559', '2561', '2600']);
    clock.set(20_000);
    wheel.advance();
    assert.deepEqual(fired.slice(5), ['5000', '12000']);
  });

  it('holds entries beyond one turn until their own turn', () => {
    const { wheel, fired, entry, run } = fixture(5);
    wheel.add(10_000, entry('late'));
    wheel.add(10, entry('early'));
    for (let t = 0; t < 9995; t += 5) run(5);
    assert.deepEqual(fired, ['early'], 'the long entry shares a slot with earlier turns but waits for its own');
    run(5);
    assert.deepEqual(fired, ['early', 'late']);
  });

  it('fires an entry whose time already passed on the next tick, not inside add', () => {
    const { clock, wheel, fired, entry } = fixture(5, 1000);
    wheel.add(500, entry('past'));
    assert.deepEqual(fired, []);
    clock.advance(5);
    wheel.advance();
    assert.deepEqual(fired, ['past']);
  });

  it('grows past its initial slab and reuses freed entries', () => {
    const { clock, wheel } = fixture(1);
    const count = { n: 0 };
    const e: Expirable = { onExpire: () => void count.n++ };
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 1000; i++) wheel.add(clock.now() + 1 + (i % 50), e);
      assert.equal(wheel.size, 1000);
      clock.advance(60);
      wheel.advance();
      assert.equal(wheel.size, 0);
    }
    assert.equal(count.n, 3000);
  });
});

describe('TimerWheel remove and size', () => {
  it('cancels an entry in O(1) and counts what is pending', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    const a = entry('a');
    const b = entry('b');
    const ta = wheel.add(10, a);
    wheel.add(10, b);
    assert.equal(wheel.size, 2);
    wheel.remove(ta, a);
    assert.equal(wheel.size, 1);
    clock.set(10);
    wheel.advance();
    assert.deepEqual(fired, ['b']);
  });

  it('ignores a fired or already removed token, even when its entry slot was reused', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    const a = entry('a');
    const t1 = wheel.add(5, a);
    clock.set(5);
    wheel.advance();
    assert.deepEqual(fired, ['a']);
    wheel.remove(t1, a); // fired: no-op
    const t2 = wheel.add(20, a); // same target, probably the same slab entry
    wheel.remove(t1, a); // stale token must not cancel the new entry
    wheel.remove(t2, entry('other')); // right token, wrong target
    wheel.remove(-1, a);
    wheel.remove(1.5, a);
    assert.equal(wheel.size, 1);
    wheel.remove(t2, a);
    wheel.remove(t2, a);
    assert.equal(wheel.size, 0);
  });

  it('skips an entry that an earlier callback of the same tick removed', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    const victim = entry('victim');
    let token = -1;
    wheel.add(5, { onExpire: () => (fired.push('killer'), wheel.remove(token, victim)) });
    token = wheel.add(5, victim);
    clock.set(5);
    wheel.advance();
    assert.deepEqual(fired, ['killer']);
    assert.equal(wheel.size, 0);
  });

  it('lets a callback schedule more work: a time already past fires on the next tick', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    wheel.add(5, { onExpire: () => (fired.push('first'), wheel.add(clock.now() - 1, entry('again'))) });
    clock.set(5);
    wheel.advance();
    assert.deepEqual(fired, ['first']);
    clock.set(10);
    wheel.advance();
    assert.deepEqual(fired, ['first', 'again']);
  });

  it('fires work a callback schedules within the same catch-up when it is due by then', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    wheel.add(5, { onExpire: () => (fired.push('first'), wheel.add(12, entry('retry'))) });
    wheel.add(20, entry('later'));
    clock.set(50); // the loop was blocked: ticks 1..10 are caught up in one advance
    wheel.advance();
    assert.deepEqual(fired, ['first', 'retry', 'later']);
  });

  it('fires every due entry even when one throws, then rethrows the first error', () => {
    const { clock, wheel, fired, entry } = fixture(5);
    wheel.add(5, {
      onExpire: () => {
        throw new Error('boom');
      },
    });
    wheel.add(5, entry('after'));
    clock.set(5);
    assert.throws(() => wheel.advance(), /boom/);
    assert.deepEqual(fired, ['after']);
    assert.equal(wheel.size, 0);
  });

  it('rejects a deadline that can never come', () => {
    const { wheel, entry } = fixture();
    assert.throws(() => wheel.add(Infinity, entry('x')), RangeError);
    assert.throws(() => wheel.add(NaN, entry('x')), RangeError);
    assert.equal(wheel.size, 0);
  });
});

describe('TimerWheel timer', () => {
  it('arms no timer while empty, one unref’d timer while entries exist, none after', () => {
    const { wheel, timers, entry, run } = fixture(5);
    assert.equal(timers.length, 0);
    wheel.add(12, entry('a'));
    wheel.add(14, entry('b'));
    assert.equal(timers.length, 1, 'one timer for any number of entries');
    assert.equal(timers[0]!.referenced, false, 'a pending timeout alone does not keep the process alive');
    assert.ok(timers[0]!.ms >= 1 && timers[0]!.ms <= 5);
    run(5);
    assert.equal(timers.length, 2, 're-armed while entries remain');
    run(5);
    run(5);
    assert.equal(wheel.size, 0);
    const armed = timers.length;
    run(5);
    assert.equal(timers.length, armed, 'no timer once empty');
  });

  it('lets the last armed timer lapse after the last remove', () => {
    const { wheel, timers, entry, run } = fixture(5);
    const a = entry('a');
    const t = wheel.add(1000, a);
    wheel.remove(t, a);
    assert.equal(timers.length, 1);
    run(5);
    assert.equal(timers.length, 1);
    assert.equal(wheel.size, 0);
  });

  it('wakes just after the next tick boundary', () => {
    const { wheel, timers, entry } = fixture(5, 1002);
    wheel.add(1100, entry('a'));
    assert.equal(timers[0]!.ms, 3);
  });
});

describe('TimerWheel.delay', () => {
  it('resolves after the delay and keeps the process alive meanwhile', async () => {
    const { wheel, timers, run } = fixture(5);
    let done = false;
    const p = wheel.delay(10).then(() => (done = true));
    assert.equal(timers[0]!.referenced, true, 'a backoff sleep is unfinished work');
    run(5);
    await Promise.resolve();
    assert.equal(done, false);
    assert.equal(timers.at(-1)!.referenced, true);
    run(5);
    await p;
    assert.equal(done, true);
    assert.equal(wheel.size, 0);
  });

  it('drops the reference once the last sleep ends', async () => {
    const { wheel, timers, entry, run } = fixture(5);
    wheel.add(100, entry('timeout'));
    assert.equal(timers[0]!.referenced, false);
    const p = wheel.delay(5);
    assert.equal(timers[0]!.referenced, true);
    run(5);
    await p;
    assert.equal(timers.at(-1)!.referenced, false, 'only the timeout is left');
  });

  it('rejects with the abort reason and frees its entry', async () => {
    const { wheel } = fixture(5);
    const ac = new AbortController();
    const p = wheel.delay(1000, ac.signal);
    assert.equal(wheel.size, 1);
    ac.abort(new Error('caller gave up'));
    await assert.rejects(p, /caller gave up/);
    assert.equal(wheel.size, 0);
    await assert.rejects(wheel.delay(10, ac.signal), /caller gave up/, 'an aborted signal rejects at once');
    assert.equal(wheel.size, 0);
  });

  it('resolves at once for no delay', async () => {
    const { wheel, timers } = fixture(5);
    await wheel.delay(0);
    await wheel.delay(-5);
    assert.equal(timers.length, 0);
  });
});
