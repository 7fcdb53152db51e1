import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PlinthError, VERBS, type PolicyRule } from '@plinth/core';
import type { Store } from '../store/types.js';
import { Rbac } from './rbac.js';
import { fakeResource, silentLog } from './test-helpers.js';

const ALICE = 'ServiceAccount:retail/alice';
const BOB = 'ServiceAccount:retail/bob';

class Fixture {
  rev = 0;
  // These tests drive the index through change events only; load() (the one store read) is covered elsewhere.
  rbac = new Rbac(undefined as unknown as Store, silentLog);

  role(ns: string, name: string, rules: PolicyRule[], type: 'ADDED' | 'MODIFIED' = 'ADDED'): void {
    const revision = ++this.rev;
    this.rbac.apply({ type, revision, resource: fakeResource('Role', ns, name, { rules }, revision) });
  }

  bind(ns: string, name: string, role: string, subjects: string[]): void {
    const revision = ++this.rev;
    const spec = {
      role,
      subjects: subjects.map((s) => {
        const [namespace, n] = s.replace('ServiceAccount:', '').split('/');
        return { kind: 'ServiceAccount', namespace, name: n };
      }),
    };
    this.rbac.apply({ type: 'ADDED', revision, resource: fakeResource('RoleBinding', ns, name, spec, revision) });
  }

  remove(kind: 'Role' | 'RoleBinding', ns: string, name: string): void {
    const revision = ++this.rev;
    this.rbac.apply({ type: 'DELETED', revision, resource: fakeResource(kind, ns, name, kind === 'Role' ? { rules: [] } : { role: 'x', subjects: [] }, revision) });
  }
}

function denied(fn: () => void): void {
  assert.throws(fn, (e: unknown) => e instanceof PlinthError && e.code === 'escalation_denied');
}

void describe('Rbac decisions', () => {
  void it('grants exactly the verbs, kinds and namespaces a bound role names', () => {
    const f = new Fixture();
    f.role('retail', 'reader', [{ verbs: ['get', 'list'], kinds: ['Config'], namespaces: ['retail'] }]);
    f.bind('retail', 'alice-reads', 'reader', [ALICE]);
    assert.equal(f.rbac.can(ALICE, 'get', 'Config', 'retail'), true);
    assert.equal(f.rbac.can(ALICE, 'list', 'Config', 'retail'), true);
    assert.equal(f.rbac.can(ALICE, 'delete', 'Config', 'retail'), false);
    assert.equal(f.rbac.can(ALICE, 'get', 'Secret', 'retail'), false);
    assert.equal(f.rbac.can(ALICE, 'get', 'Config', 'payments'), false);
    assert.equal(f.rbac.can(BOB, 'get', 'Config', 'retail'), false, 'not bound');
  });

  void it('honours * for verbs, kinds and namespaces', () => {
    const f = new Fixture();
    f.role('ops', 'all-verbs', [{ verbs: ['*'], kinds: ['Config'], namespaces: ['retail'] }]);
    f.role('ops', 'all-kinds', [{ verbs: ['get'], kinds: ['*'], namespaces: ['retail'] }]);
    f.role('ops', 'all-ns', [{ verbs: ['list'], kinds: ['Instance'], namespaces: ['*'] }]);
    f.bind('ops', 'a', 'all-verbs', [ALICE]);
    f.bind('ops', 'b', 'all-kinds', [ALICE]);
    f.bind('ops', 'c', 'all-ns', [ALICE]);
    assert.equal(f.rbac.can(ALICE, 'delete', 'Config', 'retail'), true);
    assert.equal(f.rbac.can(ALICE, 'reveal', 'Config', 'retail'), true);
    assert.equal(f.rbac.can(ALICE, 'delete', 'Config', 'payments'), false);
    assert.equal(f.rbac.can(ALICE, 'get', 'Secret', 'retail'), true);
    assert.equal(f.rbac.can(ALICE, 'get', 'AuditLog', 'retail'), true);
    assert.equal(f.rbac.can(ALICE, 'update', 'Secret', 'retail'), false);
    assert.equal(f.rbac.can(ALICE, 'list', 'Instance', 'anything'), true);
    assert.equal(f.rbac.can(ALICE, 'watch', 'Instance', 'anything'), false);
  });

  void it('resolves a binding only to the role of its own namespace', () => {
    const f = new Fixture();
    f.role('payments', 'editor', [{ verbs: ['*'], kinds: ['*'], namespaces: ['*'] }]);
    f.bind('retail', 'alice-edits', 'editor', [ALICE]);
    assert.equal(f.rbac.can(ALICE, 'get', 'Config', 'retail'), false, 'retail/editor does not exist');
    f.role('retail', 'editor', [{ verbs: ['update'], kinds: ['Config'], namespaces: ['retail'] }]);
    assert.equal(f.rbac.can(ALICE, 'update', 'Config', 'retail'), true);
    assert.equal(f.rbac.can(ALICE, 'update', 'Config', 'payments'), false);
  });

  void it('drops memoized decisions when a role or binding changes', () => {
    const f = new Fixture();
    f.role('retail', 'writer', [{ verbs: ['get', 'update'], kinds: ['Config'], namespaces: ['retail'] }]);
    f.bind('retail', 'alice-writes', 'writer', [ALICE]);
    assert.equal(f.rbac.can(ALICE, 'update', 'Config', 'retail'), true);
    assert.equal(f.rbac.can(ALICE, 'update', 'Config', 'retail'), true, 'memoized');
    f.role('retail', 'writer', [{ verbs: ['get'], kinds: ['Config'], namespaces: ['retail'] }], 'MODIFIED');
    assert.equal(f.rbac.can(ALICE, 'update', 'Config', 'retail'), false, 'role narrowed');
    assert.equal(f.rbac.can(ALICE, 'get', 'Config', 'retail'), true);
    f.remove('RoleBinding', 'retail', 'alice-writes');
    assert.equal(f.rbac.can(ALICE, 'get', 'Config', 'retail'), false, 'binding gone');
    f.bind('retail', 'alice-writes', 'writer', [ALICE]);
    assert.equal(f.rbac.can(ALICE, 'get', 'Config', 'retail'), true);
    f.remove('Role', 'retail', 'writer');
    assert.equal(f.rbac.can(ALICE, 'get', 'Config', 'retail'), false, 'role gone');
  });

  void it('ignores events older than what it holds', () => {
    const f = new Fixture();
    f.role('retail', 'r', [{ verbs: ['get'], kinds: ['Config'], namespaces: ['retail'] }]);
    f.bind('retail', 'b', 'r', [ALICE]);
    const stale = fakeResource('Role', 'retail', 'r', { rules: [] }, 1);
    f.rbac.apply({ type: 'MODIFIED', revision: 1, resource: stale });
    assert.equal(f.rbac.can(ALICE, 'get', 'Config', 'retail'), true);
  });
});

