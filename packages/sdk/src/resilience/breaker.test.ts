import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CircuitBreakerStrategy } from '@plinth/core';
import { ManualClock } from '../ratelimit/clock.js';
import { breakerOptionsOf, CircuitBreaker, statusClassifier, type BreakerOptions, type BreakerState } from './breaker.js';

/** One acquired call with an outcome; fails the test when the breaker refused it. */
function call(b: CircuitBreaker, ok: boolean, latencyMs = 1): void {
  assert.equal(b.tryAcquire(), true, `expected the breaker (${b.state.kind}) to let the call through`);
  if (ok) b.onSuccess(latencyMs);
  else b.onFailure(latencyMs);
}

/** Read through a function: assert.equal's narrowing would otherwise make a later `b.state.kind` check `never`. */
function kindOf(b: CircuitBreaker): BreakerState['kind'] {
  return b.state.kind;
}

function repeat(n: number, f: () => void): void {
  for (let i = 0; i < n; i++) f();
}

function kinds(b: CircuitBreaker): string[] {
  const seen: string[] = [];
  b.onStateChange((from, to) => seen.push(`${from.kind}->${to.kind}`));
  return seen;
}

describe('errorRatio', () => {
  it('opens when failures reach the threshold share of at least minRequestAmount calls', () => {
    const clock = new ManualClock(1000);
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 10 }, clock);
    repeat(5, () => call(b, true));
    repeat(4, () => call(b, false));
    assert.equal(kindOf(b), 'closed', '4 of 9 is below 50%');
    call(b, false);
    assert.deepEqual(b.state, { kind: 'open', openedAt: 1000, halfOpenAt: 6000 });
    assert.equal(b.tryAcquire(), false);
  });

  it('never trips below minRequestAmount, however bad the ratio', () => {
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 5 }, new ManualClock());
    repeat(4, () => call(b, false));
    assert.equal(kindOf(b), 'closed');
    call(b, false);
    assert.equal(kindOf(b), 'open');
  });

  it('trips on a success that brings the window to minRequestAmount with a bad ratio already in it', () => {
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 5 }, new ManualClock());
    repeat(4, () => call(b, false));
    call(b, true);
    assert.equal(kindOf(b), 'open');
  });

  it('forgets calls that slid out of a time window', () => {
    const clock = new ManualClock(0);
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 4, window: { type: 'time', durationMs: 1000 } }, clock);
    repeat(3, () => call(b, false));
    clock.advance(1500);
    // The old failures are gone: 1 failure in 4 fresh calls is 25%.
    repeat(3, () => call(b, true));
    call(b, false);
    assert.equal(kindOf(b), 'closed');
    // Within the window they add up: 3 failures in 6.
    repeat(2, () => call(b, false));
    assert.equal(kindOf(b), 'open');
  });

  it('slides a time window bucket by bucket', () => {
    const clock = new ManualClock(0);
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 60, minRequestAmount: 4, window: { type: 'time', durationMs: 1000 } }, clock);
    repeat(6, () => call(b, true)); // bucket [0, 100)
    clock.advance(500);
    call(b, true); // bucket [500, 600)
    clock.advance(550); // now 1050: the first bucket slid out, the second is still in
    repeat(2, () => call(b, false));
    assert.equal(kindOf(b), 'closed', '3 calls in the window, below minRequestAmount');
    // 3 of 4: trips only if the six old successes are gone and the one at 500 is still counted.
    call(b, false);
    assert.equal(kindOf(b), 'open');
  });

  it('trips a count window once it holds minRequestAmount calls', () => {
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 4, window: { type: 'count', size: 4 } }, new ManualClock());
    repeat(3, () => call(b, false));
    assert.equal(kindOf(b), 'closed');
    call(b, true); // F F F T = 75%
    assert.equal(kindOf(b), 'open');
  });

  it('drops the oldest outcome of a full count window', () => {
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 75, minRequestAmount: 4, window: { type: 'count', size: 4 } }, new ManualClock());
    call(b, false);
    call(b, false);
    repeat(4, () => call(b, true)); // the two failures are pushed out
    repeat(2, () => call(b, false)); // T T F F = 50%
    assert.equal(kindOf(b), 'closed');
    call(b, false); // T F F F = 75%
    assert.equal(kindOf(b), 'open');
  });
});

