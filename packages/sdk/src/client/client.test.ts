/**
 * The outbound client against real HTTP upstreams on loopback (node:http servers started per test), with
 * StaticGovernance holding real Instance specs that point at them.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { parseBaggage } from '../balancing/baggage.js';
import { newTraceContext, parseTraceparent } from '../balancing/traceparent.js';
import { runWithContext, type RequestContext } from '../context.js';
import { ManualClock, monotonicClock } from '../ratelimit/clock.js';
import { createClient, type ClientOptions, type ServiceClient } from './client.js';
import { CallError } from './errors.js';
import { ft, governance, instance, RecordingWheel, status, tp, until, Upstream } from './testkit.test.helpers.js';

const upstreams: Upstream[] = [];
const clients: ServiceClient[] = [];
after(async () => {
  for (const c of clients) await c.close();
  for (const u of upstreams) await u.close();
});

async function up(handler?: Parameters<typeof Upstream.start>[0]): Promise<Upstream> {
  const u = await Upstream.start(handler);
  upstreams.push(u);
  return u;
}

function client(o: Omit<ClientOptions, 'self'> & { self?: string }): ServiceClient {
  const c = createClient({ self: 'web', ...o });
  clients.push(c);
  return c;
}

async function callError(p: Promise<unknown>): Promise<CallError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof CallError, `expected a CallError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected the call to fail');
}

const RR = tp('lb', { loadBalancing: [{ service: 'orders', policy: 'roundRobin' }] });
/** Round robin starting at the first endpoint (by id), so tests know which instance is tried first. */
const first = () => 0;

const retryRule = (extra: Record<string, unknown> = {}) =>
  ft('retries', { rules: [{ name: 'retry', targets: [{ service: 'orders' }], strategies: [{ type: 'retry', maxAttempts: 3, ...extra }] }] });

describe('lanes', () => {
  it('routes to lane instances, falls back to base, and fails a strict lane with lane_unavailable', async () => {
    const base = await up();
    const gray = await up();
    const gov = governance({
      instances: [instance('a-base', base), instance('b-gray', gray, { lane: 'gray' })],
      trafficPolicies: [
        tp('lanes', {
          lanes: [
            { name: 'gray', services: ['orders'] },
            { name: 'blue', services: ['orders'] },
            { name: 'red', services: ['orders'], mode: 'strict' },
          ],
        }),
      ],
    });
    const c = client({ governance: gov });
    const ctx: RequestContext = { trace: undefined, baggage: parseBaggage('plinth.lane=gray'), deadlineAt: undefined, caller: undefined };
    for (let i = 0; i < 5; i++) assert.equal((await runWithContext(ctx, () => c.request('orders', { path: '/x' }))).endpoint, 'b-gray');
    assert.equal((await c.request('orders', { path: '/x' })).endpoint, 'a-base', 'no lane: base');
    assert.equal((await c.request('orders', { path: '/x', lane: 'blue' })).endpoint, 'a-base', 'blue has no instance: base');
    assert.equal(gray.received.at(-1)?.headers['baggage'], 'plinth.lane=gray');
    const before = base.count + gray.count;
    const err = await callError(c.request('orders', { path: '/x', lane: 'red' }));
    assert.equal(err.code, 'lane_unavailable');
    assert.equal(err.status, 503);
    assert.equal(base.count + gray.count, before, 'nothing was sent');
    assert.equal((await callError(c.request('nobody', { path: '/' }))).code, 'no_endpoint');
  });
});

describe('version routing', () => {
  it('splits by weight and by header match', async () => {
    const v1 = await up();
    const v2 = await up();
    const instances = [instance('stable', v1, { metadata: { track: 'stable' } }), instance('canary', v2, { version: '2.0.0' })];
    const policy = tp('routes', {
      routing: [
        { service: 'orders', match: { headers: { 'x-canary': { exact: '1' } } }, splits: [{ version: '2.0.0', weight: 100 }] },
        { service: 'orders', splits: [{ version: '2.0.0', weight: 10 }, { labels: { track: 'stable' }, weight: 90 }] },
      ],
    });
    const low = client({ governance: governance({ instances, trafficPolicies: [policy] }), random: () => 0.05 });
    const high = client({ governance: governance({ instances, trafficPolicies: [policy] }), random: () => 0.5 });
    for (let i = 0; i < 4; i++) {
      assert.equal((await low.request('orders', { path: '/' })).endpoint, 'canary', 'a draw under 10 takes the 10% split');
      assert.equal((await high.request('orders', { path: '/' })).endpoint, 'stable', 'a draw at 50 takes the 90% split');
      assert.equal((await high.request('orders', { path: '/', headers: { 'X-Canary': '1' } })).endpoint, 'canary', 'header route');
    }
  });
});

