import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import pg from 'pg';
import type { SpanRecord, SpanStore } from '../types.js';
import { T0, span, spanStoreContract, type FixtureOptions } from './contract.test.helpers.js';
import { bucketOf } from './histogram.js';
import { PostgresSpanStore } from './postgres.js';

const url = process.env.PLINTH_TEST_POSTGRES_URL;

async function dropSchema(schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => {});
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await c.end();
  }
}

/** A fresh schema, stores on it (several: as several servers would), and the means to drop it all. */
async function fixture(options: FixtureOptions = {}) {
  const schema = `plinth_apm_test_${randomBytes(6).toString('hex')}`;
  const opened: PostgresSpanStore[] = [];
  const openOne = async (): Promise<PostgresSpanStore> => {
    const s = new PostgresSpanStore({ url: url!, schema, onError: () => {}, retentionBatch: options.retentionBatch });
    opened.push(s);
    await s.init();
    return s;
  };
  const cleanup = async (): Promise<void> => {
    for (const s of opened) await s.close();
    await dropSchema(schema);
  };
  try {
    return { schema, store: await openOne(), peer: openOne, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

if (!url) {
  if (process.env.CI === 'true') {
    void it('PostgreSQL span store contract', () => {
      assert.fail('CI=true but PLINTH_TEST_POSTGRES_URL is not set: the PostgreSQL span store cannot be tested');
    });
  } else {
    const reason = 'PLINTH_TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)';
    console.log(`# skipping the PostgreSQL span store tests: ${reason}`);
    void it('PostgreSQL span store contract', { skip: reason }, () => {});
  }
} else {
  spanStoreContract('postgres', (options) => fixture(options));

  void describe('PostgresSpanStore specifics', () => {
    void it('two servers inserting concurrently into one schema merge their aggregates exactly', async () => {
      const f = await fixture();
      try {
        const other = await f.peer();
        // Same keys (service, endpoint, minute) from both; durations spread over many buckets.
        const make = (n: number): SpanRecord[] =>
          Array.from({ length: n }, (_, i) => span({ startMs: T0 + (i % 120) * 1000, durationMs: (i % 400) + 0.5, status: i % 25 === 0 ? 'error' : 'ok' }));
        const mine = make(2000);
        const theirs = make(2000);
        // Both also receive the same 300 spans (a retried export): counted once.
        const shared = make(300);
        const feed = async (store: SpanStore, spans: SpanRecord[]) => {
          for (let i = 0; i < spans.length; i += 100) await store.insert(spans.slice(i, i + 100));
        };
        await Promise.all([feed(f.store, [...mine, ...shared]), feed(other, [...shared, ...theirs].reverse())]);
        const all = [...mine, ...theirs, ...shared];
        const q = { namespace: 'shop', fromMs: T0, toMs: T0 + 2 * 60_000 };
        const [row] = await f.store.red({ ...q, group: 'endpoint' });
        assert.equal(row?.count, all.length);
        assert.equal(row.errors, all.filter((s) => s.status === 'error').length);
        // 100 ms is a bucket bound, so the histogram's count above it is exact: every bucket added up.
        assert.equal(bucketOf(100), bucketOf(99.99) + 1);
        const slow = all.filter((s) => s.durationMs >= 100).length;
        assert.deepEqual(await other.sli({ ...q, service: 'api', indicator: 'latency', thresholdMs: 100 }), { total: all.length, bad: slow });
      } finally {
        await f.cleanup();
      }
    });

    void it('exclusive() keeps a second server out while the first runs the job', async () => {
      const f = await fixture();
      try {
        const other = await f.peer();
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        let entered!: () => void;
        const running = new Promise<void>((r) => (entered = r));
        const first = f.store.exclusive('slo-eval', async () => {
          entered();
          await gate;
        });
        await running;
        let ran = false;
        assert.equal(await other.exclusive('slo-eval', async () => void (ran = true)), false);
        assert.equal(ran, false);
        assert.equal(await other.exclusive('alerts', async () => {}), true, 'another name is free');
        release();
        assert.equal(await first, true);
        assert.equal(await other.exclusive('slo-eval', async () => void (ran = true)), true, 'released after the run');
        assert.equal(ran, true);
      } finally {
        await f.cleanup();
      }
    });

    void it('validates the schema name; an unreachable database fails init without crashing', async () => {
      assert.throws(() => new PostgresSpanStore({ url, schema: 'Bad-Schema' }), /is not valid/);
      assert.equal(new PostgresSpanStore({ url }).schema, 'plinth_apm');
      const u = new URL(url);
      u.port = '1';
      const store = new PostgresSpanStore({ url: u.toString(), schema: 'plinth_apm_unreachable', onError: () => {} });
      await assert.rejects(store.init());
      await store.close();
    });
  });
}
