import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lastTraceRandomness, newSpanId, newTraceId } from './ids.js';
import { randomnessOf } from './sampler.js';

describe('ids', () => {
  it('are lowercase hex of the W3C lengths, not all zero, and do not repeat', () => {
    const seen = new Set<string>();
    // Enough draws to refill the pool several times.
    for (let i = 0; i < 2000; i++) {
      const t = newTraceId();
      const s = newSpanId();
      assert.match(t, /^[0-9a-f]{32}$/);
      assert.match(s, /^[0-9a-f]{16}$/);
      assert.notEqual(t, '0'.repeat(32));
      assert.notEqual(s, '0'.repeat(16));
      seen.add(t).add(s);
    }
    assert.equal(seen.size, 4000);
  });

  it('report the randomness the sampler would read from the id text', () => {
    for (let i = 0; i < 1000; i++) {
      const t = newTraceId();
      assert.equal(lastTraceRandomness(), randomnessOf(t));
    }
  });
});
