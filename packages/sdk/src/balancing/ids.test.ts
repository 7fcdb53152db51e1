import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newSpanId, newTraceId, randomHex } from './ids.js';

describe('ids', () => {
  it('are lowercase hex of the asked length, never all zero, and do not repeat', () => {
    const seen = new Set<string>();
    // Enough draws to refill the pool several times.
    for (let i = 0; i < 3000; i++) {
      for (const [id, re] of [
        [newTraceId(), /^[0-9a-f]{32}$/],
        [newSpanId(), /^[0-9a-f]{16}$/],
        [randomHex(4), /^[0-9a-f]{8}$/],
      ] as const) {
        assert.match(id, re);
        assert.doesNotMatch(id, /^0+$/);
        seen.add(id);
      }
    }
    assert.equal(seen.size, 9000);
  });

  it('use every digit in every position (both halves of each byte, in order)', () => {
    const digits = Array.from({ length: 32 }, () => new Set<string>());
    for (let i = 0; i < 2000; i++) {
      const id = randomHex(16);
      for (let p = 0; p < 32; p++) digits[p]!.add(id[p]!);
    }
    assert.deepEqual(
      digits.map((d) => d.size),
      digits.map(() => 16),
    );
  });
});
