import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../ratelimit/clock.js';
import { Bulkhead } from './bulkhead.js';
import { TimerWheel } from './timer-wheel.js';

function fixture(opts: { maxConcurrency: number; maxQueue?: number; queueTimeoutMs?: number }) {
  const clock = new ManualClock(0);
  // The wheel's real timer is never armed: tests move time and call advance() themselves.
  const wheel = new TimerWheel({ tickMs: 5, clock, schedule: () => ({}) });
  const bulkhead = new Bulkhead(opts, wheel);
  const elapse = (ms: number): void => {
    clock.advance(ms);
    wheel.advance();
  };
  return { clock, wheel, bulkhead, elapse };
}

/** Settles pending promise callbacks. */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Records when an acquire settles, and with what. */
function track(result: true | Promise<boolean>, log: string[], name: string): void {
  if (result === true) log.push(`${name}:now`);
  else void result.then((ok) => log.push(`${name}:${ok}`));
}

describe('Bulkhead without a queue', () => {
  it('admits up to maxConcurrency and refuses the rest at once', async () => {
    const { bulkhead } = fixture({ maxConcurrency: 2 });
    assert.equal(bulkhead.tryAcquire(), true);
    assert.equal(bulkhead.acquire(), true);
    assert.equal(bulkhead.tryAcquire(), false);
    const third = bulkhead.acquire();
    assert.notEqual(third, true);
    assert.equal(await third, false, 'maxQueue defaults to 0');
    assert.equal(bulkhead.inFlight, 2);
    bulkhead.release();
    assert.equal(bulkhead.inFlight, 1);
    assert.equal(bulkhead.tryAcquire(), true);
  });

  it('never goes below zero on an extra release', () => {
    const { bulkhead } = fixture({ maxConcurrency: 1 });
    bulkhead.release();
    assert.equal(bulkhead.inFlight, 0);
    assert.equal(bulkhead.tryAcquire(), true);
    assert.equal(bulkhead.tryAcquire(), false, 'the extra release did not widen the bulkhead');
  });
});

describe('Bulkhead queue', () => {
  it('queues up to maxQueue and refuses beyond', async () => {
    const { bulkhead } = fixture({ maxConcurrency: 1, maxQueue: 2 });
    const log: string[] = [];
    track(bulkhead.acquire(), log, 'a');
    track(bulkhead.acquire(), log, 'b');
    track(bulkhead.acquire(), log, 'c');
    track(bulkhead.acquire(), log, 'd');
    await flush();
    assert.deepEqual(log, ['a:now', 'd:false']);
    assert.equal(bulkhead.queued, 2);
    assert.equal(bulkhead.inFlight, 1);
  });

  it('hands a released slot to the oldest waiter, ahead of newcomers', async () => {
    const { bulkhead } = fixture({ maxConcurrency: 1, maxQueue: 3 });
    const log: string[] = [];
    track(bulkhead.acquire(), log, 'a');
    track(bulkhead.acquire(), log, 'b');
    track(bulkhead.acquire(), log, 'c');
    bulkhead.release();
    assert.equal(bulkhead.inFlight, 1, 'the slot passed from a to b without ever being free');
    assert.equal(bulkhead.tryAcquire(), false, 'a newcomer cannot overtake c');
    await flush();
    assert.deepEqual(log, ['a:now', 'b:true']);
    bulkhead.release();
    await flush();
    assert.deepEqual(log, ['a:now', 'b:true', 'c:true']);
    assert.equal(bulkhead.queued, 0);
    bulkhead.release();
    assert.equal(bulkhead.inFlight, 0);
  });

  it('gives up on a waiter after queueTimeoutMs', async () => {
    const { bulkhead, elapse, wheel } = fixture({ maxConcurrency: 1, maxQueue: 5, queueTimeoutMs: 200 });
    const log: string[] = [];
    track(bulkhead.acquire(), log, 'a');
    track(bulkhead.acquire(), log, 'b');
    elapse(100);
    track(bulkhead.acquire(), log, 'c');
    elapse(99);
    await flush();
    assert.deepEqual(log, ['a:now']);
    elapse(6); // 205: b's 200 ms are up (within a wheel tick), c has waited 105
    await flush();
    assert.deepEqual(log, ['a:now', 'b:false']);
    assert.equal(bulkhead.queued, 1);
    bulkhead.release();
    await flush();
    assert.deepEqual(log, ['a:now', 'b:false', 'c:true']);
    assert.equal(wheel.size, 0, 'the granted waiter cancelled its timeout');
  });

  it('drops a waiter whose signal aborts', async () => {
    const { bulkhead, wheel } = fixture({ maxConcurrency: 1, maxQueue: 5 });
    assert.equal(bulkhead.acquire(), true);
    const ac = new AbortController();
    const log: string[] = [];
    track(bulkhead.acquire(ac.signal), log, 'b');
    track(bulkhead.acquire(), log, 'c');
    ac.abort();
    await flush();
    assert.deepEqual(log, ['b:false']);
    assert.equal(bulkhead.queued, 1);
    assert.equal(wheel.size, 1);
    bulkhead.release();
    await flush();
    assert.deepEqual(log, ['b:false', 'c:true']);
    assert.equal(await bulkhead.acquire(ac.signal), false, 'an aborted signal does not queue');
  });
});

describe('Bulkhead.reconfigure', () => {
  it('admits waiters at once when maxConcurrency grows', async () => {
    const { bulkhead } = fixture({ maxConcurrency: 1, maxQueue: 5 });
    const log: string[] = [];
    for (const n of ['a', 'b', 'c', 'd']) track(bulkhead.acquire(), log, n);
    bulkhead.reconfigure({ maxConcurrency: 3, maxQueue: 5 });
    await flush();
    assert.deepEqual(log, ['a:now', 'b:true', 'c:true']);
    assert.equal(bulkhead.inFlight, 3);
    assert.equal(bulkhead.queued, 1);
  });

  it('sheds nothing in flight when maxConcurrency shrinks', () => {
    const { bulkhead } = fixture({ maxConcurrency: 3 });
    for (let i = 0; i < 3; i++) assert.equal(bulkhead.tryAcquire(), true);
    bulkhead.reconfigure({ maxConcurrency: 1 });
    assert.equal(bulkhead.inFlight, 3);
    bulkhead.release();
    bulkhead.release();
    assert.equal(bulkhead.tryAcquire(), false, 'still at the new limit');
    bulkhead.release();
    assert.equal(bulkhead.tryAcquire(), true);
  });

  it('applies a new queue size to newcomers and keeps who already waits', async () => {
    const { bulkhead } = fixture({ maxConcurrency: 1, maxQueue: 2 });
    const log: string[] = [];
    for (const n of ['a', 'b', 'c']) track(bulkhead.acquire(), log, n);
    bulkhead.reconfigure({ maxConcurrency: 1, maxQueue: 0 });
    track(bulkhead.acquire(), log, 'd');
    await flush();
    assert.deepEqual(log, ['a:now', 'd:false']);
    assert.equal(bulkhead.queued, 2);
  });

  it('rejects invalid options and keeps the old ones', () => {
    const { bulkhead } = fixture({ maxConcurrency: 2 });
    assert.throws(() => bulkhead.reconfigure({ maxConcurrency: 0 }), RangeError);
    assert.throws(() => bulkhead.reconfigure({ maxConcurrency: 2, maxQueue: -1 }), RangeError);
    assert.throws(() => new Bulkhead({ maxConcurrency: 1, queueTimeoutMs: 0 }), RangeError);
    assert.equal(bulkhead.maxConcurrency, 2);
  });
});
