import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { storeContract } from './contract.js';
import { SqliteStore } from './sqlite.js';

function quiet(): void {}

storeContract('sqlite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-store-'));
  const path = join(dir, 'plinth.db');
  const opened: SqliteStore[] = [];
  const openOne = async (): Promise<SqliteStore> => {
    const s = new SqliteStore(path, { onError: quiet });
    opened.push(s);
    await s.init();
    return s;
  };
  return {
    store: await openOne(),
    reopen: openOne,
    exec: async (sql) => {
      const db = new Database(path);
      try {
        db.exec(sql);
      } finally {
        db.close();
      }
    },
    cleanup: async () => {
      for (const s of opened) await s.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

void describe('SqliteStore specifics', () => {
  void it('opens the file in WAL mode with synchronous=NORMAL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-store-'));
    const store = new SqliteStore(join(dir, 'plinth.db'));
    try {
      await store.init();
      const db = new Database(join(dir, 'plinth.db'), { readonly: true });
      try {
        assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
      } finally {
        db.close();
      }
      const handle = (store as unknown as { db: Database.Database }).db;
      assert.equal(handle.pragma('synchronous', { simple: true }), 1); // NORMAL
      assert.equal(handle.pragma('busy_timeout', { simple: true }), 5000);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('works in memory', async () => {
    const store = new SqliteStore(':memory:');
    await store.init();
    try {
      const r = await store.put({ kind: 'Config', namespace: 'a', name: 'b', labels: {}, annotations: {}, spec: { v: 1 } });
      assert.equal(r.resource.metadata.revision, 1);
      assert.deepEqual(await store.get('Config', 'a', 'b'), r.resource);
    } finally {
      await store.close();
    }
  });

  void it('refuses a file written by a newer store layout, and calls before init fail clearly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-store-'));
    const path = join(dir, 'plinth.db');
    try {
      const db = new Database(path);
      db.pragma('user_version = 99');
      db.close();
      await assert.rejects(new SqliteStore(path).init(), /newer Plinth/);
      await assert.rejects(new SqliteStore(path).get('Config', 'a', 'b'), /not open/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