describe('load balancing', () => {
  it('p2c by default spreads calls; consistentHash on a header keeps a key on one instance', async () => {
    const ups = [await up(), await up(), await up()];
    const instances = ups.map((u, i) => instance(`i${i}`, u));
    const p2c = client({ governance: governance({ instances }) });
    const seen = new Set<string | undefined>();
    for (let i = 0; i < 30; i++) seen.add((await p2c.request('orders', { path: '/' })).endpoint);
    assert.ok(seen.size >= 2, `p2c used ${seen.size} instance(s)`);

    const hashed = client({
      governance: governance({ instances, trafficPolicies: [tp('lb', { loadBalancing: [{ service: 'orders', policy: 'consistentHash', hashKey: { source: 'header', name: 'x-user' } }] })] }),
    });
    const homes = new Set<string | undefined>();
    for (let u = 0; u < 12; u++) {
      const picks = new Set<string | undefined>();
      for (let i = 0; i < 4; i++) picks.add((await hashed.request('orders', { path: '/', headers: { 'x-user': `user-${u}` } })).endpoint);
      assert.equal(picks.size, 1, `user-${u} stayed on one instance`);
      homes.add([...picks][0]);
    }
    assert.ok(homes.size >= 2, 'different keys spread over instances');
  });
});

describe('propagation', () => {
  it('sends a child traceparent, the baggage, the shrunk deadline, the caller and the idempotency key', async () => {
    const u = await up();
    const c = client({ governance: governance({ instances: [instance('a', u)] }) });
    const trace = newTraceContext();
    const ctx: RequestContext = {
      trace,
      baggage: parseBaggage('plinth.lane=gray,plinth.stress=1,user.id=u-42'),
      deadlineAt: monotonicClock.now() + 1000,
      caller: 'edge',
    };
    await new Promise((r) => setTimeout(r, 2)); // time passes on this hop before it calls out
    const res = await runWithContext(ctx, () => c.request('orders', { method: 'post', path: '/orders?x=1', body: '{"a":1}', idempotencyKey: 'k-1', headers: { traceparent: 'bogus' } }));
    assert.equal(res.status, 200);
    const got = u.received[0];
    assert.ok(got);
    assert.equal(got.method, 'POST');
    assert.equal(got.url, '/orders?x=1');
    assert.equal(got.body, '{"a":1}');
    const tpH = parseTraceparent(got.headers['traceparent'] as string);
    assert.equal(tpH?.traceId, trace.traceId);
    assert.notEqual(tpH?.spanId, trace.spanId);
    const bag = parseBaggage(got.headers['baggage']);
    assert.equal(bag.get('plinth.lane')?.value, 'gray');
    assert.equal(bag.get('plinth.stress')?.value, '1');
    assert.equal(bag.get('user.id')?.value, 'u-42');
    const budget = Number(got.headers['plinth-timeout-ms']);
    assert.ok(budget > 0 && budget < 1000, `plinth-timeout-ms ${budget}`);
    assert.equal(got.headers['plinth-caller'], 'web');
    assert.equal(got.headers['idempotency-key'], 'k-1');
  });

  it('does not send a call whose deadline already passed', async () => {
    const u = await up();
    const clock = new ManualClock(10_000);
    const c = client({ governance: governance({ instances: [instance('a', u)] }), clock, wheel: new RecordingWheel({ clock }) });
    const ctx: RequestContext = { trace: undefined, baggage: new Map(), deadlineAt: 9_999, caller: undefined };
    const err = await callError(runWithContext(ctx, () => c.request('orders', { path: '/' })));
    assert.equal(err.code, 'deadline_exceeded');
    assert.equal(err.status, 504);
    assert.equal(u.count, 0);
  });
});

