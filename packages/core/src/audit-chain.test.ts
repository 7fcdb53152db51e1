import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AUDIT_GENESIS_HASH, AuditVerifier, auditHash, type AuditEntry } from './audit-chain.js';
import { diffValues } from './diff.js';

function chain(n: number): AuditEntry[] {
  const out: AuditEntry[] = [];
  let prev = AUDIT_GENESIS_HASH;
  for (let seq = 1; seq <= n; seq++) {
    const body = { time: `2026-01-01T00:00:0${seq}Z`, actor: 'ServiceAccount:a/b', action: 'update', kind: 'Config', namespace: 'a', name: 'c', outcome: 'allowed' as const, source: '127.0.0.1', revisionBefore: seq, revisionAfter: seq + 1, detail: null };
    const hash = auditHash(prev, seq, body);
    out.push({ ...body, seq, prevHash: prev, hash });
    prev = hash;
  }
  return out;
}

function verify(entries: AuditEntry[], head?: { seq: number; hash: string }) {
  const v = new AuditVerifier();
  for (const e of entries) v.push(e);
  return v.finish(head);
}

describe('audit hash chain', () => {
  const good = chain(5);
  const head = { seq: 5, hash: good[4]!.hash };
  it('verifies an intact chain', () => assert.deepEqual(verify(good, head), { ok: true, checked: 5 }));
  it('detects an edited entry', () => {
    const edited = good.map((e) => (e.seq === 3 ? { ...e, actor: 'ServiceAccount:evil/x' } : e));
    assert.equal(verify(edited, head).problem?.seq, 3);
  });
  it('detects a removed entry in the middle', () => {
    const r = verify(good.filter((e) => e.seq !== 2), head);
    assert.equal(r.ok, false);
    assert.match(r.problem!.reason, /missing/);
  });
  it('detects removed newest entries through the head', () => {
    const r = verify(good.slice(0, 4), head);
    assert.equal(r.ok, false);
    assert.match(r.problem!.reason, /removed/);
  });
});

describe('diff', () => {
  it('reports field-level changes with readable paths', () => {
    assert.deepEqual(diffValues({ spec: { a: 1, list: [1, 2], gone: true } }, { spec: { a: 2, list: [1], added: 'x' } }), [
      { path: 'spec.a', op: 'replace', before: 1, after: 2 },
      { path: 'spec.list[1]', op: 'remove', before: 2 },
      { path: 'spec.gone', op: 'remove', before: true },
      { path: 'spec.added', op: 'add', after: 'x' },
    ]);
  });
});