describe('slowRequestRatio', () => {
  const opts: BreakerOptions = { strategy: 'slowRequestRatio', threshold: 50, slowThresholdMs: 100, minRequestAmount: 4 };

  it('opens on the share of calls at least slowThresholdMs slow', () => {
    const b = new CircuitBreaker(opts, new ManualClock());
    call(b, true, 99);
    call(b, true, 10);
    call(b, true, 100);
    assert.equal(kindOf(b), 'closed');
    call(b, true, 250); // 2 of 4 slow
    assert.equal(kindOf(b), 'open');
  });

  it('ignores fast failures and counts slow ones (a timeout is slow)', () => {
    const b = new CircuitBreaker(opts, new ManualClock());
    repeat(6, () => call(b, false, 5));
    assert.equal(kindOf(b), 'closed', 'errors are not what this strategy measures');
    repeat(6, () => call(b, false, 500));
    assert.equal(kindOf(b), 'open');
  });

  it('re-opens when a half-open probe is slow', () => {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ ...opts, recoveryTimeoutMs: 1000 }, clock);
    repeat(4, () => call(b, true, 200));
    clock.advance(1000);
    call(b, true, 200);
    assert.equal(kindOf(b), 'open');
  });

  it('requires slowThresholdMs', () => {
    assert.throws(() => new CircuitBreaker({ strategy: 'slowRequestRatio', threshold: 50 }), RangeError);
  });
});

describe('consecutiveFailures', () => {
  it('opens after `threshold` failures in a row; a success starts over', () => {
    const b = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 3 }, new ManualClock());
    repeat(2, () => call(b, false));
    call(b, true);
    repeat(2, () => call(b, false));
    assert.equal(kindOf(b), 'closed');
    call(b, false);
    assert.equal(kindOf(b), 'open');
  });

  it('does not wait for minRequestAmount: the threshold is already a count', () => {
    const b = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 2, minRequestAmount: 100 }, new ManualClock());
    repeat(2, () => call(b, false));
    assert.equal(kindOf(b), 'open');
  });

  it('starts counting afresh after recovering', () => {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 2, recoveryTimeoutMs: 100 }, clock);
    repeat(2, () => call(b, false));
    clock.advance(100);
    call(b, true);
    assert.equal(kindOf(b), 'closed');
    call(b, false);
    assert.equal(kindOf(b), 'closed');
  });

  it('rejects a fractional threshold', () => {
    assert.throws(() => new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 2.5 }), RangeError);
    assert.throws(() => new CircuitBreaker({ strategy: 'errorRatio', threshold: 101 }), RangeError);
    assert.throws(() => new CircuitBreaker({ strategy: 'errorRatio', threshold: 0 }), RangeError);
    assert.throws(() => new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 11, window: { type: 'count', size: 10 } }), /could never open/);
  });
});

