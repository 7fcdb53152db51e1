import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { SpanRecord } from '../types.js';
import { contentionReport } from './contention.js';
import { MINUTE, T0, clientSpan, openStores, type Stores } from './test-helpers.js';

describe('contentionReport against the SQLite span store', () => {
  let s: Stores;
  beforeEach(async () => {
    s = await openStores();
  });
  afterEach(() => s.close());

  const calls = (caller: string, callee: string, n: number, over: Omit<Partial<SpanRecord>, 'service' | 'peer' | 'startMs'> = {}): SpanRecord[] =>
    Array.from({ length: n }, (_, i) => clientSpan({ service: caller, peer: callee, startMs: T0 + i * 100, ...over }));

  it('flags the consumers that see a shared service over its latency budget, worst first, with advice', async () => {
    await s.put('Service', 'shop', 'pricing', { team: 'pricing', latencyBudgetMs: 100 });
    await s.put('Service', 'shop', 'cart', { team: 'cart' });
    await s.spans.insert([
      ...calls('cart', 'pricing', 60, { durationMs: 400 }),
      ...calls('search', 'pricing', 50, { durationMs: 15 }),
      ...calls('search', 'pricing', 10, { durationMs: 5, status: 'error', httpStatus: 429 }),
      // pricing's own calls out are not contention on pricing; cart has no budget at all.
      ...calls('pricing', 'postgresql', 30, { durationMs: 900 }),
      ...calls('web', 'cart', 30, { durationMs: 900 }),
    ]);
    const report = await contentionReport(s, { namespace: 'shop', fromMs: T0, toMs: T0 + MINUTE });
    assert.equal(report.services.length, 1);
    const [pricing] = report.services;
    assert.equal(pricing?.service, 'pricing');
    assert.equal(pricing?.team, 'pricing');
    assert.equal(pricing?.latencyBudgetMs, 100);
    assert.equal(pricing?.overBudget, true);
    assert.deepEqual(
      pricing?.consumers.map((c) => [c.consumer, c.count, c.overBudget, c.rejections]),
      [
        ['cart', 60, true, 0],
        ['search', 60, false, 10],
      ],
    );
    const [cart, search] = pricing!.consumers;
    assert.ok(cart!.p99Ms > 100);
    assert.equal(cart?.ratePerSec, 1);
    assert.match(cart?.advice ?? '', /^cart waits on pricing synchronously at 1\/s with p99 \d+ ms, over the 100 ms budget: take a local implementation/);
    assert.match(cart?.advice ?? '', /cache pricing's answers/);
    assert.ok(search!.p99Ms <= 100);
    assert.match(search?.advice ?? '', /^pricing is within its latency budget for search, but 10 of its 60 calls were rejected \(429\/503\)/);
  });

  it('reports a budgeted service without callers as uncontended', async () => {
    await s.put('Service', 'shop', 'pricing', { team: 'pricing', latencyBudgetMs: 100 });
    const report = await contentionReport(s, { namespace: 'shop', fromMs: T0, toMs: T0 + MINUTE });
    assert.deepEqual(report.services, [{ service: 'pricing', team: 'pricing', latencyBudgetMs: 100, consumers: [], overBudget: false }]);
  });
});
