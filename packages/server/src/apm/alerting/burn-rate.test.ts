import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_BURN_RATE_ALERTS, windowMs } from '@plinth/core';
import { atLeast, budgetConsumed, burnRate, errorBudget, evaluatePairs, firingBySeverity, fmt, windowsOf } from './burn-rate.js';

const close = (a: number, b: number): void => assert.ok(Math.abs(a - b) < 1e-9, `${a} ≠ ${b}`);
const DAYS_30 = 30 * 86_400_000;

describe('burn rate', () => {
  it('writes figures in summaries and advice so that a small one never reads as none', () => {
    assert.deepEqual([1234.4, 16.25, 1, 0.5, 0.056, 0.0111, 0.004, 0].map(fmt), ['1234', '16.3', '1', '0.5', '0.056', '0.011', '<0.01', '0']);
  });

  it('is the error ratio over the budget (SRE workbook table 5-4, 99.9%)', () => {
    // 0.1% errors burn 1x (the budget lasts 30 days), 1% burn 10x (3 days), 100% burn 1000x (43 minutes).
    close(burnRate({ total: 1_000_000, bad: 1000 }, 99.9), 1);
    close(burnRate({ total: 1_000_000, bad: 2000 }, 99.9), 2);
    close(burnRate({ total: 1_000_000, bad: 10_000 }, 99.9), 10);
    close(burnRate({ total: 1000, bad: 1000 }, 99.9), 1000);
    assert.equal(burnRate({ total: 0, bad: 0 }, 99.9), 0);
  });

  it("spends the workbook's share of a 30-day budget per alert window", () => {
    // Page: 2% in 1 h at 14.4x, 5% in 6 h at 6x; ticket: 10% in 24 h at 3x (and 10% in 3 days at 1x).
    close(budgetConsumed(14.4, windowMs('1h'), DAYS_30), 0.02);
    close(budgetConsumed(6, windowMs('6h'), DAYS_30), 0.05);
    close(budgetConsumed(3, windowMs('24h'), DAYS_30), 0.1);
    close(budgetConsumed(1, windowMs('3d'), DAYS_30), 0.1);
  });

  it('fires at exactly the threshold despite binary rounding', () => {
    // 1.44% errors at 99.9% is 14.4x on paper and 14.399999999999999 in floating point.
    const rate = burnRate({ total: 10_000, bad: 144 }, 99.9);
    assert.ok(atLeast(rate, 14.4));
    assert.ok(!atLeast(burnRate({ total: 10_000, bad: 143 }, 99.9), 14.4));
  });

  it('fires a pair only when both windows burn', () => {
    const counts: Record<string, { total: number; bad: number }> = {
      '1h': { total: 10_000, bad: 150 }, // 15x
      '5m': { total: 800, bad: 2 }, // 2.5x: the spike is over
      '6h': { total: 60_000, bad: 420 }, // 7x
      '30m': { total: 5000, bad: 35 }, // 7x
      '24h': { total: 240_000, bad: 500 },
      '2h': { total: 20_000, bad: 100 },
    };
    const pairs = evaluatePairs(DEFAULT_BURN_RATE_ALERTS, 99.9, (w) => counts[w]!);
    assert.deepEqual(
      pairs.map((p) => [p.alert.longWindow, p.firing]),
      [
        ['1h', false],
        ['6h', true],
        ['24h', false],
      ],
    );
    close(pairs[0]!.long.burnRate, 15);
    close(pairs[0]!.short.burnRate, 2.5);
    const bySeverity = firingBySeverity(pairs);
    assert.equal(bySeverity.get('page')?.alert.longWindow, '6h');
    assert.equal(bySeverity.get('ticket'), undefined);
    assert.ok(bySeverity.has('ticket'));
  });

  it('keeps a quiet target from paging on a handful of requests when minRequests asks for volume', () => {
    // One failure in four requests in an hour: a burn of 250x at 99.9 %.
    const quiet: Record<string, { total: number; bad: number }> = { '1h': { total: 4, bad: 1 }, '5m': { total: 1, bad: 1 } };
    const alerts = DEFAULT_BURN_RATE_ALERTS.slice(0, 1);
    const unguarded = evaluatePairs(alerts, 99.9, (w) => quiet[w]!);
    assert.equal(unguarded[0]!.firing, true, 'no guard by default: a rarely used service still pages');
    assert.equal(unguarded[0]!.tooFewRequests, false);
    const guarded = evaluatePairs(alerts, 99.9, (w) => quiet[w]!, 20);
    assert.equal(guarded[0]!.firing, false);
    assert.equal(guarded[0]!.tooFewRequests, true);
    close(guarded[0]!.long.burnRate, 250);
    // At the minimum, the same burn fires.
    const busier: Record<string, { total: number; bad: number }> = { '1h': { total: 20, bad: 5 }, '5m': { total: 2, bad: 1 } };
    const enough = evaluatePairs(alerts, 99.9, (w) => busier[w]!, 20);
    assert.equal(enough[0]!.firing, true);
    assert.equal(enough[0]!.tooFewRequests, false);
  });

  it('lists each window once, longest first', () => {
    assert.deepEqual(windowsOf(DEFAULT_BURN_RATE_ALERTS), ['24h', '6h', '2h', '1h', '30m', '5m']);
  });
});

describe('error budget', () => {
  it('is what the window has left, with the counts', () => {
    const b = errorBudget({ total: 1_000_000, bad: 250 }, 99.9);
    close(b.remaining, 0.75);
    close(b.consumed, 0.25);
    close(b.allowedBad, 1000);
    assert.equal(b.total, 1_000_000);
    assert.equal(b.bad, 250);
  });

  it('clamps an overspent budget to 0 and keeps the overspend in consumed', () => {
    const b = errorBudget({ total: 1_000_000, bad: 2500 }, 99.9);
    assert.equal(b.remaining, 0);
    close(b.consumed, 2.5);
  });

  it('is whole without traffic', () => {
    assert.deepEqual(errorBudget({ total: 0, bad: 0 }, 99), { remaining: 1, consumed: 0, total: 0, bad: 0, allowedBad: 0 });
  });
});