describe('open and half-open', () => {
  function tripped(probes: number, clock: ManualClock): CircuitBreaker {
    const b = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 1, recoveryTimeoutMs: 5000, halfOpenProbes: probes }, clock);
    call(b, false);
    assert.equal(kindOf(b), 'open');
    return b;
  }

  it('stays open for recoveryTimeoutMs and says how long in retryAfterMs', () => {
    const clock = new ManualClock(10_000);
    const b = tripped(1, clock);
    assert.equal(b.retryAfterMs(), 5000);
    clock.advance(4999);
    assert.equal(b.tryAcquire(), false);
    assert.equal(b.retryAfterMs(), 1);
    clock.advance(1);
    assert.equal(b.retryAfterMs(), 0);
    assert.equal(b.tryAcquire(), true, 'the first call after the recovery timeout is the probe');
    assert.deepEqual(b.state, { kind: 'halfOpen', probesInFlight: 1, probeSuccesses: 0 });
    assert.equal(b.retryAfterMs(), 0);
  });

  it('lets exactly halfOpenProbes probes through and closes when all succeed', () => {
    const clock = new ManualClock();
    const b = tripped(3, clock);
    const seen = kinds(b);
    clock.advance(5000);
    assert.equal(b.tryAcquire(), true);
    assert.equal(b.tryAcquire(), true);
    assert.equal(b.tryAcquire(), true);
    assert.equal(b.tryAcquire(), false, 'a fourth call while three probes run');
    b.onSuccess(1);
    assert.deepEqual(b.state, { kind: 'halfOpen', probesInFlight: 2, probeSuccesses: 1 });
    assert.equal(b.tryAcquire(), false, 'a successful probe does not open a slot for another');
    b.onSuccess(1);
    b.onSuccess(1);
    assert.equal(kindOf(b), 'closed');
    assert.deepEqual(seen, ['open->halfOpen', 'halfOpen->closed']);
  });

  it('re-opens on any failed probe, with a new recovery period', () => {
    const clock = new ManualClock();
    const b = tripped(2, clock);
    clock.advance(5000);
    assert.equal(b.tryAcquire(), true);
    assert.equal(b.tryAcquire(), true);
    b.onSuccess(1);
    clock.advance(10);
    b.onFailure(1);
    assert.deepEqual(b.state, { kind: 'open', openedAt: 5010, halfOpenAt: 10_010 });
    b.onSuccess(1); // the other probe finishing late does not count
    assert.equal(kindOf(b), 'open');
  });

  it('frees a probe slot on release (a cancelled probe)', () => {
    const clock = new ManualClock();
    const b = tripped(1, clock);
    clock.advance(5000);
    assert.equal(b.tryAcquire(), true);
    assert.equal(b.tryAcquire(), false);
    b.release();
    assert.deepEqual(b.state, { kind: 'halfOpen', probesInFlight: 0, probeSuccesses: 0 });
    assert.equal(b.tryAcquire(), true);
    b.onSuccess(1);
    assert.equal(kindOf(b), 'closed');
  });

  it('ignores outcomes of calls acquired before it opened', () => {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 1, recoveryTimeoutMs: 100 }, clock);
    assert.equal(b.tryAcquire(), true); // a slow call in flight
    call(b, false);
    b.onSuccess(1); // the slow call returns while open
    assert.equal(kindOf(b), 'open');
    b.release();
    clock.advance(100);
    b.onSuccess(1); // half-open would be entered lazily; nothing acquired yet, so nothing happens
    assert.equal(kindOf(b), 'open');
  });

  it('resets the window on opening: closing again starts with a clean slate', () => {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 4, recoveryTimeoutMs: 100, window: { type: 'count', size: 10 } }, clock);
    repeat(4, () => call(b, false));
    assert.equal(kindOf(b), 'open');
    clock.advance(100);
    call(b, true);
    assert.equal(kindOf(b), 'closed');
    repeat(3, () => call(b, false));
    assert.equal(kindOf(b), 'closed', 'only 3 calls since closing, below minRequestAmount');
  });

  it('tells listeners, keeps going when one throws (reported as a warning), and unsubscribes', async () => {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 1, recoveryTimeoutMs: 100 }, clock);
    const warnings: unknown[] = [];
    const onWarning = (w: unknown): number => warnings.push(w);
    process.on('warning', onWarning);
    try {
      b.onStateChange(() => {
        throw new Error('broken listener');
      });
      const seen: [BreakerState, BreakerState][] = [];
      const off = b.onStateChange((from, to) => seen.push([from, to]));
      call(b, false);
      assert.equal(seen.length, 1);
      assert.equal(seen[0]![0].kind, 'closed');
      assert.equal(seen[0]![1], b.state);
      off();
      clock.advance(100);
      call(b, true);
      assert.equal(seen.length, 1);
      await new Promise((r) => setImmediate(r));
      // closed->open, then open->halfOpen->closed: the throwing listener stays subscribed.
      assert.equal(warnings.length, 3);
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('forced states', () => {
  it('forcedOpen refuses everything and forcedClosed lets everything through without tripping', () => {
    const open = new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, forcedState: 'open' }, new ManualClock());
    assert.equal(kindOf(open), 'forcedOpen');
    assert.equal(open.tryAcquire(), false);
    assert.equal(open.retryAfterMs(), 0);
    const closed = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 1, forcedState: 'closed' }, new ManualClock());
    repeat(10, () => call(closed, false));
    assert.equal(kindOf(closed), 'forcedClosed');
    const disabled = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 1, forcedState: 'disabled' }, new ManualClock());
    repeat(10, () => call(disabled, false));
    assert.equal(kindOf(disabled), 'disabled');
  });

  it('leaving forcedClosed keeps the counts, leaving disabled starts fresh', () => {
    const base: BreakerOptions = { strategy: 'errorRatio', threshold: 50, minRequestAmount: 4 };
    const kept = new CircuitBreaker({ ...base, forcedState: 'closed' }, new ManualClock());
    repeat(4, () => call(kept, false));
    kept.reconfigure(base);
    assert.equal(kindOf(kept), 'closed');
    call(kept, false);
    assert.equal(kindOf(kept), 'open', 'the failures counted while forced closed trip it at once');

    const fresh = new CircuitBreaker({ ...base, forcedState: 'disabled' }, new ManualClock());
    repeat(4, () => call(fresh, false));
    fresh.reconfigure(base);
    call(fresh, false);
    assert.equal(kindOf(fresh), 'closed', 'disabled counted nothing');
  });

  it('takes over live from any state and notifies', () => {
    const clock = new ManualClock();
    const base: BreakerOptions = { strategy: 'consecutiveFailures', threshold: 1 };
    const b = new CircuitBreaker(base, clock);
    const seen = kinds(b);
    call(b, false);
    b.reconfigure({ ...base, forcedState: 'closed' });
    assert.equal(b.tryAcquire(), true);
    b.reconfigure({ ...base, forcedState: 'open' });
    assert.equal(b.tryAcquire(), false);
    b.reconfigure(base);
    assert.equal(kindOf(b), 'closed');
    assert.deepEqual(seen, ['closed->open', 'open->forcedClosed', 'forcedClosed->forcedOpen', 'forcedOpen->closed']);
  });
});

