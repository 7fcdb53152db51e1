import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TrafficPolicySpec, type Resource, type TrafficPolicySpec as TP } from '@plinth/core';
import { EndpointSet } from '../balancing/endpoints.js';
import { createControlPlaneClient } from '../control-plane-client.js';
import { TestControlPlane, until } from '../testing/control-plane.js';
import { compileTarget, endpointMatcher, pathOf, requestMatches } from './match.js';
import { controlPlaneGovernance, GOVERNANCE_KINDS, StaticGovernance } from './source.js';
import { CompiledTraffic } from './traffic.js';

function policy(name: string, spec: unknown): Resource<TP> {
  return {
    apiVersion: 'plinth.dev/v1',
    kind: 'TrafficPolicy',
    metadata: { namespace: 'retail', name, labels: {}, revision: 1, createdAt: '', updatedAt: '' },
    spec: TrafficPolicySpec.parse(spec),
  } as unknown as Resource<TP>;
}

test('endpoint patterns: exact, one segment, any suffix; trailing slash ignored', () => {
  const exact = endpointMatcher('/orders');
  assert.ok(exact('/orders') && exact('/orders/'));
  assert.ok(!exact('/orders/1') && !exact('/order'));
  const one = endpointMatcher('/orders/*');
  assert.ok(one('/orders/1') && one('/orders/abc/'));
  assert.ok(!one('/orders') && !one('/orders/1/items'));
  const any = endpointMatcher('/orders/**');
  assert.ok(any('/orders') && any('/orders/1') && any('/orders/1/items'));
  assert.ok(!any('/ordersx') && !any('/cart'));
  assert.ok(endpointMatcher('/**')('/anything/at/all'));
});

test('targets match method, endpoint and caller; an absent list matches everything', () => {
  const t = compileTarget({ service: 'orders', endpoints: ['/orders', '/orders/*'], methods: ['POST'], callers: ['web'] });
  assert.ok(t.matches('POST', '/orders', 'web'));
  assert.ok(t.matches('POST', '/orders/7', 'web'));
  assert.ok(!t.matches('GET', '/orders', 'web'), 'method');
  assert.ok(!t.matches('POST', '/orders', 'batch'), 'caller');
  assert.ok(!t.matches('POST', '/orders', undefined), 'edge traffic has no caller');
  assert.ok(!t.matches('POST', '/carts', 'web'), 'endpoint');
  assert.ok(compileTarget({ service: 'orders' }).matches('DELETE', '/x', undefined));
});

test('request matches: headers case-insensitively, cookies, path, methods; all must hold', () => {
  const m = { headers: { 'X-Canary': { exact: '1' } }, cookies: { lane: { prefix: 'gr' } }, path: { regex: '/checkout/\\d+' }, methods: ['GET' as const] };
  const req = { method: 'GET', path: '/checkout/42', headers: { 'x-canary': '1', cookie: 'a=b; lane=gray' } };
  assert.ok(requestMatches(m, req));
  assert.ok(!requestMatches(m, { ...req, method: 'POST' }));
  assert.ok(!requestMatches(m, { ...req, path: '/checkout/42/x' }), 'regexes are anchored');
  assert.ok(!requestMatches(m, { ...req, headers: { 'x-canary': '1' } }), 'cookie missing');
  assert.ok(requestMatches(undefined, req));
  assert.equal(pathOf('/a/b?x=1#f'), '/a/b');
  assert.equal(pathOf('/a#f'), '/a');
  assert.equal(pathOf('/a'), '/a');
});

test('lane entry: first matching rule wins; sticky user percentage; weight draws only after other conditions', () => {
  const ct = new CompiledTraffic([
    policy('p', {
      lanes: [
        { name: 'gray', services: ['orders'], entry: [{ match: { headers: { 'x-lane': { exact: 'gray' } } } }, { userIdHashPercent: 50 }] },
        { name: 'blue', services: ['orders'], entry: [{ match: { path: { prefix: '/blue' } }, weight: 30 }] },
      ],
    }),
  ]);
  const req = (headers: Record<string, string>, userId?: string, path = '/') => ({ method: 'GET', path, headers, userId });
  assert.equal(ct.enter(req({ 'x-lane': 'gray' })), 'gray');
  assert.equal(ct.enter(req({})), undefined, 'no rule matches');
  // Sticky: the same user always gets the same answer, and roughly half of the users enter.
  let entered = 0;
  for (let i = 0; i < 2000; i++) {
    const a = ct.enter(req({}, `user-${i}`));
    assert.equal(ct.enter(req({}, `user-${i}`)), a);
    if (a === 'gray') entered++;
  }
  assert.ok(entered > 850 && entered < 1150, `about half of users enter gray (${entered})`);
  let draws = 0;
  const rnd = () => (draws++, 0.1);
  assert.equal(ct.enter(req({}, undefined, '/other'), rnd), undefined);
  assert.equal(draws, 0, 'no random draw for a request failing the match');
  assert.equal(ct.enter(req({}, undefined, '/blue/x'), rnd), 'blue');
  assert.equal(ct.enter(req({}, undefined, '/blue/x'), () => 0.5), undefined, '30% weight: a 0.5 draw stays in base');
});

