// The one contract both span store backends pass (imported by sqlite.test.ts and postgres.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isPlinthError } from '@plinth/core';
import type { RedRow, SpanRecord, SpanStore } from '../types.js';
import { BOUNDS, bucketOf, lowerBound, upperBound } from './histogram.js';

export interface SpanStoreFixture {
  /** A fresh, initialized, empty store. */
  store: SpanStore;
  /** Closes what the fixture opened and removes its data. */
  cleanup: () => Promise<void>;
}

export interface FixtureOptions {
  retentionBatch?: number;
}

/** A fixed noon, so minute buckets and ranges are the same on every run. */
export const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);
const MIN = 60_000;
const HOUR = 60 * MIN;
const RANGE = { fromMs: T0 - HOUR, toMs: T0 + HOUR };

let ids = 0;
export function newTraceId(): string {
  return (++ids).toString(16).padStart(32, '0');
}
function newSpanId(): string {
  return (++ids).toString(16).padStart(16, '0');
}

/** A server span of `api` unless told otherwise; every optional field explicitly undefined, as ingest makes them. */
export function span(o: Partial<SpanRecord> = {}): SpanRecord {
  const kind = o.kind ?? 'server';
  const name = o.name ?? 'GET /a';
  return {
    namespace: 'shop',
    traceId: newTraceId(),
    spanId: newSpanId(),
    parentSpanId: undefined,
    service: 'api',
    version: undefined,
    name,
    kind,
    startMs: T0,
    durationMs: 10,
    status: 'unset',
    statusMessage: undefined,
    endpoint: kind === 'server' || kind === 'consumer' ? name : undefined,
    peer: undefined,
    httpStatus: undefined,
    grpcStatus: undefined,
    lane: undefined,
    stress: false,
    region: undefined,
    caller: undefined,
    attributes: {},
    resource: { 'service.name': o.service ?? 'api' },
    events: [],
    ...o,
  };
}

function child(parent: SpanRecord, o: Partial<SpanRecord>): SpanRecord {
  return span({ traceId: parent.traceId, parentSpanId: parent.spanId, startMs: parent.startMs + 1, ...o });
}

