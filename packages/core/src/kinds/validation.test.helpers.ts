import assert from 'node:assert/strict';
import { PlinthError } from '../errors.js';
import { validateResource } from '../validate.js';

// Specs go through validateResource, as the server's PUT does, so the field paths the tests assert are the
// ones users see.

export function validateSpec(kind: string, spec: unknown, namespace = 'retail'): unknown {
  return validateResource({ apiVersion: 'plinth.dev/v1', kind, metadata: { namespace, name: 'p' }, spec }, { kind, namespace, name: 'p' }).spec;
}

/** The validation errors of an invalid spec; fails the test if the spec is valid. */
export function specErrors(kind: string, spec: unknown, namespace = 'retail'): { field: string; message: string }[] {
  try {
    validateSpec(kind, spec, namespace);
  } catch (e) {
    assert.ok(e instanceof PlinthError, String(e));
    assert.equal(e.code, 'validation_failed');
    return e.errors ?? [];
  }
  assert.fail('expected a validation error');
}

export const specFields = (kind: string, spec: unknown, namespace = 'retail'): string[] => specErrors(kind, spec, namespace).map((e) => e.field);

/** Deep copy with one change, so each invalid case differs from a valid document in exactly one place. */
export function edit<T>(base: T, change: (d: any) => void): T {
  const d = structuredClone(base);
  change(d);
  return d;
}
