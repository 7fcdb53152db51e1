import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { storeContract, type StoreFixture } from './contract.js';
import { PostgresStore } from './postgres.js';

const url = process.env.PLINTH_TEST_POSTGRES_URL;

async function admin<T>(fn: (c: pg.Client) => Promise<T>, schema?: string): Promise<T> {
  const c = new pg.Client({ connectionString: url, ...(schema ? { options: `-c search_path=${schema}` } : {}) });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

function newSchema(): string {
  return `plinth_test_${randomBytes(6).toString('hex')}`;
}

/** A fresh schema with stores on it, and the means to drop it all. */
async function fixture(options: { url?: string; onError?: (m: string, e: unknown) => void } = {}): Promise<StoreFixture & { schema: string }> {
  const schema = newSchema();
  const opened: PostgresStore[] = [];
  const openOne = async (): Promise<PostgresStore> => {
    const s = new PostgresStore({ url: options.url ?? url!, schema, onError: options.onError ?? (() => {}) });
    opened.push(s);
    await s.init();
    return s;
  };
  const cleanup = async (): Promise<void> => {
    for (const s of opened) await s.close();
    await admin((c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
  };
  try {
    return { schema, store: await openOne(), reopen: openOne, peer: openOne, exec: (sql) => admin(async (c) => void (await c.query(sql)), schema), cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

if (!url) {
  if (process.env.CI === 'true') {
    void it('PostgreSQL store contract', () => {
      assert.fail('CI=true but PLINTH_TEST_POSTGRES_URL is not set: the PostgreSQL store cannot be tested');
    });
  } else {
    const reason = 'PLINTH_TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)';
    console.log(`# skipping the PostgreSQL store tests: ${reason}`);
    void it('PostgreSQL store contract', { skip: reason }, () => {});
  }
} else {
  storeContract('postgres', () => fixture());

  void describe('PostgresStore specifics', () => {
    void it('recovers from dropped connections: reconnects LISTEN, fires listeners once, keeps working', async () => {
      const app = `plinth_t_${randomBytes(5).toString('hex')}`;
      const u = new URL(url);
      u.searchParams.set('application_name', app);
      const errors: string[] = [];
      const f = await fixture({ url: u.toString(), onError: (m) => errors.push(m) });
      try {
        const other = await f.peer!();
        await f.store.put({ kind: 'Config', namespace: 'a', name: 'x', labels: {}, annotations: {}, spec: {} });
        const fired: number[] = [];
        f.store.onChange((r) => fired.push(r));
        const killed = await admin((c) =>
          c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()', [app]),
        );
        assert.ok((killed.rowCount ?? 0) >= 2, 'both stores had connections to cut');
        for (let i = 0; fired.length === 0; i++) {
          assert.ok(i < 100, 'listeners fired after the reconnect');
          await sleep(100);
        }
        await sleep(300);
        assert.deepEqual(fired, [1], 'once, with the current revision');
        assert.ok(errors.some((m) => /notification connection/.test(m)), errors.join('; '));

        // LISTEN is back: a write from the other store is heard again, and both pools work.
        const heard = new Promise<number>((resolve) => f.store.onChange(resolve));
        const r = await other.put({ kind: 'Config', namespace: 'a', name: 'y', labels: {}, annotations: {}, spec: {} });
        assert.equal(await Promise.race([heard, sleep(5000).then(() => -1)]), r.resource.metadata.revision);
        assert.equal((await f.store.put({ kind: 'Config', namespace: 'a', name: 'z', labels: {}, annotations: {}, spec: {} })).resource.metadata.revision, 3);
      } finally {
        await f.cleanup();
      }
    });

    void it('keeps schemas apart: no shared data, no cross-talk on notifications', async () => {
      const a = await fixture();
      const b = await fixture();
      try {
        assert.notEqual((a.store as PostgresStore).channel, (b.store as PostgresStore).channel);
        const heardByB: number[] = [];
        b.store.onChange((r) => heardByB.push(r));
        const bPeer = await b.peer!();
        const heardByBPeer: number[] = [];
        bPeer.onChange((r) => heardByBPeer.push(r));
        await (await a.peer!()).put({ kind: 'Config', namespace: 'a', name: 'x', labels: {}, annotations: {}, spec: {} });
        assert.equal(await b.store.get('Config', 'a', 'x'), undefined);
        assert.equal(await b.store.currentRevision(), 0);
        await sleep(300);
        assert.deepEqual(heardByB, []);
        assert.deepEqual(heardByBPeer, []);
      } finally {
        await a.cleanup();
        await b.cleanup();
      }
    });

    void it('several stores initializing one fresh schema at once all succeed', async () => {
      const schema = newSchema();
      const stores = Array.from({ length: 4 }, () => new PostgresStore({ url, schema }));
      try {
        await Promise.all(stores.map((s) => s.init()));
        const r = await stores[3]!.put({ kind: 'Config', namespace: 'a', name: 'x', labels: {}, annotations: {}, spec: {} });
        assert.deepEqual(await stores[0]!.get('Config', 'a', 'x'), r.resource);
      } finally {
        for (const s of stores) await s.close();
        await admin((c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
      }
    });

    void it('an unreachable database fails init with an error, never a crash', async () => {
      const u = new URL(url);
      u.port = '1';
      const store = new PostgresStore({ url: u.toString(), schema: newSchema(), onError: () => {} });
      await assert.rejects(store.init(), (e: unknown) => e instanceof Error);
      await store.close();
    });

    void it('validates the schema name and keeps the channel within PostgreSQL limits', async () => {
      assert.throws(() => new PostgresStore({ url, schema: 'Bad-Schema' }), /schema "Bad-Schema" is not valid/);
      assert.throws(() => new PostgresStore({ url, schema: 'x; DROP TABLE y' }), /is not valid/);
      const long = new PostgresStore({ url, schema: 'a'.repeat(63) });
      assert.ok(long.channel.length <= 63);
      assert.equal(new PostgresStore({ url }).schema, 'plinth');
      await long.close();
    });
  });
}
