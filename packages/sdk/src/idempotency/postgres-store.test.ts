import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import pg from 'pg';
import { PostgresIdempotencyStore } from './postgres-store.js';
import { requireService, storeContract } from './store-contract.test.helpers.js';

const url = requireService('PLINTH_TEST_POSTGRES_URL', 'PostgreSQL', 'postgres://postgres@127.0.0.1:5432/test');

if (url) {
  const table = `plinth_idem_test_${randomBytes(6).toString('hex')}`;

  storeContract('postgres', async () => {
    const a = new pg.Pool({ connectionString: url, max: 4 });
    const b = new pg.Pool({ connectionString: url, max: 4 });
    const store = new PostgresIdempotencyStore({ pool: a, table });
    const peer = new PostgresIdempotencyStore({ pool: b, table });
    // Both create the table at once, as instances starting together would.
    await Promise.all([store.init(), peer.init()]);
    return {
      store,
      peer,
      cleanup: async () => {
        await a.query(`DROP TABLE IF EXISTS "${table}"`);
        await Promise.all([a.end(), b.end()]);
      },
    };
  });

  describe('PostgresIdempotencyStore specifics', () => {
    it('creates its table on first use and purges expired rows', async () => {
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      const own = `${table}_lazy`;
      try {
        const s = new PostgresIdempotencyStore({ pool, table: own });
        await s.begin('a', 'fp', 1);
        await s.begin('b', 'fp', 60_000);
        await new Promise((r) => setTimeout(r, 20));
        assert.equal(await s.purgeExpired(), 1);
        const { rows } = await pool.query<{ key: string }>(`SELECT key FROM "${own}"`);
        assert.deepEqual(rows, [{ key: 'b' }]);
      } finally {
        await pool.query(`DROP TABLE IF EXISTS "${own}"`);
        await pool.end();
      }
    });
  });
}
