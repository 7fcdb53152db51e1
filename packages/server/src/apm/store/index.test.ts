import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { openSpanStore, PostgresSpanStore, SqliteSpanStore } from './index.js';

void it('openSpanStore: sqlite in the data dir, or PostgreSQL in a schema apart from the resources', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-apm-'));
  try {
    for (const spec of [undefined, 'sqlite']) {
      const s = openSpanStore(spec, dir);
      assert.ok(s instanceof SqliteSpanStore);
      assert.equal(s.path, join(dir, 'apm.db'));
    }
    const schemaOf = async (spec: string) => {
      const s = openSpanStore(spec, dir) as PostgresSpanStore;
      assert.ok(s instanceof PostgresSpanStore);
      await s.close();
      return s.schema;
    };
    assert.equal(await schemaOf('postgres://u@127.0.0.1:5432/db'), 'plinth_apm');
    assert.equal(await schemaOf('postgresql://u@127.0.0.1:5432/db?schema=team_a'), 'team_a_apm');
    assert.equal(await schemaOf('postgres://u@127.0.0.1:5432/db?schema=team_a&apmSchema=traces'), 'traces');
    assert.throws(() => openSpanStore('mysql://u:secret@h/db', dir), (e: Error) => /"mysql:"/.test(e.message) && !e.message.includes('secret'));
    assert.throws(() => openSpanStore('postgres://[bad', dir), /not a valid postgres/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
