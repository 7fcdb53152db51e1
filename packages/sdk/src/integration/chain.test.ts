/**
 * The engine end to end, as product teams use it: three services (web → orders → payments), each a real
 * `createService` process member with the inbound middleware and the outbound client, discovering each other
 * through a REAL plinth server. The lane, the pressure-test mark, the trace and the shrinking deadline must
 * follow the chain without any handler passing them on; rules pushed to the server take effect live; and
 * when the control plane dies, calls keep flowing on the last snapshot.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { getLane, isStress } from '../balancing/baggage.js';
import { createClient, type ServiceClient } from '../client/index.js';
import { currentContext } from '../context.js';
import { plinth } from '../middleware/index.js';
import { monotonicClock } from '../ratelimit/clock.js';
import { remainingMs } from '../resilience/deadline.js';
import { createService, type Service } from '../runtime/index.js';
import { TestControlPlane, recordingLogger, until } from '../testing/control-plane.js';

const NS = 'chain';

interface Hop {
  service: string;
  instance: string;
  lane: string | null;
  stress: boolean;
  remainingMs: number | null;
  traceId: string | null;
  next?: Hop;
}

let cp: TestControlPlane;
const services: Service[] = [];
const clients: ServiceClient[] = [];
let webPort = 0;

async function start(name: string, lane: string | undefined, callee: string | undefined, trust: 'edge' | 'mesh'): Promise<Service> {
  const svc = createService({
    name,
    version: lane === undefined ? '1.0.0' : '1.1.0',
    namespace: NS,
    ...(lane === undefined ? {} : { lane }),
    instanceId: `${name}-${lane ?? 'base'}`,
    controlPlane: { url: cp.url, token: cp.token },
    deregisterDelayMs: 0,
    drainTimeoutMs: 1000,
    handleSignals: false,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: recordingLogger(),
  });
  services.push(svc);
  const client = callee === undefined ? undefined : createClient({ self: name, governance: svc.governance });
  if (client) clients.push(client);
  const instance = `${name}-${lane ?? 'base'}`;
  const handler = async (_req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const ctx = currentContext();
    const hop: Hop = {
      service: name,
      instance,
      lane: ctx ? (getLane(ctx.baggage) ?? null) : null,
      stress: ctx ? isStress(ctx.baggage) : false,
      remainingMs: ctx?.deadlineAt === undefined ? null : remainingMs(ctx.deadlineAt, monotonicClock.now()),
      traceId: ctx?.trace?.traceId ?? null,
    };
    let status = 200;
    if (client && callee) {
      // The handler passes nothing along: lane, stress mark, trace and deadline come from the context.
      const r = await client.request(callee, { method: 'GET', path: '/work' });
      status = r.status;
      if (r.status === 200) hop.next = r.json<Hop>();
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(hop));
  };
  const { port } = await svc.listen(
    plinth(handler, {
      service: name,
      governance: svc.governance,
      trust,
      identify: (req) => (typeof req.headers['x-test-identity'] === 'string' ? req.headers['x-test-identity'] : undefined),
    }),
  );
  if (name === 'web') webPort = port;
  return svc;
}

async function callWeb(headers: Record<string, string> = {}): Promise<{ status: number; hop: Hop | undefined; text: string }> {
  const res = await request(`http://127.0.0.1:${webPort}/checkout`, { headers });
  const text = await res.body.text();
  return { status: res.statusCode, hop: res.statusCode === 200 ? (JSON.parse(text) as Hop) : undefined, text };
}

function path(h: Hop | undefined): string[] {
  const out: string[] = [];
  for (let x = h; x; x = x.next) out.push(x.instance);
  return out;
}

describe('a three-service chain on a real control plane', () => {
  before(async () => {
    cp = await TestControlPlane.start();
    await cp.api('PUT', `/v1/resources/TrafficPolicy/${NS}/lanes`, {
      spec: {
        lanes: [{ name: 'gray', services: ['orders', 'payments'], entry: [{ match: { headers: { 'x-lane': { exact: 'gray' } } } }] }],
        trustedIdentities: [{ subject: { kind: 'ServiceAccount', namespace: NS, name: 'loadgen' }, baggageKeys: ['plinth.stress'] }],
      },
    });
    await start('payments', undefined, undefined, 'mesh');
    await start('payments', 'gray', undefined, 'mesh');
    await start('orders', undefined, 'payments', 'mesh');
    await start('orders', 'gray', 'payments', 'mesh');
    await start('web', undefined, 'orders', 'edge');
    await until(() => services.every((s) => s.ready), 'every service ready', 20_000);
    await until(() => services.every((s) => s.governance.endpoints('orders').size === 2 && s.governance.endpoints('payments').size === 2), 'every instance discovered', 20_000);
  });

  after(async () => {
    for (const c of clients) await c.close();
    for (const s of services) await s.shutdown('test over').catch(() => undefined);
    await cp.destroy();
  });

  test('untagged traffic stays in the base lane end to end; one trace across the hops', async () => {
    const { status, hop } = await callWeb();
    assert.equal(status, 200);
    assert.deepEqual(path(hop), ['web-base', 'orders-base', 'payments-base']);
    const traces = new Set([hop?.traceId, hop?.next?.traceId, hop?.next?.next?.traceId]);
    assert.equal(traces.size, 1, 'same trace id at every hop');
    assert.match(String(hop?.traceId), /^[0-9a-f]{32}$/);
  });

  test('a request entering the gray lane at the edge reaches gray instances at every hop, by itself', async () => {
    const { status, hop } = await callWeb({ 'x-lane': 'gray' });
    assert.equal(status, 200);
    assert.deepEqual(path(hop), ['web-base', 'orders-gray', 'payments-gray']);
    assert.equal(hop?.lane, 'gray');
    assert.equal(hop?.next?.next?.lane, 'gray');
  });

  test('internal baggage from an outsider is dropped at the edge; a trusted identity may send the stress mark', async () => {
    const forged = await callWeb({ baggage: 'plinth.lane=gray,plinth.stress=1,user.id=u1' });
    assert.deepEqual(path(forged.hop), ['web-base', 'orders-base', 'payments-base'], 'forged lane ignored');
    assert.equal(forged.hop?.next?.next?.stress, false, 'forged stress mark ignored');
    const trusted = await callWeb({ baggage: 'plinth.stress=1', 'x-test-identity': `ServiceAccount:${NS}/loadgen` });
    assert.equal(trusted.hop?.stress, true);
    assert.equal(trusted.hop?.next?.next?.stress, true, 'the stress mark reaches the last hop');
  });

  test('the deadline shrinks at each hop', async () => {
    const { hop } = await callWeb({ 'plinth-timeout-ms': '3000' });
    const a = hop?.remainingMs ?? NaN;
    const b = hop?.next?.remainingMs ?? NaN;
    const c = hop?.next?.next?.remainingMs ?? NaN;
    assert.ok(a <= 3000 && b < a && c < b && c > 0, `3000 ≥ ${a} > ${b} > ${c} > 0`);
  });

  test('a fault injected through the server takes effect live, only for its lane, and goes away when deleted', async () => {
    await cp.api('PUT', `/v1/resources/FaultInjection/${NS}/gray-payments-down`, {
      spec: { expiresAt: '2100-01-01T00:00:00Z', rules: [{ name: 'abort', targets: [{ service: 'payments' }], match: { lanes: ['gray'] }, abort: { statusCode: 503 } }] },
    });
    const t0 = Date.now();
    let gray = await callWeb({ 'x-lane': 'gray' });
    while (gray.status === 200 && Date.now() - t0 < 5000) gray = await callWeb({ 'x-lane': 'gray' });
    assert.equal(gray.status, 503, `gray calls fail once the fault arrived: ${gray.text}`);
    assert.equal((await callWeb()).status, 200, 'the base lane is untouched');
    await cp.api('DELETE', `/v1/resources/FaultInjection/${NS}/gray-payments-down`);
    await until(() => services.every((s) => s.governance.faultInjections().length === 0), 'fault removed everywhere');
    assert.equal((await callWeb({ 'x-lane': 'gray' })).status, 200);
  });

  test('the control plane dies mid-traffic: no call fails, routing keeps its last snapshot', async () => {
    let failures = 0;
    let calls = 0;
    const load = (async () => {
      for (let i = 0; i < 120; i++) {
        const r = await callWeb(i % 2 === 0 ? { 'x-lane': 'gray' } : {});
        calls++;
        if (r.status !== 200) failures++;
        else assert.deepEqual(path(r.hop), i % 2 === 0 ? ['web-base', 'orders-gray', 'payments-gray'] : ['web-base', 'orders-base', 'payments-base']);
      }
    })();
    await until(() => calls >= 20, 'traffic flowing');
    await cp.stop();
    await load;
    assert.equal(failures, 0, `${failures} of ${calls} calls failed`);
    assert.ok(services.every((s) => s.governance.endpoints('payments').size === 2), 'the last snapshot is kept');
    await cp.start(); // for a clean shutdown (deregistration)
  });
});
