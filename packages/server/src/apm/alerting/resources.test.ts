import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { AlertResourceCache } from './resources.js';
import { openStores, silentLog, type Stores } from './test-helpers.js';

describe('AlertResourceCache', () => {
  let s: Stores;
  beforeEach(async () => {
    s = await openStores();
  });
  afterEach(() => s.close());

  const slo = { target: { service: 'checkout' }, indicator: 'availability', objectivePercent: 99.5 };

  it('loads the alerting kinds from the store, parsed, and skips specs the schema no longer accepts', async () => {
    await s.put('Slo', 'shop', 'b', slo);
    await s.put('Slo', 'shop', 'a', slo);
    await s.put('Slo', 'ops', 'z', slo);
    await s.put('Service', 'shop', 'pricing', { team: 'pricing', latencyBudgetMs: 80 });
    // Written around validation (an older schema): kept out rather than evaluated half-understood.
    await s.store.put({ kind: 'AlertRule', namespace: 'shop', name: 'old', labels: {}, annotations: {}, spec: { target: { service: 'x' }, metric: 'p90Ms' } });

    const cache = new AlertResourceCache(silentLog);
    await cache.load(s.store);
    assert.deepEqual(
      (await cache.list('Slo')).map((r) => `${r.namespace}/${r.name}`),
      ['ops/z', 'shop/a', 'shop/b'],
    );
    assert.deepEqual(
      (await cache.list('Slo', 'shop')).map((r) => r.name),
      ['a', 'b'],
    );
    assert.equal((await cache.get('Slo', 'shop', 'a'))?.spec.windowDays, 30);
    assert.equal((await cache.get('Service', 'shop', 'pricing'))?.spec.latencyBudgetMs, 80);
    assert.deepEqual(await cache.list('AlertRule'), []);
  });

  it('follows changes and ignores ones older than what it holds', async () => {
    const cache = new AlertResourceCache(silentLog);
    const v1 = await s.store.put({ kind: 'Slo', namespace: 'shop', name: 'a', labels: {}, annotations: {}, spec: { ...slo, windowDays: 7 } });
    const v2 = await s.store.put({ kind: 'Slo', namespace: 'shop', name: 'a', labels: {}, annotations: {}, spec: { ...slo, windowDays: 14 } });
    cache.onChange({ type: 'MODIFIED', revision: v2.resource.metadata.revision, resource: v2.resource });
    cache.onChange({ type: 'ADDED', revision: v1.resource.metadata.revision, resource: v1.resource });
    assert.equal((await cache.get('Slo', 'shop', 'a'))?.spec.windowDays, 14);
    const gone = await s.store.delete('Slo', 'shop', 'a');
    cache.onChange({ type: 'DELETED', revision: gone!.metadata.revision, resource: gone! });
    assert.equal(await cache.get('Slo', 'shop', 'a'), undefined);
  });
});
