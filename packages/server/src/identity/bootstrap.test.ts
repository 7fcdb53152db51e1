import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SYSTEM_NAMESPACE } from '@plinth/core';
import { ADMIN_TOKEN_FILE, bootstrap } from './bootstrap.js';
import { IdentityService } from './identity-service.js';
import { CREDENTIAL_KIND, IDENTITY_NAMESPACE } from './kinds.js';
import { openTestStore, silentLog, testKeyring, type TestStore } from './test-helpers.js';

void describe('bootstrap', () => {
  let ts: TestStore;
  const dirs: string[] = [];
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'plinth-boot-'));
    dirs.push(d);
    return d;
  };

  before(async () => {
    ts = await openTestStore();
  });
  after(async () => {
    await ts.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  void it('creates the admin once, with its credential in an owner-only file', async () => {
    const first = await bootstrap({ store: ts.store, dataDir: ts.dir, log: silentLog });
    assert.equal(first.adminTokenFile, join(ts.dir, ADMIN_TOKEN_FILE));
    const st = statSync(first.adminTokenFile);
    assert.equal(st.mode & 0o777, 0o600);
    const token = readFileSync(first.adminTokenFile, 'utf8').trim();
    assert.match(token, /^plinth_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);

    const id = await IdentityService.start({ store: ts.store, keyring: testKeyring(), issuer: 'plinth', tokenTtlSeconds: 900, log: silentLog });
    const admin = await id.authenticate(`Bearer ${token}`);
    assert.equal(admin.subject, 'ServiceAccount:plinth-system/admin');
    assert.equal(id.can(admin, 'delete', 'Secret', 'anything'), true);
    assert.equal(id.can(admin, 'list', 'AuditLog', SYSTEM_NAMESPACE), true);
    id.assertCanGrant(admin, [{ verbs: ['*'], kinds: ['*'], namespaces: ['*'] }]);
    await id.close();

    const second = await bootstrap({ store: ts.store, dataDir: ts.dir, log: silentLog });
    assert.equal(second.adminTokenFile, undefined);
    assert.equal(readFileSync(first.adminTokenFile, 'utf8').trim(), token, 'the file is left alone');
    const creds = await ts.store.list(CREDENTIAL_KIND, { namespace: IDENTITY_NAMESPACE });
    assert.equal(creds.items.length, 1);
  });

  void it('two servers bootstrapping one empty database create one admin', async () => {
    const shared = await openTestStore();
    try {
      const [d1, d2] = [tempDir(), tempDir()];
      const results = await Promise.all([
        bootstrap({ store: shared.store, dataDir: d1, log: silentLog }),
        bootstrap({ store: shared.store, dataDir: d2, log: silentLog }),
      ]);
      const files = results.map((r) => r.adminTokenFile).filter((f) => f !== undefined);
      assert.equal(files.length, 1);
      const creds = await shared.store.list(CREDENTIAL_KIND, { namespace: IDENTITY_NAMESPACE });
      assert.equal(creds.items.length, 1);
      const accounts = await shared.store.list('ServiceAccount', { namespace: SYSTEM_NAMESPACE });
      assert.deepEqual(accounts.items.map((a) => a.metadata.name), ['admin']);
    } finally {
      await shared.close();
    }
  });

  void it('replaces a stale admin.token from an earlier install, still owner-only', async () => {
    const fresh = await openTestStore();
    try {
      const dir = tempDir();
      const { writeFileSync } = await import('node:fs');
      writeFileSync(join(dir, ADMIN_TOKEN_FILE), 'stale\n', { mode: 0o644 });
      const r = await bootstrap({ store: fresh.store, dataDir: dir, log: silentLog });
      assert.equal(statSync(r.adminTokenFile!).mode & 0o777, 0o600);
      assert.notEqual(readFileSync(r.adminTokenFile!, 'utf8'), 'stale\n');
    } finally {
      await fresh.close();
    }
  });
});