describe('retries', () => {
  async function pair() {
    const bad = await up(status(503));
    const good = await up();
    return { bad, good, instances: [instance('a', bad), instance('b', good)] };
  }

  it('retries an idempotent call on another instance; POST only with an Idempotency-Key', async () => {
    const { bad, good, instances } = await pair();
    const make = () => client({ governance: governance({ instances, faultTolerance: [retryRule()], trafficPolicies: [RR] }), random: first, wheel: new RecordingWheel() });

    const get = await make().request('orders', { path: '/' });
    assert.deepEqual([get.status, get.attempts, get.endpoint], [200, 2, 'b']);

    const post = await make().request('orders', { method: 'POST', path: '/' });
    assert.deepEqual([post.status, post.attempts, post.endpoint], [503, 1, 'a'], 'POST without a key is not retried');

    const keyed = await make().request('orders', { method: 'POST', path: '/', idempotencyKey: 'k' });
    assert.deepEqual([keyed.status, keyed.attempts, keyed.endpoint], [200, 2, 'b']);
    assert.equal(good.received.at(-1)?.headers['idempotency-key'], 'k');
    assert.equal(bad.count, 3);
  });

  it("takes a call's own retry tries, with or without a rule, over HTTP", async () => {
    const { instances } = await pair();
    const ONCE = Object.freeze({ maxAttempts: 1, retryOn: [503] });
    const TWICE = Object.freeze({ maxAttempts: 2, retryOn: [503] });
    const ruled = client({ governance: governance({ instances, faultTolerance: [retryRule()], trafficPolicies: [RR] }), random: first, wheel: new RecordingWheel() });
    const once = await ruled.request('orders', { path: '/', retry: ONCE });
    assert.deepEqual([once.status, once.attempts], [503, 1], 'the rule would retry; the call says once');
    const bare = () => client({ governance: governance({ instances, trafficPolicies: [RR] }), random: first, wheel: new RecordingWheel() });
    const plain = await bare().request('orders', { path: '/' });
    assert.deepEqual([plain.status, plain.attempts], [503, 1], 'no rule, no retry');
    const twice = await bare().request('orders', { path: '/', retry: TWICE });
    assert.deepEqual([twice.status, twice.attempts, twice.endpoint], [200, 2, 'b'], 'no rule, and the call asks for a retry');
  });

  it('prefers another instance on a retry, even when the balancer would pick the same one', async () => {
    const { good, instances } = await pair();
    const hashed = tp('lb', { loadBalancing: [{ service: 'orders', policy: 'consistentHash', hashKey: { source: 'header', name: 'x-user' } }] });
    const c = client({ governance: governance({ instances, faultTolerance: [retryRule()], trafficPolicies: [hashed] }), wheel: new RecordingWheel() });
    const attempts: number[] = [];
    for (let u = 0; u < 10; u++) {
      const r = await c.request('orders', { path: '/', headers: { 'x-user': `user-${u}` } });
      assert.deepEqual([r.status, r.endpoint], [200, 'b']);
      attempts.push(r.attempts);
    }
    assert.ok(attempts.includes(2), 'some keys live on the failing instance and were retried elsewhere');
    assert.equal(good.count, 10);
  });

  it('applies a rule only to the endpoints, methods and callers its targets name', async () => {
    const { bad, instances } = await pair();
    const narrow = ft('narrow', {
      rules: [
        { name: 'orders-get', targets: [{ service: 'orders', endpoints: ['/orders/*'], methods: ['GET'] }], strategies: [{ type: 'retry' }] },
        { name: 'mobile-only', targets: [{ service: 'orders', endpoints: ['/mobile/**'], callers: ['mobile'] }], strategies: [{ type: 'retry' }] },
      ],
    });
    const make = () => client({ governance: governance({ instances, faultTolerance: [narrow], trafficPolicies: [RR] }), random: first, wheel: new RecordingWheel() });
    assert.equal((await make().request('orders', { path: '/orders/7?full=1' })).attempts, 2);
    assert.equal((await make().request('orders', { path: '/orders/7/lines' })).attempts, 1, 'one segment only');
    assert.equal((await make().request('orders', { method: 'DELETE', path: '/orders/7' })).attempts, 1, 'GET only');
    assert.equal((await make().request('orders', { path: '/mobile/x' })).attempts, 1, 'another caller');
    assert.equal(bad.count, 4);
  });

  it('honours Retry-After', async () => {
    const u = await up((_q, s, n) => {
      if (n === 1) s.writeHead(503, { 'retry-after': '2' }).end();
      else s.end('ok');
    });
    const wheel = new RecordingWheel();
    const c = client({ governance: governance({ instances: [instance('a', u)], faultTolerance: [retryRule({ backoffBaseMs: 10, backoffCapMs: 100 })] }), wheel });
    const res = await c.request('orders', { path: '/' });
    assert.deepEqual([res.status, res.attempts], [200, 2]);
    assert.deepEqual(wheel.delays, [2000]);
  });

  it('stays within the retry budget against an upstream that always fails', async () => {
    const u = await up(status(503));
    const clock = new ManualClock(1_000_000);
    const wheel = new RecordingWheel({ clock });
    const c = client({
      governance: governance({ instances: [instance('a', u)], faultTolerance: [retryRule({ budgetPercent: 20, minRetriesPerSecond: 1 })] }),
      clock,
      wheel,
    });
    const N = 200;
    for (let i = 0; i < N; i++) assert.equal((await c.request('orders', { path: '/' })).status, 503);
    const floor = 1 * 10; // minRetriesPerSecond × the 10 s budget window
    assert.ok(u.count > N, 'some calls were retried');
    assert.ok(u.count <= N * 1.2 + floor, `upstream saw ${u.count} tries for ${N} calls`);
  });
});

