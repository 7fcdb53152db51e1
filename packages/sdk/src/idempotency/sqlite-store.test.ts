import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ManualClock } from '../ratelimit/clock.js';
import { SqliteIdempotencyStore } from './sqlite-store.js';
import { storeContract } from './store-contract.test.helpers.js';

// The store opens the file itself by path (the dynamic-import path); the peer is the user-supplied Database
// form on a second connection to the same file, so races cross connections.
storeContract('sqlite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'plinth-idem-'));
  const file = join(dir, 'idem.db');
  const store = new SqliteIdempotencyStore({ database: file });
  await store.purgeExpired();
  const db = new Database(file);
  const peer = new SqliteIdempotencyStore({ database: db });
  return {
    store,
    peer,
    cleanup: async () => {
      await store.close();
      await peer.close();
      db.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('SqliteIdempotencyStore specifics', () => {
  it('leaves a Database it was given open, and purges expired rows', async () => {
    const db = new Database(':memory:');
    const clock = new ManualClock(0);
    const s = new SqliteIdempotencyStore({ database: db, table: 'idem_custom', clock });
    for (const k of ['a', 'b', 'c']) await s.begin(k, 'fp', 100);
    clock.advance(100);
    await s.begin('d', 'fp', 100);
    assert.equal(await s.purgeExpired(), 3);
    await s.close();
    assert.deepEqual(db.prepare('SELECT key FROM idem_custom').all(), [{ key: 'd' }]);
    db.close();
  });

  it('refuses a table name it could not quote safely', () => {
    assert.throws(() => new SqliteIdempotencyStore({ database: ':memory:', table: 'x; DROP TABLE y' }), TypeError);
  });
});