describe('reconfigure', () => {
  it('keeps an open breaker open and moves its half-open time to the new recovery timeout', () => {
    const clock = new ManualClock(0);
    const b = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 1, recoveryTimeoutMs: 5000 }, clock);
    call(b, false);
    b.reconfigure({ strategy: 'consecutiveFailures', threshold: 1, recoveryTimeoutMs: 1000 });
    assert.deepEqual(b.state, { kind: 'open', openedAt: 0, halfOpenAt: 1000 });
    clock.advance(1000);
    assert.equal(b.tryAcquire(), true);
  });

  it('keeps the window when only the threshold changes', () => {
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 80, minRequestAmount: 4 }, new ManualClock());
    repeat(2, () => call(b, true));
    repeat(2, () => call(b, false));
    b.reconfigure({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 4 });
    call(b, false); // 3 of 5 with the old counts
    assert.equal(kindOf(b), 'open');
  });

  it('starts a new window when its shape or the strategy changes', () => {
    const b = new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 4 }, new ManualClock());
    repeat(3, () => call(b, false));
    b.reconfigure({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 4, window: { type: 'count', size: 10 } });
    repeat(3, () => call(b, false));
    assert.equal(kindOf(b), 'closed');
    call(b, false);
    assert.equal(kindOf(b), 'open');
  });

  it('closes a half-open breaker whose successful probes already meet a lowered halfOpenProbes', () => {
    const clock = new ManualClock();
    const opts: BreakerOptions = { strategy: 'consecutiveFailures', threshold: 1, recoveryTimeoutMs: 10, halfOpenProbes: 3 };
    const b = new CircuitBreaker(opts, clock);
    call(b, false);
    clock.advance(10);
    call(b, true);
    call(b, true);
    assert.deepEqual(b.state, { kind: 'halfOpen', probesInFlight: 0, probeSuccesses: 2 });
    b.reconfigure({ ...opts, halfOpenProbes: 2 });
    assert.equal(kindOf(b), 'closed');
  });

  it('rejects invalid options without changing anything', () => {
    const b = new CircuitBreaker({ strategy: 'consecutiveFailures', threshold: 2 }, new ManualClock());
    assert.throws(() => b.reconfigure({ strategy: 'consecutiveFailures', threshold: 0 }), RangeError);
    call(b, false);
    assert.equal(kindOf(b), 'closed');
    call(b, false);
    assert.equal(kindOf(b), 'open');
  });
});

