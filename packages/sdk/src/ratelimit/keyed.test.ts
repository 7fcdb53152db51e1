import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from './clock.js';
import { KeyedLimiter } from './keyed.js';
import { REJECTED, TokenBucket } from './token-bucket.js';

function buckets(clock: ManualClock, opts: { maxKeys?: number; idleMs?: number } = {}): KeyedLimiter<TokenBucket> {
  return new KeyedLimiter({ create: () => new TokenBucket({ rate: 1, burst: 2 }, clock), ...opts }, clock);
}

describe('KeyedLimiter', () => {
  it('keeps one limiter per key, so callers do not share a budget', () => {
    const clock = new ManualClock();
    const k = buckets(clock);
    const a = k.get('tenant-a');
    assert.equal(k.get('tenant-a'), a);
    assert.notEqual(k.get('tenant-b'), a);
    a.tryAcquire(2);
    assert.equal(k.get('tenant-a').tryAcquire(), REJECTED);
    assert.equal(k.get('tenant-b').tryAcquire(), 0);
    assert.equal(k.size, 2);
  });

  it('drops keys idle for idleMs and keeps keys in use', () => {
    const clock = new ManualClock();
    const k = buckets(clock, { idleMs: 1_000 });
    const idle = k.get('idle');
    const busy = k.get('busy');
    for (let i = 0; i < 5; i++) {
      clock.advance(400);
      assert.equal(k.get('busy'), busy, 'a key used every 400 ms is never dropped');
    }
    assert.equal(k.peek('idle'), undefined, 'unused for 2 s with idleMs 1 s');
    assert.equal(k.size, 1);
    assert.equal(k.evictions, 1);
    assert.notEqual(k.get('idle'), idle, 'it comes back with a fresh limiter');
  });

  it('drops every idle key within two idleMs of its last use, with no timer', () => {
    const clock = new ManualClock();
    const k = buckets(clock, { idleMs: 1_000 });
    for (let i = 0; i < 100; i++) {
      k.get(`k${i}`);
      clock.advance(5);
    }
    for (let i = 0; i < 50; i++) k.get(`k${i}`); // referenced: these get a second chance, then go idle too
    clock.advance(2_000);
    for (let i = 0; i < 100; i++) {
      k.get('probe'); // each call does a bounded amount of sweeping
      clock.advance(1);
    }
    assert.equal(k.size, 1, 'only the probe key is left');
    assert.equal(k.evictions, 100);
  });

  it('stays within maxKeys under a flood of hostile keys, and keeps a key in regular use', () => {
    const clock = new ManualClock();
    const k = buckets(clock, { maxKeys: 100, idleMs: 60_000 });
    const legit = k.get('legit');
    legit.tryAcquire(2); // its bucket is empty: eviction would hand it a full one
    let maxSize = 0;
    for (let i = 0; i < 20_000; i++) {
      k.get(`attacker-${i}`);
      if (i % 50 === 0) assert.equal(k.get('legit'), legit, `legit key evicted after ${i} hostile keys`);
      maxSize = Math.max(maxSize, k.size);
      if (i % 1000 === 0) clock.advance(1);
    }
    assert.equal(maxSize, 100);
    assert.equal(k.get('legit').tryAcquire(), REJECTED, 'the flood did not refill the legitimate bucket');
    assert.equal(k.evictions, 20_001 - 100);
  });

  it('evicts a key used less often than once per maxKeys new keys under the cap', () => {
    const clock = new ManualClock();
    const k = buckets(clock, { maxKeys: 10 });
    const rare = k.get('rare');
    for (let i = 0; i < 30; i++) k.get(`other-${i}`);
    assert.equal(k.peek('rare'), undefined);
    assert.notEqual(k.get('rare'), rare);
  });

  it('deletes on request and validates its options', () => {
    const clock = new ManualClock();
    const k = buckets(clock);
    k.get('a');
    assert.equal(k.delete('a'), true);
    assert.equal(k.delete('a'), false);
    assert.equal(k.size, 0);
    assert.throws(() => buckets(clock, { maxKeys: 0 }), RangeError);
    assert.throws(() => buckets(clock, { idleMs: 0 }), RangeError);
  });
});