function clientTo(caller: string, peer: string, o: Partial<SpanRecord> = {}): SpanRecord {
  return span({ service: caller, kind: 'client', name: `call ${peer}`, peer, ...o });
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isPlinthError(e), `expected a PlinthError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

function only<T>(rows: readonly T[], pred: (r: T) => boolean): T {
  const found = rows.filter(pred);
  assert.equal(found.length, 1, `exactly one matching row in ${JSON.stringify(rows)}`);
  return found[0]!;
}

export function spanStoreContract(backend: string, open: (options?: FixtureOptions) => Promise<SpanStoreFixture>): void {
  async function withStore(fn: (store: SpanStore) => Promise<void>, options?: FixtureOptions): Promise<void> {
    const f = await open(options);
    try {
      await fn(f.store);
    } finally {
      await f.cleanup();
    }
  }

  void describe(`span store contract (${backend})`, () => {
    void it('stores spans as given and returns a trace in start order', async () => {
      await withStore(async (store) => {
        assert.equal(store.backend, backend);
        const root = span({
          version: '1.4.2',
          startMs: T0 + 0.125,
          durationMs: 42.5,
          status: 'error',
          statusMessage: 'boom',
          httpStatus: 500,
          lane: 'blue',
          region: 'eu-west-1',
          caller: 'web',
          attributes: { 'http.route': '/a', retries: 2, cached: false, 'user.tier': 'gold' },
          resource: { 'service.name': 'api', 'host.name': 'h1' },
          events: [{ timeMs: T0 + 3, name: 'exception', attributes: { 'exception.type': 'Error' } }],
        });
        const late = child(root, { startMs: T0 + 20, kind: 'client', name: 'SELECT', endpoint: undefined, peer: 'postgresql' });
        const early = child(root, { startMs: T0 + 5, kind: 'internal', name: 'validate', endpoint: undefined });
        await store.insert([late, root, early]);
        assert.deepEqual(await store.trace('shop', root.traceId), [root, early, late]);
        assert.deepEqual(await store.trace('other', root.traceId), [], 'a trace is read in its own namespace only');
        assert.deepEqual(await store.trace('shop', newTraceId()), []);
      });
    });

    void it('is idempotent on (traceId, spanId): re-sent spans are neither stored nor counted twice', async () => {
      await withStore(async (store) => {
        const a = span({ durationMs: 5 });
        const b = child(a, { name: 'GET /b', endpoint: 'GET /b', durationMs: 7 });
        await store.insert([a, b, a]);
        await store.insert([b, a]);
        const c = child(a, { name: 'GET /c', endpoint: 'GET /c' });
        await store.insert([a, c]);
        assert.equal((await store.trace('shop', a.traceId)).length, 3);
        const rows = await store.red({ namespace: 'shop', group: 'service', ...RANGE });
        assert.equal(only(rows, (r) => r.service === 'api').count, 3);
        assert.deepEqual((await store.searchTraces({ namespace: 'shop', ...RANGE })).map((t) => t.spanCount), [3]);
        await store.insert([]);
      });
    });

    void describe('searchTraces', () => {
      void it('filters by service, endpoint, status, duration, tags and time; newest first; limit', async () => {
        await withStore(async (store) => {
          const t1 = span({ startMs: T0 + 1000, durationMs: 10, lane: 'blue', region: 'eu', version: '2', attributes: { 'user.tier': 'gold', retry: true, n: 3 } });
          const t1db = child(t1, { kind: 'client', name: 'SELECT', endpoint: undefined, peer: 'postgresql', durationMs: 4 });
          const t2 = span({ startMs: T0 + 2000, name: 'GET /b', endpoint: 'GET /b', durationMs: 200, httpStatus: 503 });
          const t3 = span({ service: 'web', name: 'GET /', startMs: T0 + 3000, durationMs: 50 });
          const t3api = child(t3, { service: 'api', durationMs: 30 });
          const old = span({ startMs: T0 - 2 * HOUR });
          const t5 = span({ startMs: T0 + 4000, stress: true, durationMs: 15 });
          await store.insert([t1, t1db, t2, t3, t3api, old, t5]);

          const search = async (extra: Record<string, unknown>) =>
            (await store.searchTraces({ namespace: 'shop', ...RANGE, ...extra })).map((t) => t.traceId);
          assert.deepEqual(await search({}), [t5.traceId, t3.traceId, t2.traceId, t1.traceId]);
          assert.deepEqual(await search({ service: 'web' }), [t3.traceId]);
          assert.deepEqual(await search({ service: 'api' }), [t5.traceId, t3.traceId, t2.traceId, t1.traceId]);
          assert.deepEqual(await search({ endpoint: 'GET /b' }), [t2.traceId]);
          assert.deepEqual(await search({ status: 'error' }), [t2.traceId], 'a 5xx answer is an error');
          assert.deepEqual(await search({ status: 'ok' }), [t5.traceId, t3.traceId, t1.traceId]);
          assert.deepEqual(await search({ minDurationMs: 100 }), [t2.traceId]);
          assert.deepEqual(await search({ minDurationMs: 20, maxDurationMs: 40 }), [t3.traceId]);
          assert.deepEqual(await search({ maxDurationMs: 5 }), [t1.traceId]);
          assert.deepEqual(await search({ tags: { lane: 'blue' } }), [t1.traceId]);
          assert.deepEqual(await search({ tags: { region: 'eu', version: '2' } }), [t1.traceId]);
          assert.deepEqual(await search({ tags: { 'user.tier': 'gold' } }), [t1.traceId]);
          assert.deepEqual(await search({ tags: { retry: 'true' } }), [t1.traceId], 'booleans match as text');
          assert.deepEqual(await search({ tags: { n: '3' } }), [t1.traceId], 'numbers match as text');
          assert.deepEqual(await search({ tags: { 'user.tier': 'silver' } }), []);
          assert.deepEqual(await search({ tags: { lane: 'blue', 'user.tier': 'silver' } }), [], 'every tag must match');
          assert.deepEqual(await search({ tags: { stress: 'true' } }), [t5.traceId]);
          assert.deepEqual(await search({ service: 'api', status: 'ok', tags: { stress: 'false' } }), [t3.traceId, t1.traceId]);
          assert.deepEqual(await search({ limit: 2 }), [t5.traceId, t3.traceId]);
          assert.deepEqual(await search({ fromMs: T0 + 1500, toMs: T0 + 3000 }), [t2.traceId], 'from inclusive, to exclusive');
          assert.deepEqual(await search({ fromMs: T0 - 3 * HOUR, toMs: T0 }), [old.traceId]);
          assert.deepEqual(await store.searchTraces({ namespace: 'other', ...RANGE }), []);
          await rejectsWith(store.searchTraces({ namespace: 'shop', ...RANGE, tags: { stress: 'maybe' } }), 'invalid_parameter');
          await rejectsWith(store.searchTraces({ namespace: 'shop', ...RANGE, tags: { 'a"b': 'x' } }), 'invalid_parameter');
        });
      });

      void it('summarizes whole traces: root, span count, errors, services, duration', async () => {
        await withStore(async (store) => {
          const root = span({ service: 'web', name: 'GET /', startMs: T0 + 100, durationMs: 50 });
          const a = child(root, { service: 'api', startMs: T0 + 110, durationMs: 60, status: 'error' });
          const b = child(a, { service: 'db-proxy', kind: 'client', name: 'SELECT', endpoint: undefined, peer: 'postgresql', startMs: T0 + 120, durationMs: 5 });
          // A trace whose root never arrived: the earliest span stands in.
          const orphanLate = span({ parentSpanId: 'ffffffffffffffff', service: 'api', name: 'late', startMs: T0 + 500 });
          const orphanEarly = span({ traceId: orphanLate.traceId, parentSpanId: 'eeeeeeeeeeeeeeee', service: 'worker', name: 'early', startMs: T0 + 400 });
          await store.insert([b, a, root, orphanLate, orphanEarly]);
          const [full] = await store.searchTraces({ namespace: 'shop', ...RANGE, service: 'db-proxy' });
          const [orphan] = await store.searchTraces({ namespace: 'shop', ...RANGE, service: 'worker' });
          assert.deepEqual(full, {
            traceId: root.traceId,
            rootService: 'web',
            rootName: 'GET /',
            startMs: T0 + 100,
            durationMs: 70,
            spanCount: 3,
            errorCount: 1,
            services: ['api', 'db-proxy', 'web'],
          });
          assert.ok(orphan);
          assert.equal(orphan.rootService, 'worker');
          assert.equal(orphan.rootName, 'early');
          assert.equal(orphan.spanCount, 2);
        });
      });
    });

    void describe('red', () => {
      /** 100 calls of GET /a (half on lane blue), 50 of GET /b, in two minutes; known errors and rejections. */
      function realTraffic(): SpanRecord[] {
        const out: SpanRecord[] = [];
        for (let i = 0; i < 100; i++) {
          out.push(
            span({
              startMs: T0 + (i % 2) * MIN + i,
              durationMs: 10,
              lane: i < 50 ? 'blue' : undefined,
              status: i < 5 ? 'error' : 'ok',
              httpStatus: i >= 5 && i < 10 ? 500 : i >= 10 && i < 13 ? 429 : 200,
              version: '1',
            }),
          );
        }
        for (let i = 0; i < 50; i++) out.push(span({ name: 'GET /b', endpoint: 'GET /b', startMs: T0 + i, durationMs: 100, httpStatus: i < 2 ? 503 : 200, version: '2' }));
        out.push(clientTo('web', 'api', { startMs: T0, durationMs: 12 }));
        out.push(clientTo('api', 'postgresql', { startMs: T0, durationMs: 2, status: 'error' }));
        out.push(clientTo('api', 'postgresql', { startMs: T0, durationMs: 3 }));
        out.push(span({ service: 'web', name: 'GET /', startMs: T0, durationMs: 20 }));
        return out;
      }
      /** Load-test traffic in the same minutes: slow and failing, which must not show in real figures. */
      function stressTraffic(): SpanRecord[] {
        return Array.from({ length: 300 }, (_, i) =>
          span({ startMs: T0 + i, durationMs: 5000, status: 'error', httpStatus: 503, stress: true, lane: 'blue', version: '1' }),
        ).concat([clientTo('api', 'postgresql', { startMs: T0, durationMs: 900, stress: true, status: 'error' })]);
      }
      const q = { namespace: 'shop', fromMs: T0, toMs: T0 + 2 * MIN };

      void it('per service and per endpoint, with rates, errors and rejections', async () => {
        await withStore(async (store) => {
          await store.insert(realTraffic());
          const services = await store.red({ ...q, group: 'service' });
          assert.deepEqual(services.map((r) => r.service), ['api', 'web']);
          const api = services[0]!;
          assert.equal(api.count, 150);
          assert.equal(api.errors, 12, '5 error status + 5 HTTP 500 + 2 HTTP 503');
          assert.equal(api.rejections, 5, '3 x 429 + 2 x 503');
          assert.equal(api.ratePerSec, 150 / 120);
          assert.equal(api.errorRate, 12 / 150);
          assert.deepEqual(api.tags, {});
          assert.equal(api.endpoint, undefined);

          const endpoints = await store.red({ ...q, group: 'endpoint', service: 'api' });
          assert.deepEqual(endpoints.map((r) => [r.service, r.endpoint, r.count, r.errors, r.rejections]), [
            ['api', 'GET /a', 100, 10, 3],
            ['api', 'GET /b', 50, 2, 2],
          ]);
          const b = endpoints[1]!;
          assert.ok(b.p50Ms >= lowerBound(bucketOf(100)) && b.p99Ms <= upperBound(bucketOf(100)), JSON.stringify(b));

          const one = await store.red({ namespace: 'shop', fromMs: T0, toMs: T0 + MIN, group: 'endpoint', service: 'api' });
          assert.equal(only(one, (r) => r.endpoint === 'GET /a').count, 50, 'minute resolution: only the first minute');
        });
      });

      void it("counts a gRPC call's failures and rejections by its gRPC code, though each answered HTTP 200", async () => {
        await withStore(async (store) => {
          // OK x10, NOT_FOUND x3 (the caller's doing), INTERNAL x2, RESOURCE_EXHAUSTED x4, UNAVAILABLE x1.
          const codes = [...Array<number>(10).fill(0), 5, 5, 5, 13, 13, 8, 8, 8, 8, 14];
          const name = 'POST /shop.Stock/Reserve';
          await store.insert(codes.map((code, i) => span({ name, endpoint: name, startMs: T0 + i, httpStatus: 200, grpcStatus: code, attributes: { 'rpc.system': 'grpc', 'rpc.grpc.status_code': code } })));
          const [row] = await store.red({ ...q, group: 'endpoint', service: 'api' });
          assert.deepEqual([row!.endpoint, row!.count, row!.errors, row!.rejections], [name, 20, 3, 5], 'errors: INTERNAL and UNAVAILABLE; rejections: RESOURCE_EXHAUSTED and UNAVAILABLE');
          const failed = await store.searchTraces({ namespace: 'shop', service: 'api', status: 'error', ...RANGE, limit: 50 });
          assert.equal(failed.length, 3, 'trace search by status finds the failed calls');
        });
      });

      void it('splits by tags', async () => {
        await withStore(async (store) => {
          await store.insert([...realTraffic(), ...stressTraffic()]);
          const byLane = await store.red({ ...q, group: 'endpoint', service: 'api', split: ['lane'] });
          assert.deepEqual(byLane.map((r) => [r.endpoint, r.tags, r.count]), [
            ['GET /a', { lane: '' }, 50],
            ['GET /a', { lane: 'blue' }, 50],
            ['GET /b', { lane: '' }, 50],
          ]);
          const byVersion = await store.red({ ...q, group: 'service', service: 'api', split: ['version', 'lane'] });
          assert.deepEqual(byVersion.map((r) => [r.tags, r.count]), [
            [{ lane: '', version: '1' }, 50],
            [{ lane: '', version: '2' }, 50],
            [{ lane: 'blue', version: '1' }, 50],
          ]);
          const byStress = await store.red({ ...q, group: 'service', service: 'api', split: ['stress'] });
          assert.deepEqual(byStress.map((r) => [r.tags, r.count, r.errors]), [
            [{ stress: 'false' }, 150, 12],
            [{ stress: 'true' }, 300, 300],
          ]);
          const all = await store.red({ ...q, group: 'service', service: 'api', includeStress: true });
          assert.equal(all[0]!.count, 450);
        });
      });

      void it('pressure-test spans never change real figures', async () => {
        await withStore(async (store) => {
          await store.insert(realTraffic());
          const groups = ['service', 'endpoint', 'edge'] as const;
          const before: RedRow[][] = [];
          for (const group of groups) before.push(await store.red({ ...q, group, split: ['lane', 'region', 'version'] }));
          const sliBefore = await store.sli({ ...q, service: 'api', indicator: 'availability' });
          const topoBefore = await store.topology(q);
          await store.insert(stressTraffic());
          for (let i = 0; i < groups.length; i++) {
            assert.deepEqual(await store.red({ ...q, group: groups[i]!, split: ['lane', 'region', 'version'] }), before[i]);
          }
          assert.deepEqual(await store.sli({ ...q, service: 'api', indicator: 'availability' }), sliBefore);
          assert.deepEqual(await store.sli({ ...q, service: 'api', indicator: 'latency', thresholdMs: 1000 }), { total: 150, bad: 0 });
          assert.deepEqual(await store.topology(q), topoBefore);
        });
      });

      void it('per edge: caller -> callee from client spans; a service filter takes both directions', async () => {
        await withStore(async (store) => {
          await store.insert(realTraffic());
          const edges = await store.red({ ...q, group: 'edge' });
          assert.deepEqual(edges.map((r) => [r.service, r.peer, r.count, r.errors]), [
            ['api', 'postgresql', 2, 1],
            ['web', 'api', 1, 0],
          ]);
          assert.deepEqual((await store.red({ ...q, group: 'edge', service: 'api' })).length, 2);
          assert.deepEqual((await store.red({ ...q, group: 'edge', service: 'web' })).map((r) => r.peer), ['api']);
          assert.deepEqual(await store.red({ ...q, group: 'edge', service: 'postgresql' }).then((r) => r.map((x) => x.service)), ['api']);
          assert.deepEqual(await store.red({ ...q, namespace: 'other', group: 'edge' }), []);
        });
      });
    });

    void it('estimates percentiles within the resolution of the bucket holding the true value', async () => {
      await withStore(async (store) => {
        // Durations 0.5, 1.5, ..., 999.5 ms: the true p50 is 500, p95 950, p99 990.
        await store.insert(Array.from({ length: 1000 }, (_, i) => span({ startMs: T0 + i, durationMs: i + 0.5 })));
        const [row] = await store.red({ namespace: 'shop', fromMs: T0, toMs: T0 + MIN, group: 'service' });
        for (const [estimate, truth] of [
          [row!.p50Ms, 500],
          [row!.p95Ms, 950],
          [row!.p99Ms, 990],
        ] as const) {
          const b = bucketOf(truth);
          assert.ok(Math.abs(estimate - truth) <= upperBound(b) - lowerBound(b), `estimate ${estimate} vs ${truth}`);
        }
        // A second, exponential-ish distribution: 900 fast (2 ms) and 100 slow (400 ms); p95 falls among the slow.
        await store.insert([
          ...Array.from({ length: 900 }, (_, i) => span({ service: 'spiky', startMs: T0 + i, durationMs: 2 })),
          ...Array.from({ length: 100 }, (_, i) => span({ service: 'spiky', startMs: T0 + i, durationMs: 400 })),
        ]);
        const spiky = (await store.red({ namespace: 'shop', fromMs: T0, toMs: T0 + MIN, group: 'service', service: 'spiky' }))[0]!;
        assert.ok(spiky.p50Ms >= lowerBound(bucketOf(2)) && spiky.p50Ms <= upperBound(bucketOf(2)), String(spiky.p50Ms));
        assert.ok(spiky.p95Ms >= lowerBound(bucketOf(400)) && spiky.p95Ms <= upperBound(bucketOf(400)), String(spiky.p95Ms));
      });
    });

    void it('topology: external nodes, edge figures, focus on one service', async () => {
      await withStore(async (store) => {
        await store.insert([
          span({ service: 'web', name: 'GET /' }),
          clientTo('web', 'api', { durationMs: 30 }),
          clientTo('web', 'api', { durationMs: 30, status: 'error' }),
          span({ service: 'api' }),
          clientTo('api', 'postgresql', { durationMs: 3 }),
          clientTo('api', 'payments', { durationMs: 80 }),
          span({ service: 'payments', name: 'POST /charge' }),
          clientTo('payments', 'stripe', { durationMs: 200 }),
          // Only a stress client ever called this one: invisible unless stress is asked for.
          clientTo('web', 'loadgen-sink', { stress: true }),
          // A callee that reported spans outside the range is still external within it.
          span({ service: 'postgresql', startMs: T0 - 3 * HOUR }),
        ]);
        const q = { namespace: 'shop', fromMs: T0 - MIN, toMs: T0 + MIN };
        const topo = await store.topology(q);
        assert.deepEqual(topo.nodes, [
          { name: 'api', external: false },
          { name: 'payments', external: false },
          { name: 'postgresql', external: true },
          { name: 'stripe', external: true },
          { name: 'web', external: false },
        ]);
        assert.deepEqual(topo.edges.map((e) => [e.caller, e.callee, e.external, e.count, e.errors]), [
          ['api', 'payments', false, 1, 0],
          ['api', 'postgresql', true, 1, 0],
          ['payments', 'stripe', true, 1, 0],
          ['web', 'api', false, 2, 1],
        ]);
        const webApi = topo.edges.find((e) => e.caller === 'web')!;
        assert.ok(webApi.p50Ms >= lowerBound(bucketOf(30)) && webApi.p99Ms <= upperBound(bucketOf(30)));

        const api = await store.topology({ ...q, service: 'api' });
        assert.deepEqual(api.nodes.map((n) => n.name), ['api', 'payments', 'postgresql', 'web']);
        assert.deepEqual(api.edges.map((e) => `${e.caller}>${e.callee}`), ['api>payments', 'api>postgresql', 'web>api']);
        const pay = await store.topology({ ...q, service: 'payments' });
        assert.deepEqual(pay.edges.map((e) => `${e.caller}>${e.callee}`), ['api>payments', 'payments>stripe']);

        const withStress = await store.topology({ ...q, includeStress: true });
        assert.ok(withStress.edges.some((e) => e.callee === 'loadgen-sink' && e.external));
        assert.deepEqual(await store.topology({ ...q, namespace: 'other' }), { nodes: [], edges: [] });
      });
    });

    void it('sli: availability and latency counts, per service or endpoint, stress never counted', async () => {
      await withStore(async (store) => {
        const spans: SpanRecord[] = [];
        for (let i = 0; i < 200; i++) {
          const endpoint = i < 100 ? 'GET /a' : 'GET /b';
          spans.push(span({ name: endpoint, endpoint, startMs: T0 + i * 100, durationMs: i % 100 + 0.5, status: i % 20 === 0 ? 'error' : 'ok' }));
        }
        spans.push(span({ startMs: T0, durationMs: 9000, status: 'error', stress: true }));
        spans.push(clientTo('api', 'postgresql', { startMs: T0, durationMs: 9000, status: 'error' }));
        await store.insert(spans);
        const w = { namespace: 'shop', service: 'api', fromMs: T0, toMs: T0 + 5 * MIN };
        assert.deepEqual(await store.sli({ ...w, indicator: 'availability' }), { total: 200, bad: 10 });
        assert.deepEqual(await store.sli({ ...w, endpoint: 'GET /b', indicator: 'availability' }), { total: 100, bad: 5 });
        // 50 ms is a bucket bound: exact. Durations 50.5 .. 99.5 in each endpoint are slower.
        assert.ok(BOUNDS.includes(50));
        assert.deepEqual(await store.sli({ ...w, indicator: 'latency', thresholdMs: 50 }), { total: 200, bad: 100 });
        assert.deepEqual(await store.sli({ ...w, endpoint: 'GET /a', indicator: 'latency', thresholdMs: 50 }), { total: 100, bad: 50 });
        // 55 ms lies inside [50, 60): interpolated, off by at most that bucket's count.
        const mid = await store.sli({ ...w, indicator: 'latency', thresholdMs: 55 });
        assert.equal(mid.total, 200);
        assert.ok(Math.abs(mid.bad - 90) <= 20, String(mid.bad));
        assert.deepEqual(await store.sli({ ...w, service: 'nobody', indicator: 'latency', thresholdMs: 50 }), { total: 0, bad: 0 });
        await rejectsWith(store.sli({ ...w, indicator: 'latency' }), 'invalid_parameter');
      });
    });

    void it('services: those reporting any span in the range, by namespace', async () => {
      await withStore(async (store) => {
        await store.insert([
          span({ service: 'api' }),
          span({ service: 'batch', kind: 'internal', name: 'nightly', endpoint: undefined }),
          clientTo('cron', 'api'),
          span({ namespace: 'billing', service: 'ledger' }),
          span({ service: 'old', startMs: T0 - 5 * HOUR }),
        ]);
        assert.deepEqual(await store.services(RANGE), [
          { namespace: 'billing', service: 'ledger' },
          { namespace: 'shop', service: 'api' },
          { namespace: 'shop', service: 'batch' },
          { namespace: 'shop', service: 'cron' },
        ]);
        assert.deepEqual(await store.services({ ...RANGE, namespace: 'billing' }), [{ namespace: 'billing', service: 'ledger' }]);
        assert.deepEqual(await store.services({ fromMs: T0 - 6 * HOUR, toMs: T0 - 4 * HOUR }), [{ namespace: 'shop', service: 'old' }]);
      });
    });

    void it('retention deletes raw spans and rollups older than the policy, in batches', async () => {
      await withStore(
        async (store) => {
          const DAY = 24 * HOUR;
          const now = T0 + 40 * DAY;
          const ancient = Array.from({ length: 25 }, (_, i) => span({ startMs: T0 + i * MIN })); // 40 days old: both go
          const weekOld = Array.from({ length: 12 }, (_, i) => span({ namespace: i % 2 ? 'shop' : 'billing', startMs: now - 8 * DAY + i })); // raw goes, rollups stay
          const fresh = span({ startMs: now - HOUR });
          await store.insert([...ancient, ...weekOld, fresh]);
          await store.appendAlertEvent({ namespace: 'shop', source: 'Slo/x', state: 'firing', summary: 's', severity: 'page', atMs: T0, notification: 'none', details: {} });
          const result = await store.enforceRetention(now, { spansMs: 7 * DAY, rollupsMs: 35 * DAY });
          assert.equal(result.spans, 37);
          assert.equal(result.rollups, 25, 'one rollup row per ancient minute');
          assert.deepEqual(await store.trace('shop', ancient[0]!.traceId), []);
          assert.deepEqual(await store.trace('shop', weekOld[1]!.traceId), []);
          assert.equal((await store.trace('shop', fresh.traceId)).length, 1);
          assert.deepEqual(await store.red({ namespace: 'shop', group: 'service', fromMs: T0, toMs: T0 + DAY }), []);
          const week = await store.red({ namespace: 'shop', group: 'service', fromMs: now - 9 * DAY, toMs: now - 7 * DAY });
          assert.equal(week[0]?.count, 6, 'rollups outlive the raw spans');
          assert.deepEqual(await store.alertEvents({}), [], 'alert history goes with the rollups');
          assert.deepEqual(await store.enforceRetention(now, { spansMs: 7 * DAY, rollupsMs: 35 * DAY }), { spans: 0, rollups: 0 });
        },
        { retentionBatch: 4 },
      );
    });

    void it('alert events: appended, read newest first with filters and limit', async () => {
      await withStore(async (store) => {
        const base = { summary: 'burn 1h/5m 16.2x ≥ 14.4x', severity: 'page' as const, notification: 'delivered' };
        await store.appendAlertEvent({ ...base, namespace: 'shop', source: 'Slo/checkout', state: 'firing', atMs: T0, details: { burn: 16.2, page: true, window: '1h' } });
        await store.appendAlertEvent({ ...base, namespace: 'shop', source: 'Slo/checkout', state: 'resolved', atMs: T0 + MIN, details: {} });
        await store.appendAlertEvent({ ...base, namespace: 'billing', source: 'AlertRule/p99', state: 'firing', atMs: T0 + 2 * MIN, details: {}, notification: 'failed: 502' });
        const all = await store.alertEvents({});
        assert.deepEqual(all.map((e) => [e.source, e.state]), [
          ['AlertRule/p99', 'firing'],
          ['Slo/checkout', 'resolved'],
          ['Slo/checkout', 'firing'],
        ]);
        assert.deepEqual(all[2], { ...base, namespace: 'shop', source: 'Slo/checkout', state: 'firing', atMs: T0, details: { burn: 16.2, page: true, window: '1h' } });
        assert.equal(all[0]!.notification, 'failed: 502');
        assert.deepEqual((await store.alertEvents({ namespace: 'shop' })).length, 2);
        assert.deepEqual((await store.alertEvents({ source: 'AlertRule/p99' })).map((e) => e.namespace), ['billing']);
        assert.deepEqual((await store.alertEvents({ fromMs: T0 + MIN })).length, 2);
        assert.deepEqual((await store.alertEvents({ limit: 1 })).map((e) => e.source), ['AlertRule/p99']);
      });
    });

    void it('exclusive: one run of a named job at a time; released after, also on failure', async () => {
      await withStore(async (store) => {
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        let runs = 0;
        const first = store.exclusive('slo-eval', async () => {
          runs++;
          await gate;
        });
        assert.equal(await store.exclusive('slo-eval', async () => void runs++), false);
        assert.equal(await store.exclusive('other-job', async () => {}), true, 'other names are not held');
        release();
        assert.equal(await first, true);
        assert.equal(runs, 1);
        await assert.rejects(store.exclusive('slo-eval', async () => Promise.reject(new Error('job failed'))), /job failed/);
        assert.equal(await store.exclusive('slo-eval', async () => void runs++), true);
        assert.equal(runs, 2);
      });
    });
  });
}
