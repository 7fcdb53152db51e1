import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { span, spanStoreContract } from './contract.test.helpers.js';
import { SqliteSpanStore } from './sqlite.js';

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
