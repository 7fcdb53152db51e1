import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, beforeEach, describe, it } from 'node:test';
import { StaticGovernance } from '../governance/source.js';
import { InboundMetrics } from '../inbound/metrics.js';
import { faultInjection, faultTolerance, trafficPolicy } from '../inbound/testkit.test.helpers.js';
import { ManualClock } from '../ratelimit/clock.js';
import { TimerWheel } from '../resilience/timer-wheel.js';
import type { PlinthOptions } from './runtime.js';
import { ADAPTERS, type App, type Hooks } from './testkit.test.helpers.js';

const PARENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = `00-${PARENT_TRACE}-00f067aa0ba902b7-01`;

/** Waits for a condition driven by real I/O on loopback; bounded by turns, asserting nothing about time. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 5000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  assert.fail(`never happened: ${what}`);
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

interface Ctx {
  traceId: string | null;
  spanId: string | null;
  baggage: Record<string, string> | null;
  deadlineAt: number | null;
  caller: string | null;
  body: unknown;
}

const rateRule = (threshold: number, more: Record<string, unknown> = {}, fallbackAction?: { statusCode: number; body?: string; headers?: Record<string, string> }) =>
  faultTolerance('protect', {
    rules: [{ name: 'rl', targets: [{ service: 'orders', endpoints: ['/ctx/*'] }], strategies: [{ type: 'rateLimit', threshold, ...more }], ...(fallbackAction ? { fallbackAction } : {}) }],
  });

for (const adapter of ADAPTERS) {
  describe(`${adapter.name} adapter`, () => {
    const governance = new StaticGovernance();
    const clock = new ManualClock(1_000_000);
    const wheel = new TimerWheel({ clock, schedule: () => ({}) });
    const metrics = new InboundMetrics();
    const hooks: Hooks = { entered: 0, held: [] };
    let draw = 0.5;
    let app: App;
    let edge: App;

    const options = (over: Partial<PlinthOptions> = {}): PlinthOptions => ({ service: 'orders', governance, clock, wheel, metrics, random: () => draw, ...over });
    const get = (path: string, headers: Record<string, string> = {}, base = app) => fetch(base.url + path, { headers });
    const ctxOf = async (res: Response): Promise<Ctx> => {
      assert.equal(res.status, 200, await res.clone().text());
      return (await res.json()) as Ctx;
    };

    before(async () => {
      app = await adapter.start(options(), hooks);
      edge = await adapter.start(options({ trust: 'edge', metrics: new InboundMetrics() }), hooks);
    });
    after(async () => {
      await app.close();
      await edge.close();
    });
    beforeEach(() => {
      governance.set({ faultTolerance: [], faultInjections: [], trafficPolicies: [] });
      hooks.entered = 0;
      draw = 0.5;
    });

    it('continues the trace, exposes baggage, caller and deadline through currentContext()', async () => {
      const ctx = await ctxOf(await get('/ctx/1', { traceparent: PARENT, baggage: 'plinth.lane=gray,biz=1', 'plinth-caller': 'web', 'plinth-timeout-ms': '1500' }));
      assert.equal(ctx.traceId, PARENT_TRACE);
      assert.notEqual(ctx.spanId, '00f067aa0ba902b7');
      assert.deepEqual(ctx.baggage, { 'plinth.lane': 'gray', biz: '1' });
      assert.equal(ctx.caller, 'web');
      assert.equal(ctx.deadlineAt, clock.now() + 1500);
    });

    it('keeps the context across body parsing, with the body arriving in separate packets', async () => {
      // The second half arrives after the server has started reading: its 'data' and 'end' events run on
      // the socket's async context, not the request's, which is where fastify loses AsyncLocalStorage.
      const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const r = request(`${app.url}/ctx/2`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '7', traceparent: PARENT } }, (m) => {
          let body = '';
          m.setEncoding('utf8');
          m.on('data', (c: string) => (body += c));
          m.on('end', () => resolve({ status: m.statusCode ?? 0, body }));
        });
        r.on('error', reject);
        r.flushHeaders();
        r.write('{"a":');
        setTimeout(() => r.end('1}'), 20);
      });
      assert.equal(res.status, 200, res.body);
      const ctx = JSON.parse(res.body) as Ctx;
      assert.equal(ctx.traceId, PARENT_TRACE);
      assert.deepEqual(ctx.body, { a: 1 });
    });

    it('enters a lane from the TrafficPolicy entry rules', async () => {
      governance.set({ trafficPolicies: [trafficPolicy('lanes', { lanes: [{ name: 'gray', services: ['orders'], entry: [{ match: { headers: { 'x-lane': { exact: 'gray' } } } }] }] })] });
      assert.equal((await ctxOf(await get('/ctx/1', { 'x-lane': 'gray' }))).baggage?.['plinth.lane'], 'gray');
      assert.equal((await ctxOf(await get('/ctx/1'))).baggage?.['plinth.lane'], undefined);
    });

    it('edge mode strips internal baggage but keeps the keys trusted for an identity', async () => {
      governance.set({
        trafficPolicies: [trafficPolicy('trust', { trustedIdentities: [{ subject: { kind: 'ServiceAccount', namespace: 'retail', name: 'loadgen' }, baggageKeys: ['plinth.stress', 'plinth.lane'] }] })],
      });
      const baggage = 'plinth.lane=gray,plinth.stress=1,biz=1';
      assert.deepEqual((await ctxOf(await get('/ctx/1', { baggage, 'plinth-caller': 'web' }, edge))).baggage, { biz: '1' });
      assert.deepEqual((await ctxOf(await get('/ctx/1', { baggage, 'x-test-identity': 'ServiceAccount:retail/loadgen' }, edge))).baggage, {
        'plinth.lane': 'gray',
        'plinth.stress': '1',
        biz: '1',
      });
    });

    it('answers a rate limit with 429 problem+json, Retry-After and RateLimit headers', async () => {
      governance.set({ faultTolerance: [rateRule(1)] });
      assert.equal((await get('/ctx/1')).status, 200);
      const res = await get('/ctx/1');
      assert.equal(res.status, 429);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.equal(res.headers.get('retry-after'), '1');
      assert.equal(res.headers.get('ratelimit-policy'), '"rl";q=1;w=1');
      assert.match(res.headers.get('ratelimit') ?? '', /^"rl";r=0;t=1$/);
      assert.equal(((await res.json()) as { code: string }).code, 'rate_limited');
      assert.equal(hooks.entered, 1, 'the handler never ran for the refused request');
    });

    it('serves the fallbackAction, and a pushed rule change applies to the next request', async () => {
      governance.set({ faultTolerance: [rateRule(1, {}, { statusCode: 503, body: 'busy', headers: { 'x-why': 'limit' } })] });
      await get('/ctx/1');
      const res = await get('/ctx/1');
      assert.deepEqual([res.status, await res.text(), res.headers.get('x-why'), res.headers.get('content-type')], [503, 'busy', 'limit', 'text/plain; charset=utf-8']);
      governance.set({ faultTolerance: [rateRule(100)] });
      assert.equal((await get('/ctx/1')).status, 200);
    });

    it('limits per header key separately', async () => {
      governance.set({ faultTolerance: [rateRule(1, { key: { source: 'header', header: 'x-tenant' } })] });
      const statuses = [];
      for (const t of ['a', 'a', 'b', 'b']) statuses.push((await get('/ctx/1', { 'x-tenant': t })).status);
      assert.deepEqual(statuses, [200, 429, 200, 429]);
    });

    it('refuses with 429 concurrency_limited while the limit is full, and frees the slot when the response ends', async () => {
      governance.set({ faultTolerance: [faultTolerance('conc', { rules: [{ name: 'cl', targets: [{ service: 'orders', endpoints: ['/hold/*', '/ctx/*'] }], strategies: [{ type: 'concurrencyLimit', maxConcurrency: 1 }] }] })] });
      const first = get('/hold/1');
      await until(() => hooks.held.length === 1, 'first request held');
      const second = await get('/ctx/1');
      assert.equal(second.status, 429);
      assert.equal(((await second.json()) as { code: string }).code, 'concurrency_limited');
      hooks.held.shift()!();
      assert.equal(await (await first).text(), 'held');
      assert.equal((await get('/ctx/1')).status, 200);
    });

    it('injects an abort by percentage (drawn from the injected random)', async () => {
      governance.set({ faultInjections: [faultInjection('chaos', { rules: [{ name: 'f', targets: [{ service: 'orders' }], abort: { statusCode: 503, percentage: 40 } }] })] });
      draw = 0.3;
      const res = await get('/ctx/1');
      assert.equal(res.status, 503);
      assert.equal(((await res.json()) as { code: string }).code, 'fault_injected');
      draw = 0.5;
      assert.equal((await get('/ctx/1')).status, 200);
    });

    it('injects an abort only in the matched lane, and ignores an expired experiment', async () => {
      governance.set({ faultInjections: [faultInjection('chaos', { rules: [{ name: 'f', targets: [{ service: 'orders' }], match: { lanes: ['gray'] }, abort: { statusCode: 500, body: 'gray down' } }] })] });
      const gray = await get('/ctx/1', { baggage: 'plinth.lane=gray', 'plinth-caller': 'web' });
      assert.deepEqual([gray.status, await gray.text()], [500, 'gray down']);
      assert.equal((await get('/ctx/1')).status, 200);
      governance.set({ faultInjections: [faultInjection('old', { expiresAt: '2001-01-01T00:00:00Z', rules: [{ name: 'f', targets: [{ service: 'orders' }], abort: { statusCode: 500 } }] })] });
      assert.equal((await get('/ctx/1')).status, 200);
    });

    it('applies an injected delay on the timer wheel before the handler runs', async () => {
      governance.set({ faultInjections: [faultInjection('slow', { rules: [{ name: 'f', targets: [{ service: 'orders' }], delay: { fixedDelayMs: 300 } }] })] });
      const pending = get('/ctx/1');
      await until(() => wheel.size === 1, 'the delay is on the wheel');
      clock.advance(299);
      wheel.advance();
      await turns(20);
      assert.equal(hooks.entered, 0, 'still waiting at 299 ms');
      clock.advance(1);
      wheel.advance();
      assert.equal((await pending).status, 200);
      assert.equal(hooks.entered, 1);
    });

    it('exposes RED metrics by route template, with pressure-test traffic labelled apart', async () => {
      await ctxOf(await get('/ctx/123', { baggage: 'plinth.stress=1', 'plinth-caller': 'loadgen' }));
      await ctxOf(await get('/ctx/456'));
      await get('/nope/789');
      const text = await (await get('/metrics')).text();
      const line = (stress: string) => new RegExp(`plinth_inbound_requests_total\\{service="orders",method="GET",route="/ctx/:id",status_class="2xx",lane="base",stress="${stress}"\\} \\d+`);
      assert.match(text, line('true'));
      assert.match(text, line('false'));
      assert.match(text, /plinth_inbound_requests_total\{service="orders",method="GET",route="other",status_class="4xx"/);
      assert.doesNotMatch(text, /\/ctx\/123|\/nope\/789/, 'never a raw path');
      assert.match(text, /plinth_inbound_request_duration_seconds_bucket\{/);
    });

    it('survives malformed headers: bad traceparent, huge baggage, negative timeout', async () => {
      const huge = Array.from({ length: 600 }, (_, i) => `k${i}=${'v'.repeat(12)}`).join(',');
      const ctx = await ctxOf(await get('/ctx/1', { traceparent: '00-zz-yy-01', baggage: huge, 'plinth-timeout-ms': '-5', 'plinth-caller': '../../etc' }));
      assert.match(ctx.traceId ?? '', /^[0-9a-f]{32}$/);
      assert.equal(ctx.deadlineAt, null);
      assert.equal(ctx.caller, null);
      assert.ok(Object.keys(ctx.baggage ?? {}).length > 0);
    });
  });
}
