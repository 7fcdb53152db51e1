import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newTraceId as randomTraceId } from './ids.js';
import { DEFER, DROP, PlinthSampler, SAMPLE } from './sampler.js';

/** A trace id whose randomness bits (hex 18..30, the top 52 of the rightmost 56) are `r13`. */
const idWith = (r13: string) => `${'a'.repeat(18)}${r13}0`;

describe('PlinthSampler', () => {
  it('samples a root by its trace id at the ratio boundary exactly', () => {
    const s = new PlinthSampler({ ratio: 0.25 });
    // (1 - 0.25) * 2^52 = 0xc000000000000
    assert.equal(s.sampledByRatio(idWith('c000000000000')), true);
    assert.equal(s.sampledByRatio(idWith('bffffffffffff')), false);
    assert.equal(s.sampledByRatio(idWith('fffffffffffff')), true);
    assert.equal(s.sampledByRatio(idWith('0000000000000')), false);
  });

  it('is deterministic per trace id, and nested across ratios', () => {
    const low = new PlinthSampler({ ratio: 0.01 });
    const high = new PlinthSampler({ ratio: 0.1 });
    const again = new PlinthSampler({ ratio: 0.1 });
    let sampledHigh = 0;
    for (let i = 0; i < 10_000; i++) {
      const id = randomTraceId();
      const h = high.sampledByRatio(id);
      assert.equal(again.sampledByRatio(id), h);
      if (low.sampledByRatio(id)) assert.ok(h, 'a trace sampled at 1% must be sampled at 10%');
      if (h) sampledHigh++;
    }
    // 10 standard deviations of a binomial(10 000, 0.1): never fails by chance.
    assert.ok(sampledHigh > 700 && sampledHigh < 1300, `sampled ${sampledHigh} of 10000 at 10%`);
  });

  it('treats 0 and 1 as never and always', () => {
    const never = new PlinthSampler({ ratio: 0 });
    const always = new PlinthSampler({ ratio: 1 });
    for (const id of [idWith('fffffffffffff'), idWith('0000000000000'), randomTraceId()]) {
      assert.equal(never.sampledByRatio(id), false);
      assert.equal(always.sampledByRatio(id), true);
    }
  });

  it('follows the parent flag whatever the ratio', () => {
    const never = new PlinthSampler({ ratio: 0 });
    const always = new PlinthSampler({ ratio: 1 });
    const id = randomTraceId();
    assert.equal(never.decide(id, 0x01), SAMPLE);
    assert.equal(always.decide(id, 0x00), DEFER);
    assert.equal(always.decide(id, undefined), SAMPLE);
    assert.equal(never.decide(id, undefined), DEFER);
  });

  it('drops unsampled spans outright when nothing is kept on demand', () => {
    const s = new PlinthSampler({ ratio: 0, keepErrors: false });
    assert.equal(s.decide(randomTraceId(), undefined), DROP);
    assert.equal(s.decide(randomTraceId(), 0), DROP);
    assert.equal(new PlinthSampler({ ratio: 0, keepErrors: false, keepSlowerThanMs: 100 }).decide(randomTraceId(), 0), DEFER);
  });

  it('keeps failed and slow deferred spans only as configured', () => {
    const s = new PlinthSampler({ keepSlowerThanMs: 250 });
    assert.equal(s.keep(true, 1), true);
    assert.equal(s.keep(false, 249.9), false);
    assert.equal(s.keep(false, 250), true);
    const noErrors = new PlinthSampler({ keepErrors: false });
    assert.equal(noErrors.keep(true, 1e9), false);
  });

  it('changes the ratio for new decisions', () => {
    const s = new PlinthSampler({ ratio: 1 });
    const id = idWith('0000000000001');
    assert.equal(s.sampledByRatio(id), true);
    s.setRatio(0.5);
    assert.equal(s.ratio, 0.5);
    assert.equal(s.sampledByRatio(id), false);
  });
});
