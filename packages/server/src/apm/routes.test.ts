import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { PROBLEM_CONTENT_TYPE } from '@plinth/core';
import { AuthCache, createRequestHandler } from '../app.js';
import { Router } from '../http/router.js';
import { Auditor } from '../identity/audit.js';
import { ADMIN_TOKEN_FILE, bootstrap } from '../identity/bootstrap.js';
import { mintCredential } from '../identity/credentials.js';
import { IdentityService } from '../identity/identity-service.js';
import { createMetrics } from '../metrics.js';
import { Keyring } from '../secrets/keyring.js';
import { SqliteStore } from '../store/sqlite.js';
import { registerApmQueryRoutes } from './routes.js';
import { T0, span } from './store/contract.test.helpers.js';
import { bucketOf, lowerBound, upperBound } from './store/histogram.js';
import { SqliteSpanStore } from './store/sqlite.js';

const NOW = T0 + 10 * 60_000;

/**
 * The query routes on a real HTTP server with real identity (bootstrap admin, RBAC from Roles in the resource
 * store) and a real span store; the same parts server.ts wires, without the rest of the server.
 */
async function startApi() {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-apm-api-'));
  const log = pino({ level: 'silent' });
  const store = new SqliteStore(join(dir, 'plinth.db'), { onError: () => {} });
  await store.init();
  await bootstrap({ store, dataDir: dir, log });
  const put = (kind: string, namespace: string, name: string, spec: unknown) => store.put({ kind, namespace, name, labels: {}, annotations: {}, spec });
  await put('ServiceAccount', 'shop', 'reader', {});
  await put('ServiceAccount', 'shop', 'config-only', {});
  await put('Role', 'shop', 'trace-reader', { rules: [{ verbs: ['get', 'list'], kinds: ['Trace'], namespaces: ['shop'] }] });
  await put('Role', 'shop', 'config-reader', { rules: [{ verbs: ['get', 'list'], kinds: ['Config'], namespaces: ['*'] }] });
  await put('RoleBinding', 'shop', 'reader', { role: 'trace-reader', subjects: [{ kind: 'ServiceAccount', namespace: 'shop', name: 'reader' }] });
  await put('RoleBinding', 'shop', 'config-only', { role: 'config-reader', subjects: [{ kind: 'ServiceAccount', namespace: 'shop', name: 'config-only' }] });
  const token = async (name: string) => (await mintCredential(store, { namespace: 'shop', name }, { now: Date.now() })).credential.token;
  const tokens = { admin: readFileSync(join(dir, ADMIN_TOKEN_FILE), 'utf8').trim(), reader: await token('reader'), outsider: await token('config-only') };

  const identity = await IdentityService.start({ store, keyring: Keyring.fromEnv(randomBytes(32).toString('base64')), issuer: 'plinth', tokenTtlSeconds: 900, log });
  const spans = new SqliteSpanStore(join(dir, 'apm.db'));
  await spans.init();
  const router = new Router();
  registerApmQueryRoutes(router, { identity, audit: new Auditor(store, log), spans, now: () => NOW });
  const server: Server = createServer(createRequestHandler({ router, identity, authCache: new AuthCache(), metrics: createMetrics(), log }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    spans,
    tokens,
    audit: store,
    get: async (path: string, as: string | null = tokens.admin) => {
      const res = await fetch(url + path, as === null ? {} : { headers: { authorization: `Bearer ${as}` } });
      return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as any };
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await identity.close();
      await spans.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

void describe('APM query API', () => {
  let api: Awaited<ReturnType<typeof startApi>>;
  const root = span({ service: 'web', name: 'GET /', startMs: T0, durationMs: 40 });
  const call = span({ traceId: root.traceId, parentSpanId: root.spanId, service: 'web', kind: 'client', name: 'call api', peer: 'api', startMs: T0 + 1, durationMs: 30 });
  const served = span({ traceId: root.traceId, parentSpanId: call.spanId, service: 'api', startMs: T0 + 2, durationMs: 25, lane: 'blue', status: 'error' });
  const db = span({ traceId: root.traceId, parentSpanId: served.spanId, service: 'api', kind: 'client', name: 'SELECT', peer: 'postgresql', startMs: T0 + 3, durationMs: 5 });
  const other = span({ namespace: 'billing', service: 'ledger', startMs: T0 });
  const range = `from=${T0 - 60_000}&to=${T0 + 60_000}`;

  before(async () => {
    api = await startApi();
    await api.spans.insert([root, call, served, db, other]);
  });
  after(async () => {
    await api?.close();
  });

  void it('GET /v1/traces/:traceId returns the trace in start order; 404 when unknown', async () => {
    const r = await api.get(`/v1/traces/${root.traceId.toUpperCase()}?namespace=shop`);
    assert.equal(r.status, 200);
    assert.equal(r.body.traceId, root.traceId);
    assert.deepEqual(r.body.spans.map((s: any) => s.spanId), [root.spanId, call.spanId, served.spanId, db.spanId]);
    assert.deepEqual(r.body.spans[2].attributes, {});
    const missing = await api.get(`/v1/traces/${'ab'.repeat(16)}?namespace=shop`);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, 'not_found');
    assert.equal((await api.get(`/v1/traces/${root.traceId}`)).status, 404, 'namespace defaults to "default"');
  });

  void it('GET /v1/traces searches with filters; the default range is the hour before now', async () => {
    const all = await api.get(`/v1/traces?namespace=shop&${range}`);
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.items, [
      { traceId: root.traceId, rootService: 'web', rootName: 'GET /', startMs: T0, durationMs: 40, spanCount: 4, errorCount: 1, services: ['api', 'web'] },
    ]);
    const hits = async (qs: string) => (await api.get(`/v1/traces?namespace=shop&${range}&${qs}`)).body.items.length;
    assert.equal(await hits('service=api&status=error&tag=lane:blue&minDurationMs=20&maxDurationMs=26.5&limit=5'), 1);
    assert.equal(await hits('endpoint=GET%20%2F&status=ok'), 1);
    assert.equal(await hits('tag=lane:green'), 0);
    assert.equal(await hits('service=api&tag=lane:blue&tag=stress:true'), 0);
    const iso = await api.get(`/v1/traces?namespace=shop&from=${new Date(T0 - 1000).toISOString()}&to=${new Date(T0 + 1000).toISOString()}`);
    assert.equal(iso.body.items.length, 1);
    assert.equal((await api.get('/v1/traces?namespace=shop&from=-15m')).body.items.length, 1, 'relative to now');
    assert.equal((await api.get('/v1/traces?namespace=shop&from=-5m')).body.items.length, 0);
    assert.equal((await api.get('/v1/traces?namespace=shop')).body.items.length, 1);
  });

  void it('GET /v1/apm/red, /topology and /services answer from the rollups', async () => {
    const red = await api.get(`/v1/apm/red?namespace=shop&${range}&group=endpoint&split=lane,stress`);
    assert.equal(red.status, 200);
    assert.deepEqual(red.body.items.map((r: any) => [r.service, r.endpoint, r.tags, r.count, r.errors]), [
      ['api', 'GET /a', { lane: 'blue', stress: 'false' }, 1, 1],
      ['web', 'GET /', { lane: '', stress: 'false' }, 1, 0],
    ]);
    const edges = await api.get(`/v1/apm/red?namespace=shop&${range}&group=edge&service=api&includeStress=true`);
    assert.deepEqual(edges.body.items.map((r: any) => `${r.service}>${r.peer}`), ['api>postgresql', 'web>api']);
    const topo = await api.get(`/v1/apm/topology?namespace=shop&${range}&service=web`);
    assert.equal(topo.status, 200);
    const edge = topo.body.edges[0];
    assert.deepEqual(topo.body, {
      nodes: [
        { name: 'api', external: false },
        { name: 'web', external: false },
      ],
      edges: [{ caller: 'web', callee: 'api', external: false, count: 1, errors: 0, p50Ms: edge.p50Ms, p95Ms: edge.p95Ms, p99Ms: edge.p99Ms }],
    });
    assert.ok(edge.p50Ms >= lowerBound(bucketOf(30)) && edge.p99Ms <= upperBound(bucketOf(30)), JSON.stringify(edge));
    assert.deepEqual((await api.get(`/v1/apm/services?${range}`)).body.items, [
      { namespace: 'billing', service: 'ledger' },
      { namespace: 'shop', service: 'api' },
      { namespace: 'shop', service: 'web' },
    ]);
    assert.deepEqual((await api.get(`/v1/apm/services?${range}`, api.tokens.reader)).body.items.map((s: any) => s.namespace), ['shop', 'shop'], 'only namespaces the caller may list');
    assert.deepEqual((await api.get(`/v1/apm/services?namespace=billing&${range}`)).body.items, [{ namespace: 'billing', service: 'ledger' }]);
  });

  void it('answers 400 problem+json naming the parameter for bad input, never 500', async () => {
    const cases: [string, string][] = [
      ['/v1/traces/not-a-trace-id?namespace=shop', 'traceId'],
      [`/v1/traces/${'g'.repeat(32)}`, 'traceId'],
      ['/v1/traces/' + 'a'.repeat(32) + '?namespace=shop&foo=1', 'foo'],
      ['/v1/traces?from=yesterday', 'from'],
      ['/v1/traces?to=2025-13-45T99:00:00Z', 'to'],
      [`/v1/traces?from=${T0}&to=${T0}`, 'from'],
      ['/v1/traces?limit=0', 'limit'],
      ['/v1/traces?limit=5000', 'limit'],
      ['/v1/traces?limit=ten', 'limit'],
      ['/v1/traces?status=broken', 'status'],
      ['/v1/traces?minDurationMs=-1', 'minDurationMs'],
      ['/v1/traces?maxDurationMs=1e9', 'maxDurationMs'],
      ['/v1/traces?minDurationMs=10&maxDurationMs=5', 'minDurationMs'],
      ['/v1/traces?tag=novalue', 'tag'],
      ['/v1/traces?tag=:x', 'tag'],
      ['/v1/traces?tag=stress:maybe', 'tag'],
      ['/v1/traces?tag=a%22b:x', 'tag'],
      ['/v1/traces?service=a&service=b', 'service'],
      [`/v1/traces?service=${'x'.repeat(300)}`, 'service'],
      ['/v1/traces?namespace=%00', 'namespace'],
      ['/v1/traces?servce=api', 'servce'],
      ['/v1/apm/red?group=host', 'group'],
      ['/v1/apm/red?split=lane,colour', 'split'],
      ['/v1/apm/red?includeStress=yes', 'includeStress'],
      ['/v1/apm/red?from=-1y', 'from'],
      ['/v1/apm/topology?includeStress=1', 'includeStress'],
      ['/v1/apm/topology?group=edge', 'group'],
      ['/v1/apm/services?to=soon', 'to'],
    ];
    for (const [path, field] of cases) {
      const r = await api.get(path);
      assert.equal(r.status, 400, `${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.type, PROBLEM_CONTENT_TYPE, path);
      assert.equal(r.body.code, 'invalid_parameter', path);
      assert.equal(r.body.errors?.[0]?.field, field, path);
    }
  });

  void it('401 without a token; 403 without Trace rights in the namespace, and the denial is audited', async () => {
    for (const path of [`/v1/traces/${root.traceId}?namespace=shop`, '/v1/traces?namespace=shop', '/v1/apm/red', '/v1/apm/topology', '/v1/apm/services?namespace=shop']) {
      const r = await api.get(path, null);
      assert.equal(r.status, 401, path);
      assert.equal(r.body.code, 'unauthenticated');
      const denied = await api.get(path, api.tokens.outsider);
      assert.equal(denied.status, 403, path);
      assert.equal(denied.body.code, 'forbidden');
    }
    assert.deepEqual((await api.get('/v1/apm/services', api.tokens.outsider)).body, { items: [] }, 'across namespaces: filtered, not refused');
    assert.equal((await api.get(`/v1/traces/${root.traceId}?namespace=shop`, api.tokens.reader)).status, 200);
    assert.equal((await api.get(`/v1/apm/red?namespace=billing`, api.tokens.reader)).status, 403, 'the reader is limited to shop');
    const head = await api.audit.auditHead();
    const entries = await api.audit.readAudit(Math.max(0, head.seq - 5), 5);
    assert.ok(entries.some((e) => e.outcome === 'denied' && e.kind === 'Trace' && e.namespace === 'billing' && e.actor === 'ServiceAccount:shop/reader'));
  });
});