describe('outlier ejection and breakers', () => {
  for (const mode of ['500', 'closes connections'] as const) {
    it(`an instance that ${mode === '500' ? 'answers 500' : 'closes connections'} is ejected and its breaker opens`, async () => {
      const bad = await up(mode === '500' ? status(500) : (q) => q.socket.destroy());
      const ok1 = await up();
      const ok2 = await up();
      const rule = ft('breakers', {
        rules: [{ name: 'cb', targets: [{ service: 'orders' }], strategies: [{ type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 3 }] }],
      });
      const metrics = new Registry();
      const c = client({ governance: governance({ instances: [instance('a', bad), instance('b', ok1), instance('c', ok2)], faultTolerance: [rule], trafficPolicies: [RR] }), random: first, metrics });
      for (let i = 0; i < 12; i++) await c.request('orders', { path: '/' }).catch((e: unknown) => assert.equal((e as CallError).code, 'upstream_error'));
      assert.equal(bad.count, 3, 'the bad instance got calls until its breaker opened');
      const info = c.inspect('orders');
      assert.equal(info.breakers.find((b) => b.upstream === 'a')?.state.kind, 'open');
      assert.deepEqual(info.ejected, ['a']);
      for (let i = 0; i < 10; i++) assert.notEqual((await c.request('orders', { path: '/' })).endpoint, 'a');
      assert.equal(bad.count, 3);
      const text = await metrics.metrics();
      assert.match(text, /plinth_outbound_breaker_state\{callee="orders",endpoint="a"\} 2/);
      assert.match(text, /plinth_outbound_ejections_total\{callee="orders"\} 1/);
      assert.match(text, /plinth_outbound_requests_total\{callee="orders",status_class="2xx",lane="base",stress="false"\} 1[89]/);
    });
  }

  it('serves the fallbackAction while a service breaker is open, and CallError circuit_open without one', async () => {
    const u = await up(status(500));
    const cb = { type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 2, scope: 'service' };
    const withFallback = ft('cb', { rules: [{ name: 'cb', targets: [{ service: 'orders' }], strategies: [cb], fallbackAction: { statusCode: 503, body: 'orders are degraded' } }] });
    const c = client({ governance: governance({ instances: [instance('a', u)], faultTolerance: [withFallback] }) });
    assert.equal((await c.request('orders', { path: '/' })).status, 500);
    assert.equal((await c.request('orders', { path: '/' })).status, 500);
    const fb = await c.request('orders', { path: '/' });
    assert.deepEqual([fb.status, fb.fallback, fb.endpoint, fb.text(), fb.headers['content-type']], [503, true, undefined, 'orders are degraded', 'text/plain; charset=utf-8']);
    assert.equal(u.count, 2, 'the open breaker sent nothing');

    const bare = ft('cb', { rules: [{ name: 'cb', targets: [{ service: 'orders' }], strategies: [cb] }] });
    const c2 = client({ governance: governance({ instances: [instance('a', u)], faultTolerance: [bare] }) });
    await c2.request('orders', { path: '/' });
    await c2.request('orders', { path: '/' });
    const err = await callError(c2.request('orders', { path: '/' }));
    assert.deepEqual([err.code, err.status], ['circuit_open', 503]);
    assert.ok((err.retryAfterMs ?? 0) > 0);
  });

  it('drops the breaker of an instance that leaves the fleet', async () => {
    const a = await up();
    const b = await up();
    const rule = ft('breakers', { rules: [{ name: 'cb', targets: [{ service: 'orders' }], strategies: [{ type: 'circuitBreaker', threshold: 50 }] }] });
    const gov = governance({ instances: [instance('a', a), instance('b', b)], faultTolerance: [rule], trafficPolicies: [RR] });
    const c = client({ governance: gov, random: first });
    await c.request('orders', { path: '/' });
    await c.request('orders', { path: '/' });
    assert.deepEqual(c.inspect('orders').breakers.map((x) => x.upstream).sort(), ['a', 'b']);
    gov.set({ instances: [instance('a', a)] });
    assert.deepEqual(c.inspect('orders').breakers.map((x) => x.upstream), ['a']);
    assert.equal((await c.request('orders', { path: '/' })).endpoint, 'a');
  });
});

