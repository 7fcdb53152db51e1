import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openStore } from './index.js';
import { PostgresStore } from './postgres.js';
import { SqliteStore } from './sqlite.js';

void describe('openStore', () => {
  void it('opens SQLite in the data directory by default', () => {
    for (const spec of ['sqlite', undefined]) {
      const s = openStore(spec, '/var/lib/plinth');
      assert.ok(s instanceof SqliteStore);
      assert.equal(s.backend, 'sqlite');
      assert.equal(s.path, '/var/lib/plinth/plinth.db');
    }
  });

  void it('opens PostgreSQL for postgres:// and postgresql:// URLs, taking ?schema= out of the URL', async () => {
    const a = openStore('postgres://u:p@db.example:5432/plinth?schema=team_a&sslmode=require', '/data');
    assert.ok(a instanceof PostgresStore);
    assert.equal(a.schema, 'team_a');
    const conn = (a as unknown as { clientConfig: { connectionString: string } }).clientConfig.connectionString;
    assert.equal(conn, 'postgres://u:p@db.example:5432/plinth?sslmode=require');
    const b = openStore('postgresql://db.example/plinth', '/data');
    assert.ok(b instanceof PostgresStore);
    assert.equal(b.schema, 'plinth');
    await Promise.all([a.close(), b.close()]);
  });

  void it('rejects anything else clearly, without echoing credentials', () => {
    assert.throws(() => openStore('mysql://root:hunter2@db/plinth', '/data'), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /unsupported store URL scheme "mysql:"/);
      assert.doesNotMatch(e.message, /hunter2/);
      return true;
    });
    assert.throws(() => openStore('memory', '/data'), /unsupported store "memory": use "sqlite" or a postgres:\/\//);
    assert.throws(() => openStore('postgres://db/x?schema=Not-Valid', '/data'), /schema "Not-Valid" is not valid/);
  });
});
