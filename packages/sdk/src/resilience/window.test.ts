import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BucketedCounters } from './window.js';

describe('BucketedCounters', () => {
  it('slides at epoch-sized times as it does near zero', () => {
    // Epoch-aligned clock readings (~1.7e12 ms), and a clock that starts below zero in a test.
    for (const origin of [1_764_000_000_000, -25_000, 0]) {
      const c = new BucketedCounters(10_000, 10, 2);
      c.roll(origin);
      c.add(0, 3);
      c.roll(origin + 4_000);
      c.add(0);
      c.add(1);
      assert.deepEqual([c.sum(0), c.sum(1)], [4, 1], `${origin}: one window`);
      c.roll(origin + 10_500);
      assert.deepEqual([c.sum(0), c.sum(1)], [1, 1], `${origin}: the first bucket slid out`);
      c.roll(origin + 30_000);
      assert.deepEqual([c.sum(0), c.sum(1)], [0, 0], `${origin}: all slid out`);
    }
  });
});