test('candidates: lane instances, base fallback, strict lanes, undeclared lanes', () => {
  const set = EndpointSet.fromInstances([
    ['o-base', { service: 'orders', version: '1', address: 'http://127.0.0.1:1' }],
    ['o-gray', { service: 'orders', version: '2', address: 'http://127.0.0.1:2', lane: 'gray' }],
  ]);
  const payments = EndpointSet.fromInstances([['p-base', { service: 'payments', version: '1', address: 'http://127.0.0.1:3' }]]);
  const ct = new CompiledTraffic([
    policy('p', {
      lanes: [
        { name: 'gray', services: ['orders', 'payments'] },
        { name: 'strict', services: ['payments'], mode: 'strict' },
      ],
    }),
  ]);
  const ids = (l: ReturnType<CompiledTraffic['candidates']>) => l?.items.map((e) => e.id);
  assert.deepEqual(ids(ct.candidates(set, 'orders', 'gray')), ['o-gray']);
  assert.deepEqual(ids(ct.candidates(set, 'orders', undefined)), ['o-base']);
  assert.deepEqual(ids(ct.candidates(payments, 'payments', 'gray')), ['p-base'], 'fallbackToBase');
  assert.equal(ct.candidates(payments, 'payments', 'strict'), undefined, 'strict lane without instances');
  assert.deepEqual(ids(ct.candidates(set, 'orders', 'strict')), ['o-base'], 'a strict lane that does not list the callee uses base');
  assert.deepEqual(ids(ct.candidates(set, 'orders', 'unknown')), ['o-base'], 'undeclared lane without instances');
  assert.equal(ct.candidates(set, 'orders', 'gray'), ct.candidates(set, 'orders', 'gray'), 'same list object every call');
});

test('several policies merge in name order: first lane / LB entry wins, routes concatenate, trusted keys by subject', () => {
  const ct = new CompiledTraffic([
    policy('b', {
      loadBalancing: [{ service: 'carts', policy: 'roundRobin' }, { service: '*', policy: 'weighted' }],
      routing: [{ service: 'orders', splits: [{ version: '1', weight: 100 }] }],
    }),
    policy('a', {
      loadBalancing: [{ service: 'carts', policy: 'consistentHash', hashKey: { source: 'header', name: 'x-user' } }],
      routing: [{ service: 'orders', match: { headers: { 'x-canary': { exact: '1' } } }, splits: [{ version: '2', weight: 100 }] }],
      trustedIdentities: [{ subject: { kind: 'ServiceAccount', namespace: 'retail', name: 'loadgen' }, baggageKeys: ['plinth.stress'] }],
    }),
  ]);
  assert.equal(ct.loadBalancingFor('carts').policy, 'consistentHash');
  assert.equal(ct.loadBalancingFor('other').policy, 'weighted', '"*" entry');
  assert.equal(CompiledTraffic.empty.loadBalancingFor('x').policy, 'p2c', 'p2c by default');
  assert.deepEqual(ct.routesFor('orders').map((r) => r.splits[0]?.version), ['2', '1']);
  assert.deepEqual(ct.trustedKeys({ kind: 'ServiceAccount', namespace: 'retail', name: 'loadgen' }), ['plinth.stress']);
  assert.deepEqual(ct.trustedKeys({ kind: 'ServiceAccount', namespace: 'other', name: 'loadgen' }), []);
  assert.deepEqual(ct.trustedKeys(undefined), []);
});

test('StaticGovernance: version moves on every set, endpoint sets are cached per service until instances change', () => {
  const g = new StaticGovernance();
  let changes = 0;
  const off = g.onChange(() => changes++);
  const v0 = g.version;
  g.set({ instances: [{ metadata: { name: 'a' }, spec: { service: 'orders', version: '1', address: 'http://127.0.0.1:1' } }] });
  assert.ok(g.version > v0);
  const s1 = g.endpoints('orders');
  assert.equal(s1.size, 1);
  assert.equal(g.endpoints('orders'), s1);
  assert.equal(g.endpoints('nobody'), EndpointSet.empty);
  g.set({ faultTolerance: [] });
  assert.equal(g.endpoints('orders'), s1, 'unrelated change keeps the set');
  g.set({ instances: [] });
  assert.equal(g.endpoints('orders').size, 0);
  assert.equal(changes, 3);
  off();
  g.set({ instances: [] });
  assert.equal(changes, 3);
});

test('controlPlaneGovernance follows a real server: instances and policies arrive, changes bump the version', async (t) => {
  const s = await TestControlPlane.start();
  t.after(() => s.destroy());
  const cp = createControlPlaneClient({ url: s.url, token: s.token, kinds: GOVERNANCE_KINDS, namespace: 'retail' });
  t.after(() => cp.close());
  const g = controlPlaneGovernance(cp, 'retail');
  t.after(() => g.close());
  await cp.ready;
  assert.equal(g.endpoints('orders').size, 0);
  await s.api('PUT', '/v1/resources/Instance/retail/orders-1', { spec: { service: 'orders', version: '1.0.0', address: 'http://127.0.0.1:9001', lane: 'gray' } });
  await until(() => g.endpoints('orders').size === 1, 'instance seen');
  assert.equal(g.endpoints('orders').lane('gray')?.size, 1);
  await s.api('PUT', '/v1/resources/TrafficPolicy/retail/lanes', { spec: { lanes: [{ name: 'gray', services: ['orders'] }] } });
  await until(() => g.trafficPolicies().length === 1, 'policy seen');
  const before = g.version;
  let bumps = 0;
  g.onChange(() => bumps++);
  await s.api('DELETE', '/v1/resources/Instance/retail/orders-1');
  await until(() => g.endpoints('orders').size === 0, 'instance gone');
  assert.ok(g.version > before);
  assert.ok(bumps >= 1);
});
