import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { PlinthError } from '@plinth/core';
import { AuthCache, createRequestHandler } from '../../app.js';
import { Router } from '../../http/router.js';
import type { AuditRecord, Identity, Principal } from '../../identity/types.js';
import { createMetrics } from '../../metrics.js';
import { AlertEvaluator } from './evaluator.js';
import { registerAlertingRoutes } from './routes.js';
import { MINUTE, T0, TestClock, clientSpan, openStores, silentLog, traffic, type Stores } from './test-helpers.js';
import { WebhookNotifier } from './webhook.js';

const HOUR = 60 * MINUTE;

/** Two callers: `admin` may do anything; `viewer` may get and list in namespace shop only. */
const principals: Record<string, Principal> = {
  'Bearer admin': { subject: 'ServiceAccount:plinth-system/admin', namespace: 'plinth-system', name: 'admin', via: 'credential' },
  'Bearer viewer': { subject: 'ServiceAccount:shop/viewer', namespace: 'shop', name: 'viewer', via: 'credential' },
};
const identity: Identity = {
  authenticate: async (h) => {
    const p = h ? principals[h] : undefined;
    if (!p) throw new PlinthError('UNAUTHENTICATED');
    return p;
  },
  can: (p, verb, _kind, ns) => p.name === 'admin' || (ns === 'shop' && (verb === 'get' || verb === 'list')),
  assertCanGrant: () => {},
};