describe('breakerOptionsOf', () => {
  it('maps a validated strategy with its defaults', () => {
    const s = CircuitBreakerStrategy.parse({ type: 'circuitBreaker', strategy: 'slowRequestRatio', threshold: 60, slowThresholdMs: 500 });
    assert.deepEqual(breakerOptionsOf(s), {
      strategy: 'slowRequestRatio',
      threshold: 60,
      slowThresholdMs: 500,
      minRequestAmount: 5,
      window: { type: 'time', durationMs: 10_000 },
      recoveryTimeoutMs: 5000,
      halfOpenProbes: 1,
    });
    const f = CircuitBreakerStrategy.parse({ type: 'circuitBreaker', threshold: 3, strategy: 'consecutiveFailures', window: { type: 'count', size: 20 }, forcedState: 'disabled' });
    const o = breakerOptionsOf(f);
    assert.equal(o.forcedState, 'disabled');
    assert.deepEqual(o.window, { type: 'count', size: 20 });
    assert.equal(new CircuitBreaker(o).state.kind, 'disabled');
  });
});

describe('statusClassifier', () => {
  it('defaults to 5xx', () => {
    const f = statusClassifier();
    assert.equal(f(500), true);
    assert.equal(f(599), true);
    assert.equal(f(499), false);
    assert.equal(f(200), false);
    assert.equal(f(600), false);
    assert.equal(f(0), false);
  });

  it('mixes codes and classes', () => {
    const f = statusClassifier([429, '503', '4xx']);
    assert.equal(f(429), true);
    assert.equal(f(503), true);
    assert.equal(f(404), true);
    assert.equal(f(500), false);
    assert.equal(f(-1), false);
    assert.equal(f(429.5), false);
  });

  it('rejects what is not a status or a class', () => {
    assert.throws(() => statusClassifier([600]), RangeError);
    assert.throws(() => statusClassifier(['6xx']), RangeError);
    assert.throws(() => statusClassifier(['50x']), RangeError);
    assert.throws(() => statusClassifier([50.5]), RangeError);
  });
});

describe('a clock reading passed by the caller', () => {
  const ratio = (): CircuitBreaker =>
    new CircuitBreaker({ strategy: 'errorRatio', threshold: 50, minRequestAmount: 3, window: { type: 'time', durationMs: 10_000 } }, new ManualClock(0));

  it('is the time an outcome is counted at, instead of a read of its own clock', () => {
    const later = ratio();
    for (const ok of [false, false]) {
      assert.equal(later.tryAcquire(0), true);
      if (ok) later.onSuccess(1, 0);
      else later.onFailure(1, 0);
    }
    later.tryAcquire(20_000);
    later.onSuccess(1, 20_000);
    assert.equal(kindOf(later), 'closed', 'at 20 s the two failures have left the window: one call in it');

    const now = ratio();
    for (let i = 0; i < 2; i++) {
      now.tryAcquire(0);
      now.onFailure(1, 0);
    }
    now.tryAcquire(0);
    now.onSuccess(1, 0);
    assert.equal(kindOf(now), 'open', 'all three in one window: 2 of 3 failed');
  });

  it('decides when an open breaker lets a probe through', () => {
    const b = ratio();
    for (let i = 0; i < 3; i++) {
      b.tryAcquire(0);
      b.onFailure(1, 0);
    }
    assert.equal(kindOf(b), 'open');
    assert.equal(b.retryAfterMs(1000), 4000);
    assert.equal(b.tryAcquire(4999), false);
    assert.equal(b.tryAcquire(5000), true, 'the breaker’s own clock still says 0');
    assert.equal(kindOf(b), 'halfOpen');
  });
});
