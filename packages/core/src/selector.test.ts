import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PlinthError } from './errors.js';
import { matchesSelector, parseSelector } from './selector.js';

describe('label selectors', () => {
  const labels = { team: 'orders', env: 'prod', lane: 'canary' };
  const cases: [string, boolean][] = [
    ['', true],
    ['team=orders', true],
    ['team==orders', true],
    ['team=cart', false],
    ['team!=cart', true],
    ['env in (prod, staging)', true],
    ['env notin (prod)', false],
    ['missing notin (x)', true],
    ['lane', true],
    ['!lane', false],
    ['!missing', true],
    ['team=orders,env in (prod),!legacy', true],
    ['team=orders,env=dev', false],
    ['plinth.dev/service=orders', false],
  ];
  for (const [sel, want] of cases) {
    it(`${JSON.stringify(sel)} → ${want}`, () => assert.equal(matchesSelector(parseSelector(sel), labels), want));
  }
  it('accepts prefixed keys', () => {
    assert.ok(matchesSelector(parseSelector('plinth.dev/service=orders'), { 'plinth.dev/service': 'orders' }));
  });
  for (const bad of ['a in (b', 'a=b=c', '=x', 'a in ()', ',', 'a b', 'x'.repeat(5000), 'a=' + 'v'.repeat(70)]) {
    it(`rejects ${JSON.stringify(bad.slice(0, 20))}`, () => {
      assert.throws(() => parseSelector(bad), (e: unknown) => e instanceof PlinthError && e.code === 'invalid_selector');
    });
  }
});