describe('alerting routes', () => {
  let s: Stores;
  let server: Server;
  let base: string;
  const denied: AuditRecord[] = [];
  const clock = new TestClock(T0);

  const get = async (path: string, token = 'viewer') => {
    const res = await fetch(base + path, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as any };
  };

  before(async () => {
    s = await openStores();
    const slo = { target: { service: 'checkout', endpoint: 'POST /checkout' }, indicator: 'availability', objectivePercent: 99 };
    await s.put('Slo', 'shop', 'checkout', slo);
    await s.put('Slo', 'other', 'hidden', slo);
    await s.put('Service', 'shop', 'pricing', { team: 'pricing', latencyBudgetMs: 100 });
    await s.spans.insert(traffic({ fromMs: T0 - 10 * HOUR, toMs: T0 - HOUR, perMinute: 5 }));
    await s.spans.insert(traffic({ fromMs: T0 - HOUR, toMs: T0, perMinute: 5, badPerMinute: 1 }));
    await s.spans.insert(Array.from({ length: 20 }, (_, i) => clientSpan({ service: 'cart', peer: 'pricing', startMs: T0 - MINUTE + i, durationMs: 300 })));
    const notifier = new WebhookNotifier();
    await new AlertEvaluator({ resources: s.resources, spans: s.spans, notifier, log: silentLog, clock }).evaluateOnce(T0);
    await notifier.close();

    const router = new Router();
    registerAlertingRoutes(router, { identity, audit: { record: async (r) => void denied.push(r) }, resources: s.resources, spans: s.spans, clock });
    server = createServer(createRequestHandler({ router, identity, authCache: new AuthCache(), metrics: createMetrics(), log: silentLog }));
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((ok) => server.close(() => ok()));
    await s.close();
  });

  it('shows an SLO: burn rate per window pair, error budget left, firing alerts', async () => {
    const r = await get('/v1/apm/slos/shop/checkout');
    assert.equal(r.status, 200);
    assert.equal(r.body.namespace, 'shop');
    assert.equal(r.body.at, new Date(T0).toISOString());
    assert.deepEqual(
      r.body.burnRates.map((b: any) => [b.longWindow, b.shortWindow, b.severity, b.firing]),
      [
        ['1h', '5m', 'page', true],
        ['6h', '30m', 'page', false],
        ['24h', '2h', 'ticket', false],
      ],
    );
    assert.deepEqual(r.body.burnRates[0].long, { window: '1h', burnRate: 20, total: 300, bad: 60 });
    // 60 bad of 3000 over the 30-day window at 99%: 2% bad, twice the budget.
    assert.equal(r.body.errorBudget.remaining, 0);
    assert.equal(r.body.errorBudget.total, 3000);
    assert.equal(r.body.errorBudget.bad, 60);
    assert.deepEqual(r.body.firing, [{ severity: 'page', summary: 'burn 1h/5m 20x ≥ 14.4x', since: new Date(T0).toISOString(), notification: 'none' }]);
  });

  it('lists SLO statuses of the namespaces the caller may list', async () => {
    assert.deepEqual(
      (await get('/v1/apm/slos')).body.items.map((i: any) => `${i.namespace}/${i.name}`),
      ['shop/checkout'],
    );
    assert.deepEqual(
      (await get('/v1/apm/slos', 'admin')).body.items.map((i: any) => `${i.namespace}/${i.name}`),
      ['other/hidden', 'shop/checkout'],
    );
    assert.equal((await get('/v1/apm/slos?namespace=shop')).body.items.length, 1);
  });

  it('answers the alert history, newest first, filtered', async () => {
    const r = await get(`/v1/apm/alerts?namespace=shop&source=Slo/checkout&from=${T0 - HOUR}&limit=10`);
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.body.items.map((e: any) => [e.source, e.state, e.severity, e.at]),
      [['Slo/checkout', 'firing', 'page', new Date(T0).toISOString()]],
    );
    assert.equal((await get(`/v1/apm/alerts?namespace=shop&from=${new Date(T0 + 1).toISOString()}`)).body.items.length, 0);
    assert.equal((await get('/v1/apm/alerts?namespace=shop&source=Slo/nothing')).body.items.length, 0);
    // Relative times, as every APM query takes them, by the server's clock (at T0 here).
    assert.equal((await get('/v1/apm/alerts?namespace=shop&from=-1h')).body.items.length, 1);
    assert.equal((await get('/v1/apm/alerts?namespace=shop&from=now')).body.items.length, 1, 'an event at the very instant is in');
  });

  it('answers the contention report', async () => {
    const r = await get(`/v1/apm/contention?namespace=shop&from=${T0 - MINUTE}&to=${T0}`);
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.body.services.map((x: any) => [x.service, x.overBudget, x.consumers.map((c: any) => c.consumer)]),
      [['pricing', true, ['cart']]],
    );
    const relative = await get('/v1/apm/contention?namespace=shop&from=-1m&to=now');
    assert.deepEqual([relative.body.fromMs, relative.body.toMs], [T0 - MINUTE, T0]);
    assert.deepEqual(relative.body.services, r.body.services);
  });

  it('refuses what RBAC does not grant, and audits the denial', async () => {
    const r = await get('/v1/apm/slos/other/hidden');
    assert.equal(r.status, 403);
    assert.equal(r.type, 'application/problem+json');
    assert.equal(r.body.code, 'forbidden');
    assert.equal((await get('/v1/apm/alerts?namespace=other')).status, 403);
    assert.equal((await get('/v1/apm/contention?namespace=other')).status, 403);
    assert.deepEqual(
      denied.map((d) => [d.action, d.kind, d.namespace]),
      [
        ['get', 'Slo', 'other'],
        ['list', 'AlertRule', 'other'],
        ['list', 'Trace', 'other'],
      ],
    );
    assert.equal((await get('/v1/apm/slos', 'nobody')).status, 401);
  });

  it('answers problems with stable codes for bad requests', async () => {
    assert.equal((await get('/v1/apm/slos/shop/missing')).body.code, 'not_found');
    assert.equal((await get('/v1/apm/alerts?from=yesterday')).body.code, 'invalid_parameter');
    assert.equal((await get('/v1/apm/alerts?from=-1h&from=-2h')).body.code, 'invalid_parameter');
    assert.equal((await get('/v1/apm/contention?namespace=shop&to=-1fortnight')).body.code, 'invalid_parameter');
    assert.equal((await get('/v1/apm/alerts?limit=0')).body.code, 'invalid_parameter');
    assert.equal((await get('/v1/apm/alerts?source=orders')).body.code, 'invalid_parameter');
    assert.equal((await get('/v1/apm/contention')).body.code, 'invalid_parameter');
    assert.equal((await get(`/v1/apm/contention?namespace=shop&from=${T0}&to=${T0 - 1}`)).body.code, 'invalid_parameter');
  });
});
