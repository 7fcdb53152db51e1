import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { T0, span, spanStoreContract } from './contract.test.helpers.js';
import { SqliteSpanStore } from './sqlite.js';
import type { WalCheckpointer } from './wal-checkpointer.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'plinth-apm-'));
}

spanStoreContract('sqlite', async (options) => {
  const dir = tempDir();
  const store = new SqliteSpanStore(join(dir, 'apm.db'), options);
  await store.init();
  return {
    store,
    cleanup: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

void describe('SqliteSpanStore specifics', () => {
  void it('opens its file owner-only, in WAL mode with synchronous=NORMAL, and keeps spans across a reopen', async () => {
    const dir = tempDir();
    const path = join(dir, 'apm.db');
    const store = new SqliteSpanStore(path);
    try {
      await store.init();
      const s = span();
      await store.insert([s]);
      for (const f of [path, `${path}-wal`, `${path}-shm`]) assert.equal(statSync(f).mode & 0o077, 0, `${f} is owner-only`);
      const handle = (store as unknown as { db: Database.Database }).db;
      assert.equal(handle.pragma('journal_mode', { simple: true }), 'wal');
      assert.equal(handle.pragma('synchronous', { simple: true }), 1); // NORMAL
      await store.close();
      await store.init();
      assert.deepEqual(await store.trace('shop', s.traceId), [s]);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('keeps each distinct resource once, and retention drops those no kept span uses', async () => {
    const dir = tempDir();
    const store = new SqliteSpanStore(join(dir, 'apm.db'));
    try {
      await store.init();
      const handle = (store as unknown as { db: Database.Database }).db;
      const DAY = 86_400_000;
      const pod = (name: string) => ({ 'service.name': 'api', 'host.name': name });
      // Equal resources in separate objects (separate requests), and one object shared by a batch.
      const shared = pod('b');
      const old = [span({ resource: pod('a') }), span({ resource: pod('a') })];
      const fresh = [span({ startMs: T0 + 10 * DAY, resource: shared }), span({ startMs: T0 + 10 * DAY, resource: shared })];
      await store.insert(old);
      await store.insert([span({ resource: pod('a') }), ...fresh]);
      assert.equal((handle.prepare('SELECT count(*) AS n FROM resources').get() as { n: number }).n, 2);
      assert.deepEqual((await store.trace('shop', old[1]!.traceId))[0]?.resource, pod('a'));
      const r = await store.enforceRetention(T0 + 10 * DAY + 1, { spansMs: DAY, rollupsMs: 35 * DAY });
      assert.equal(r.spans, 3);
      assert.deepEqual(handle.prepare('SELECT json FROM resources').all(), [{ json: JSON.stringify(pod('b')) }]);
      assert.deepEqual((await store.trace('shop', fresh[0]!.traceId))[0]?.resource, pod('b'));
      // A resource seen again after retention dropped it is stored anew.
      const back = span({ startMs: T0 + 10 * DAY, resource: pod('a') });
      await store.insert([back]);
      assert.deepEqual(await store.trace('shop', back.traceId), [back]);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('migrates a layout-1 file: spans, resources and searches survive, the time indexes are rebuilt', async () => {
    const dir = tempDir();
    const path = join(dir, 'apm.db');
    const s = span({ startMs: T0 + 1500.25, attributes: { 'http.route': '/a' }, resource: { 'service.name': 'api', 'host.name': 'h1' } });
    try {
      const db = new Database(path);
      db.exec(LAYOUT_1_SPANS);
      const values = [s.traceId, s.spanId, s.namespace, null, s.service, null, s.name, s.kind, s.startMs, s.durationMs, s.status, null, s.endpoint, null, null, null, 0, null, null, 0];
      const insert = db.prepare(`INSERT INTO spans VALUES (${values.map(() => '?').join(', ')}, ?, ?, ?)`);
      insert.run(...values, JSON.stringify(s.attributes), JSON.stringify(s.resource), '[]');
      insert.run(...values.map((v, i) => (i === 1 ? 'ffffffffffffffff' : v)), '{}', JSON.stringify(s.resource), '[]');
      db.pragma('user_version = 1');
      db.close();

      const store = new SqliteSpanStore(path);
      try {
        await store.init();
        const handle = (store as unknown as { db: Database.Database }).db;
        assert.equal(handle.pragma('user_version', { simple: true }), 2);
        const indexes = (handle.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spans' AND sql IS NOT NULL ORDER BY name").all() as { name: string }[]).map((r) => r.name);
        assert.deepEqual(indexes, ['spans_by_second', 'spans_by_service_second']);
        assert.equal((handle.prepare('SELECT count(*) AS n FROM resources').get() as { n: number }).n, 1);
        const trace = await store.trace('shop', s.traceId);
        assert.deepEqual(trace.find((x) => x.spanId === s.spanId), s);
        assert.equal(trace.length, 2);
        const found = await store.searchTraces({ namespace: 'shop', service: 'api', fromMs: T0 + 1500, toMs: T0 + 1501 });
        assert.deepEqual(found.map((t) => [t.traceId, t.spanCount]), [[s.traceId, 2]]);
        assert.deepEqual(await store.searchTraces({ namespace: 'shop', fromMs: T0 + 1500.5, toMs: T0 + 2000 }), [], 'start_ms still bounds within the second');
        await store.insert([span({ traceId: s.traceId, resource: { ...s.resource } })]);
        assert.equal((handle.prepare('SELECT count(*) AS n FROM resources').get() as { n: number }).n, 1, 'the migrated resource is reused');
      } finally {
        await store.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('checkpoints the WAL from its thread, holds inserts while one runs, and checkpoints itself once the thread is gone', async () => {
    const dir = tempDir();
    const path = join(dir, 'apm.db');
    const errors: [string, boolean][] = [];
    const store = new SqliteSpanStore(path, { onError: (message) => errors.push([message, /gone/.test(message)]) });
    try {
      await store.init();
      const internals = store as unknown as { db: Database.Database; checkpointer: WalCheckpointer };
      const handle = internals.db;
      const checkpointer = internals.checkpointer;
      assert.ok(checkpointer.alive);
      assert.equal(handle.pragma('wal_autocheckpoint', { simple: true }), 32000, 'the writer checkpoints only as a backstop');
      const before = statSync(path).size;
      await store.insert(Array.from({ length: 200 }, () => span({ attributes: { pad: 'x'.repeat(500) } })));
      assert.equal(statSync(path).size, before, 'committed to the WAL only');

      let checkpointed = false;
      const running = checkpointer.run().then(() => (checkpointed = true));
      const later = span();
      await store.insert([later]);
      assert.ok(checkpointed, 'the insert waited for the running checkpoint');
      await running;
      assert.ok(statSync(path).size > before + 100_000, 'the thread copied the pages into the database file');
      assert.ok((checkpointer.lastWalFrames ?? 0) > 0);

      await (checkpointer as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
      for (let i = 0; i < 100 && checkpointer.alive; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(checkpointer.alive, false);
      assert.deepEqual(errors, [['the WAL checkpoint thread is gone; checkpointing on the event loop', true]]);
      assert.equal(handle.pragma('wal_autocheckpoint', { simple: true }), 8000);
      const after = span();
      await store.insert([after]);
      assert.equal((await store.trace('shop', after.traceId)).length, 1);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('reads traces by their key and searches by the second indexes (query plans)', async () => {
    const store = new SqliteSpanStore(':memory:');
    try {
      await store.init();
      const handle = (store as unknown as { db: Database.Database }).db;
      const plans: string[] = [];
      const prepare = handle.prepare.bind(handle);
      handle.prepare = ((sql: string) => {
        if (/^\s*SELECT/i.test(sql)) plans.push((prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...new Array<null>((sql.match(/\?/g) ?? []).length).fill(null)) as { detail: string }[]).map((r) => r.detail).join('; '));
        return prepare(sql);
      }) as typeof handle.prepare;
      const s = span();
      await store.insert([s]);
      await store.trace('shop', s.traceId);
      await store.searchTraces({ namespace: 'shop', fromMs: T0 - 1, toMs: T0 + 1 });
      await store.searchTraces({ namespace: 'shop', service: 'api', fromMs: T0 - 1, toMs: T0 + 1 });
      const [trace, search, summary, byService] = plans;
      assert.match(trace!, /SEARCH s USING INDEX sqlite_autoindex_spans_1 \(trace_id=\?\)/);
      assert.match(search!, /USING INDEX spans_by_second \(namespace=\? AND start_s>\? AND start_s<\?\)/);
      assert.match(summary!, /USING INDEX sqlite_autoindex_spans_1 \(trace_id=\?\)/);
      assert.match(byService!, /USING INDEX spans_by_service_second \(namespace=\? AND service=\? AND start_s>\? AND start_s<\?\)/);
    } finally {
      await store.close();
    }
  });

  void it('refuses a file of a newer layout; calls before init fail clearly', async () => {
    const dir = tempDir();
    const path = join(dir, 'apm.db');
    try {
      const db = new Database(path);
      db.pragma('user_version = 99');
      db.close();
      await assert.rejects(new SqliteSpanStore(path).init(), /newer Plinth/);
      await assert.rejects(new SqliteSpanStore(path).insert([span()]), /not open/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The spans table as layout 1 made it (the other tables were the same). */
const LAYOUT_1_SPANS = `
CREATE TABLE spans (
  trace_id TEXT NOT NULL, span_id TEXT NOT NULL, namespace TEXT NOT NULL, parent_span_id TEXT, service TEXT NOT NULL, version TEXT,
  name TEXT NOT NULL, kind TEXT NOT NULL, start_ms REAL NOT NULL, duration_ms REAL NOT NULL, status TEXT NOT NULL, status_message TEXT,
  endpoint TEXT, peer TEXT, http_status INTEGER, lane TEXT, stress INTEGER NOT NULL, region TEXT, caller TEXT, is_error INTEGER NOT NULL,
  attributes TEXT NOT NULL, resource TEXT NOT NULL, events TEXT NOT NULL,
  PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX spans_by_service ON spans (namespace, service, start_ms);
CREATE INDEX spans_by_start ON spans (namespace, start_ms);
`;
