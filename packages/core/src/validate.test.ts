import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PlinthError } from './errors.js';
import { validateResource } from './validate.js';

const where = { kind: 'Instance', namespace: 'shop', name: 'o-1' };
const doc = (spec: unknown, metadata: Record<string, unknown> = {}) => ({ apiVersion: 'plinth.dev/v1', kind: 'Instance', metadata, spec });

function fieldsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PlinthError);
    assert.equal(e.code, 'validation_failed');
    return (e.errors ?? []).map((x) => x.field);
  }
  assert.fail('expected a validation error');
}

describe('resource validation', () => {
  it('fills defaults and accepts a valid document', () => {
    const v = validateResource(doc({ service: 'orders', version: '1', address: '10.0.0.1:80' }), where);
    assert.deepEqual(v.spec, { service: 'orders', version: '1', address: '10.0.0.1:80', weight: 100, metadata: {}, health: 'passing', draining: false, leaseTtlSeconds: 15 });
  });
  it('names nested fields exactly', () => {
    assert.deepEqual(fieldsOf(() => validateResource(doc({ service: 'orders', version: '1', address: 'a', weight: -1 }), where)), ['spec.weight']);
    assert.deepEqual(
      fieldsOf(() => validateResource({ ...doc({ rules: [{ verbs: ['get'], kinds: ['A'], namespaces: ['a'] }, { verbs: ['get'], kinds: [], namespaces: ['a'] }] }), kind: 'Role' }, { kind: 'Role', namespace: 'a', name: 'r' })),
      ['spec.rules[1].kinds'],
    );
  });
  it('refuses unknown fields, bad names and labels, and documents that contradict the path', () => {
    assert.ok(fieldsOf(() => validateResource(doc({ service: 'orders', version: '1', address: 'a', wieght: 3 }), where)).includes('spec'));
    assert.deepEqual(fieldsOf(() => validateResource(doc({ service: 'o', version: '1', address: 'a' }, { name: 'other' }), where)), ['metadata.name']);
    assert.deepEqual(fieldsOf(() => validateResource(doc({ service: 'o', version: '1', address: 'a' }, { labels: { 'bad key!': 'x' } }), where)), ['metadata.labels["bad key!"]']);
    assert.deepEqual(fieldsOf(() => validateResource(doc({ service: 'o', version: '1', address: 'a' }), { ...where, name: 'UPPER' })), ['name']);
    assert.deepEqual(fieldsOf(() => validateResource(doc({ service: 'o', version: '1', address: 'a' }), { ...where, name: 'x'.repeat(254) })), ['name']);
    assert.deepEqual(fieldsOf(() => validateResource('just a string', where)), ['(root)']);
  });
  it('refuses unknown kinds with their own code', () => {
    assert.throws(() => validateResource(doc({}), { ...where, kind: 'Gizmo' }), (e: unknown) => e instanceof PlinthError && e.code === 'unknown_kind');
    assert.throws(() => validateResource(doc({}), { ...where, kind: 'SigningKey' }), (e: unknown) => e instanceof PlinthError && e.code === 'unknown_kind');
  });
});
