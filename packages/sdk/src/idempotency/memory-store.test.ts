import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../ratelimit/clock.js';
import { MemoryIdempotencyStore } from './memory-store.js';
import { storeContract } from './store-contract.test.helpers.js';

storeContract('memory', async () => {
  const store = new MemoryIdempotencyStore();
  return { store, peer: store, cleanup: () => store.close() };
});

describe('MemoryIdempotencyStore on a manual clock', () => {
  const response = { status: 200, headers: {}, body: Buffer.from('ok') };

  it('holds a lease until exactly its end, and a record until exactly its TTL', async () => {
    const clock = new ManualClock(1_000);
    const s = new MemoryIdempotencyStore({ clock });
    const r = await s.begin('k', 'fp', 100);
    clock.advance(99);
    assert.equal((await s.begin('k', 'fp', 100)).kind, 'inFlight');
    clock.advance(1);
    const taken = await s.begin('k', 'fp', 100);
    assert.equal(taken.kind, 'execute');
    assert.notDeepEqual(taken, r);
    await s.complete('k', (taken as { token: string }).token, response, 1_000);
    clock.advance(999);
    assert.equal((await s.begin('k', 'fp', 100)).kind, 'replay');
    clock.advance(1);
    assert.equal((await s.begin('k', 'fp', 100)).kind, 'execute');
  });

  it('sweeps expired records as new keys arrive, so memory stays bounded by the live ones', async () => {
    const clock = new ManualClock(0);
    const s = new MemoryIdempotencyStore({ clock });
    for (let i = 0; i < 50; i++) {
      const r = await s.begin(`old-${i}`, 'fp', 100);
      await s.complete(`old-${i}`, (r as { token: string }).token, response, 1_000);
    }
    clock.advance(2_000);
    for (let i = 0; i < 10; i++) await s.begin(`new-${i}`, 'fp', 100);
    assert.equal(s.size, 10);
  });
});