describe('timeouts and bulkheads', () => {
  it('aborts a hanging upstream at the per-try timeout through the shared wheel', async () => {
    const u = await up(() => undefined); // never answers
    const rule = ft('timeouts', { rules: [{ name: 't', targets: [{ service: 'orders' }], strategies: [{ type: 'timeout', timeoutMs: 30 }] }] });
    const c = client({ governance: governance({ instances: [instance('a', u)], faultTolerance: [rule] }) });
    const err = await callError(c.request('orders', { path: '/' }));
    assert.deepEqual([err.code, err.status], ['deadline_exceeded', 504]);
    assert.equal(u.count, 1);
  });

  it('refuses a call over the outbound concurrency limit with bulkhead_full', async () => {
    const pending: (() => void)[] = [];
    const u = await up((_q, s) => pending.push(() => s.end('late')));
    const rule = ft('bulkhead', { rules: [{ name: 'b', targets: [{ service: 'orders' }], strategies: [{ type: 'concurrencyLimit', maxConcurrency: 1, side: 'outbound' }] }] });
    const c = client({ governance: governance({ instances: [instance('a', u)], faultTolerance: [rule] }) });
    const firstCall = c.request('orders', { path: '/' });
    await until(() => pending.length === 1, 'the first call to arrive');
    const err = await callError(c.request('orders', { path: '/' }));
    assert.deepEqual([err.code, err.status], ['bulkhead_full', 503]);
    pending[0]?.();
    assert.equal((await firstCall).text(), 'late');
    const again = c.request('orders', { path: '/' });
    await until(() => pending.length === 2, 'a call after the slot was released');
    pending[1]?.();
    assert.equal((await again).status, 200);
  });
});

describe('governance changes', () => {
  it('applies a rule change to the next call: forcing the breaker open, then lifting it', async () => {
    const u = await up();
    const rule = (forcedState?: string) =>
      ft('cb', {
        rules: [
          {
            name: 'cb',
            targets: [{ service: 'orders' }],
            strategies: [{ type: 'circuitBreaker', threshold: 50, scope: 'service', ...(forcedState ? { forcedState } : {}) }],
            fallbackAction: { statusCode: 503, body: 'maintenance' },
          },
        ],
      });
    const gov = governance({ instances: [instance('a', u)], faultTolerance: [rule()] });
    const c = client({ governance: gov });
    assert.equal((await c.request('orders', { path: '/' })).status, 200);
    gov.set({ faultTolerance: [rule('open')] });
    const fb = await c.request('orders', { path: '/' });
    assert.deepEqual([fb.status, fb.fallback, fb.text()], [503, true, 'maintenance']);
    gov.set({ faultTolerance: [rule()] });
    assert.equal((await c.request('orders', { path: '/' })).status, 200);
    assert.equal(u.count, 2);
  });
});

describe('connection pools', () => {
  it('opens a new pool for an address that left the fleet and came back', async () => {
    const u = await up();
    const v = await up();
    const gov = governance({ instances: [instance('a', u)] });
    const c = client({ governance: gov });
    assert.equal((await c.request('orders', { path: '/one' })).status, 200);
    gov.set({ instances: [instance('b', v)] });
    assert.equal(c.inspect('orders').endpoints, 1, 'the client saw a leave (and closed its pool)');
    gov.set({ instances: [instance('a', u)] });
    const r = await c.request('orders', { path: '/two' });
    assert.deepEqual([r.status, r.endpoint], [200, 'a']);
    assert.deepEqual(
      u.received.map((x) => x.url),
      ['/one', '/two'],
    );
  });
});
