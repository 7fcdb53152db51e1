import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AuditVerifier, PlinthError } from '@plinth/core';
import type { Store } from '../store/types.js';
import { Auditor } from './audit.js';
import { openTestStore, silentLog, type TestStore } from './test-helpers.js';

const alice = { subject: 'ServiceAccount:retail/alice', namespace: 'retail', name: 'alice', via: 'jwt' as const };

void describe('Auditor', () => {
  let ts: TestStore;
  before(async () => {
    ts = await openTestStore();
  });
  after(async () => {
    await ts.close();
  });

  void it('writes chained entries that verify', async () => {
    const audit = new Auditor(ts.store, silentLog, () => Date.parse('2026-01-02T03:04:05.000Z'));
    await audit.record({ principal: alice, action: 'create', kind: 'Config', namespace: 'retail', name: 'checkout', outcome: 'allowed', source: '10.0.0.1', revisionBefore: null, revisionAfter: 3 });
    await audit.record({ principal: undefined, action: 'login', kind: 'ServiceAccount', namespace: '', name: '', outcome: 'denied', source: '10.0.0.2', detail: 'unknown or revoked credential' });
    await audit.record({ principal: alice, action: 'delete', kind: 'Secret', namespace: 'retail', name: 'db', outcome: 'failed', source: '10.0.0.1' });
    const entries = await ts.store.readAudit(0, 100);
    assert.equal(entries.length, 3);
    assert.equal(entries[0]!.actor, 'ServiceAccount:retail/alice');
    assert.equal(entries[0]!.time, '2026-01-02T03:04:05.000Z');
    assert.equal(entries[0]!.revisionAfter, 3);
    assert.equal(entries[1]!.actor, 'anonymous');
    assert.equal(entries[1]!.detail, 'unknown or revoked credential');
    assert.equal(entries[2]!.revisionBefore, null);
    assert.equal(entries[2]!.detail, null);
    const v = new AuditVerifier();
    for (const e of entries) assert.ok(v.push(e));
    assert.deepEqual(v.finish(await ts.store.auditHead()), { ok: true, checked: 3 });
  });

  void it('throws UNAVAILABLE when the log cannot be written, never dropping the entry silently', async () => {
    const broken = new Proxy(ts.store, {
      get(target, prop, receiver) {
        if (prop === 'appendAudit') return () => Promise.reject(new Error('disk full'));
        return Reflect.get(target, prop, receiver) as unknown;
      },
    }) as Store;
    const audit = new Auditor(broken, silentLog);
    await assert.rejects(
      audit.record({ principal: alice, action: 'update', kind: 'Config', namespace: 'retail', name: 'x', outcome: 'allowed', source: 'test' }),
      (e: unknown) => e instanceof PlinthError && e.status === 503,
    );
  });
});