void describe('Rbac escalation check', () => {
  void it('lets a subject grant what it holds, and nothing more', () => {
    const f = new Fixture();
    f.role('retail', 'lead', [
      { verbs: ['get', 'list', 'update'], kinds: ['Config', 'Flag'], namespaces: ['retail'] },
      { verbs: ['get'], kinds: ['Config'], namespaces: ['payments'] },
    ]);
    f.bind('retail', 'alice-leads', 'lead', [ALICE]);
    f.rbac.assertCanGrant(ALICE, [{ verbs: ['get', 'update'], kinds: ['Config'], namespaces: ['retail'] }]);
    // Held through two different rules: still held.
    f.rbac.assertCanGrant(ALICE, [{ verbs: ['get'], kinds: ['Config'], namespaces: ['retail', 'payments'] }]);
    denied(() => f.rbac.assertCanGrant(ALICE, [{ verbs: ['delete'], kinds: ['Config'], namespaces: ['retail'] }]));
    denied(() => f.rbac.assertCanGrant(ALICE, [{ verbs: ['update'], kinds: ['Config'], namespaces: ['payments'] }]));
    denied(() => f.rbac.assertCanGrant(ALICE, [{ verbs: ['get'], kinds: ['Secret'], namespaces: ['retail'] }]));
    denied(() => f.rbac.assertCanGrant(BOB, [{ verbs: ['get'], kinds: ['Config'], namespaces: ['retail'] }]));
  });

  void it('needs a wildcard held to grant a wildcard', () => {
    const f = new Fixture();
    f.role('retail', 'every-verb', [{ verbs: [...VERBS], kinds: ['Config'], namespaces: ['retail'] }]);
    f.bind('retail', 'b', 'every-verb', [ALICE]);
    denied(() => f.rbac.assertCanGrant(ALICE, [{ verbs: ['*'], kinds: ['Config'], namespaces: ['retail'] }]));
    denied(() => f.rbac.assertCanGrant(ALICE, [{ verbs: ['get'], kinds: ['*'], namespaces: ['retail'] }]));
    denied(() => f.rbac.assertCanGrant(ALICE, [{ verbs: ['get'], kinds: ['Config'], namespaces: ['*'] }]));
    f.rbac.assertCanGrant(ALICE, [{ verbs: [...VERBS], kinds: ['Config'], namespaces: ['retail'] }]);

    f.role('plinth-system', 'cluster-admin', [{ verbs: ['*'], kinds: ['*'], namespaces: ['*'] }]);
    f.bind('plinth-system', 'cluster-admin', 'cluster-admin', [BOB]);
    f.rbac.assertCanGrant(BOB, [{ verbs: ['*'], kinds: ['*'], namespaces: ['*'] }]);
    f.rbac.assertCanGrant(BOB, [{ verbs: ['reveal'], kinds: ['Secret'], namespaces: ['retail', 'payments'] }]);
  });

  void it('says which permission is missing', () => {
    const f = new Fixture();
    assert.throws(
      () => f.rbac.assertCanGrant(ALICE, [{ verbs: ['delete'], kinds: ['Secret'], namespaces: ['retail'] }]),
      (e: unknown) => e instanceof PlinthError && e.status === 403 && /delete on Secret in namespace retail/.test(e.message),
    );
  });
});
