/**
 * Tracing end to end on a REAL control plane: three services export their spans through the SDK's tracer
 * to the server's OTLP endpoint; the server answers one trace across the hops, RED figures per edge with
 * pressure-test traffic kept apart, and the topology including an external dependency seen only through a
 * client span.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { trace as otelTrace } from '@opentelemetry/api';
import { request } from 'undici';
import { createClient, type ServiceClient } from '../client/index.js';
import { currentContext } from '../context.js';
import { plinth } from '../middleware/index.js';
import { createService, type Service } from '../runtime/index.js';
import { TestControlPlane, recordingLogger, until } from '../testing/control-plane.js';

const NS = 'obs';
let cp: TestControlPlane;
const services: Service[] = [];
const clients: ServiceClient[] = [];
let webPort = 0;

async function start(name: string, callee: string | undefined): Promise<void> {
  const svc = createService({
    name,
    version: '2.0.0',
    namespace: NS,
    region: 'eu-1',
    controlPlane: { url: cp.url, token: cp.token },
    deregisterDelayMs: 0,
    handleSignals: false,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: recordingLogger(),
    // Three services share this process, so none may adopt another's provider as 'the app's'.
    tracing: { sampleRatio: 1, useGlobalProvider: 'never', exporter: { url: cp.url, token: cp.token, flushMs: 50 } },
  });
  services.push(svc);
  const client = callee === undefined ? undefined : createClient({ self: name, governance: svc.governance, ...(svc.tracing ? { tracing: svc.tracing } : {}) });
  if (client) clients.push(client);
  const handler = async (_req: IncomingMessage, res: ServerResponse): Promise<void> => {
    let status = 200;
    if (client && callee) status = (await client.request(callee, { path: '/work' })).status;
    else {
      // The payments service calls its database: a span made by app code through the OpenTelemetry API,
      // as a pg instrumentation would, nests under the SDK's server span.
      const span = otelTrace.getTracer('app').startSpan('SELECT charges', { kind: 2, attributes: { 'db.system': 'postgresql', 'db.namespace': 'payments' } });
      span.end();
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ traceId: currentContext()?.trace?.traceId }));
  };
  const { port } = await svc.listen(plinth(handler, { service: name, governance: svc.governance, ...(svc.tracing ? { tracing: svc.tracing } : {}), route: () => '/work' }));
  if (name === 'web') webPort = port;
  // The payments app reports its own spans through the OpenTelemetry API, with Plinth's provider behind it.
  if (name === 'payments' && svc.tracing) otelTrace.setGlobalTracerProvider(svc.tracing.provider);
}

describe('traces, RED and topology from SDK spans', () => {
  before(async () => {
    cp = await TestControlPlane.start();
    await start('payments', undefined);
    await start('orders', 'payments');
    await start('web', 'orders');
    await until(() => services.every((s) => s.ready), 'services ready', 20_000);
    await until(() => services.every((s) => s.governance.endpoints('payments').size === 1 && s.governance.endpoints('orders').size === 1), 'discovery', 20_000);
  });

  after(async () => {
    for (const c of clients) await c.close();
    for (const s of services) await s.shutdown().catch(() => undefined);
    await cp.destroy();
    otelTrace.disable();
  });

  test('one trace across the three services, parent links intact, the app’s own span nested', async () => {
    const res = await request(`http://127.0.0.1:${webPort}/work`);
    assert.equal(res.statusCode, 200);
    const { traceId } = (await res.body.json()) as { traceId: string };
    let spans: { service: string; kind: string; spanId: string; parentSpanId?: string; name: string; peer?: string; region?: string }[] = [];
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const r = await fetch(`${cp.url}/v1/traces/${traceId}?namespace=${NS}`, { headers: { authorization: `Bearer ${cp.token}` } });
      if (r.status === 200) {
        spans = ((await r.json()) as { spans: typeof spans }).spans;
        if (spans.length >= 6) break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const byKind = spans.map((s) => `${s.service}:${s.kind}`).sort();
    assert.deepEqual(byKind, ['orders:client', 'orders:server', 'payments:client', 'payments:server', 'web:client', 'web:server']);
    const find = (svc: string, kind: string) => spans.find((s) => s.service === svc && s.kind === kind)!;
    assert.equal(find('web', 'server').parentSpanId, undefined, 'the edge request starts the trace');
    assert.equal(find('web', 'client').parentSpanId, find('web', 'server').spanId);
    assert.equal(find('orders', 'server').parentSpanId, find('web', 'client').spanId);
    assert.equal(find('payments', 'server').parentSpanId, find('orders', 'client').spanId);
    const db = find('payments', 'client');
    assert.equal(db.parentSpanId, find('payments', 'server').spanId, 'the app span is a child of the SDK server span');
    assert.equal(db.peer, 'postgresql/payments');
    assert.equal(find('orders', 'client').peer, 'payments');
    assert.equal(find('web', 'server').region, 'eu-1');
  });

  test('RED per edge keeps pressure-test traffic apart; topology shows the database as external', async () => {
    for (let i = 0; i < 5; i++) await request(`http://127.0.0.1:${webPort}/work`).then((r) => r.body.dump());
    for (let i = 0; i < 3; i++) await request(`http://127.0.0.1:${webPort}/work`, { headers: { baggage: 'plinth.stress=1', 'plinth-caller': 'loadgen' } }).then((r) => r.body.dump());
    const api = async (path: string) => (await fetch(`${cp.url}${path}`, { headers: { authorization: `Bearer ${cp.token}` } })).json() as Promise<any>;
    type Row = { service: string; peer?: string; count: number; tags: Record<string, string> };
    let real: Row | undefined;
    let stress: Row | undefined;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const rows = ((await api(`/v1/apm/red?namespace=${NS}&group=edge&split=stress&from=-1h`)) as { items: Row[] }).items;
      real = rows.find((r) => r.service === 'orders' && r.peer === 'payments' && r.tags.stress === 'false');
      stress = rows.find((r) => r.service === 'orders' && r.peer === 'payments' && r.tags.stress === 'true');
      if (real && stress && real.count >= 6 && stress.count >= 3) break;
      await new Promise((r) => setTimeout(r, 150));
    }
    assert.equal(real?.count, 6, 'one call from the first test plus five');
    assert.equal(stress?.count, 3, 'pressure-test calls counted apart');
    const unsplit = ((await api(`/v1/apm/red?namespace=${NS}&group=edge&from=-1h`)) as { items: Row[] }).items.find((r) => r.service === 'orders' && r.peer === 'payments');
    assert.equal(unsplit?.count, 6, 'real figures exclude pressure-test traffic by default');
    const topo = (await api(`/v1/apm/topology?namespace=${NS}&from=-1h`)) as { nodes: { name: string; external: boolean }[]; edges: { caller: string; callee: string }[] };
    const edges = topo.edges.map((e) => `${e.caller}->${e.callee}`).sort();
    assert.deepEqual(edges, ['orders->payments', 'payments->postgresql/payments', 'web->orders']);
    assert.equal(topo.nodes.find((n) => n.name === 'postgresql/payments')?.external, true);
    assert.equal(topo.nodes.find((n) => n.name === 'orders')?.external, false);
  });
});
