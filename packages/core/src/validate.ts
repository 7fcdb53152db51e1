import type { z } from 'zod';
import { PlinthError, type FieldError } from './errors.js';
import { getKind, type KindDef } from './kinds/index.js';
import { assertName, labelsErrors, nameError } from './names.js';
import { API_VERSION, type ResourceInput } from './resource.js';

/** `['spec','rules',2,'threshold']` → `spec.rules[2].threshold`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (typeof p === 'string' && /^[A-Za-z_$][\w$]*$/.test(p)) out += out === '' ? p : `.${p}`;
    else out += `[${JSON.stringify(String(p))}]`;
  }
  return out;
}

function issueMessage(issue: z.core.$ZodIssue): string {
  const m = issue.message.replace(/^Invalid input: /, '');
  return m.charAt(0).toLowerCase() + m.slice(1);
}

export function zodFieldErrors(error: z.ZodError, prefix: readonly PropertyKey[]): FieldError[] {
  return error.issues.map((issue) => {
    const path = [...prefix, ...issue.path];
    if (issue.code === 'unrecognized_keys') {
      return { field: formatPath(path), message: `unknown field(s): ${issue.keys.join(', ')}` };
    }
    return { field: formatPath(path) || '(root)', message: issueMessage(issue) };
  });
}

export function validationError(errors: FieldError[]): PlinthError {
  const first = errors[0];
  const detail = first ? `${first.field}: ${first.message}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''}` : 'invalid';
  return new PlinthError('VALIDATION_FAILED', detail, { errors });
}

/** Parses a spec against a kind's schema, throwing a field-addressed validation error. */
export function parseSpec<T = unknown>(def: KindDef, spec: unknown): T {
  const r = def.schema.safeParse(spec);
  if (!r.success) throw validationError(zodFieldErrors(r.error, ['spec']));
  return r.data as T;
}

export function requireKind(kind: string): KindDef {
  const def = getKind(kind);
  if (!def || def.internal) throw new PlinthError('UNKNOWN_KIND', `unknown kind ${JSON.stringify(kind.slice(0, 64))}`);
  return def;
}

export interface ValidResource {
  def: KindDef;
  kind: string;
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  spec: unknown;
}

const MAX_ANNOTATIONS_BYTES = 64 * 1024;

/**
 * Validates a client's resource document. `where` is the kind/namespace/name the request addressed;
 * the document may omit them but must not contradict them.
 */
export function validateResource(input: unknown, where: { kind: string; namespace: string; name: string }): ValidResource {
  const def = requireKind(where.kind);
  assertName(where.namespace, 'namespace', 'namespace');
  assertName(where.name, 'name', 'name');
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw validationError([{ field: '(root)', message: 'expected an object with apiVersion, kind, metadata and spec' }]);
  }
  const doc = input as ResourceInput & Record<string, unknown>;
  const errors: FieldError[] = [];
  for (const k of Object.keys(doc)) {
    if (!['apiVersion', 'kind', 'metadata', 'spec', 'status'].includes(k)) errors.push({ field: k, message: 'unknown field' });
  }
  if (doc.apiVersion !== undefined && doc.apiVersion !== API_VERSION) {
    errors.push({ field: 'apiVersion', message: `expected ${API_VERSION}` });
  }
  if (doc.kind !== undefined && doc.kind !== where.kind) errors.push({ field: 'kind', message: `expected ${where.kind}` });
  const md = doc.metadata ?? {};
  if (typeof md !== 'object' || md === null || Array.isArray(md)) {
    errors.push({ field: 'metadata', message: 'expected an object' });
    throw validationError(errors);
  }
  for (const k of Object.keys(md)) {
    if (!['namespace', 'name', 'labels', 'annotations', 'revision', 'createRevision', 'createdAt', 'updatedAt'].includes(k)) {
      errors.push({ field: `metadata.${k}`, message: 'unknown field' });
    }
  }
  if (md.namespace !== undefined && md.namespace !== where.namespace) {
    errors.push({ field: 'metadata.namespace', message: `expected ${where.namespace} (as in the path)` });
  }
  if (md.name !== undefined && md.name !== where.name) errors.push({ field: 'metadata.name', message: `expected ${where.name} (as in the path)` });
  const labels = md.labels ?? {};
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) {
    errors.push({ field: 'metadata.labels', message: 'expected a map of strings' });
  } else errors.push(...labelsErrors(labels));
  const annotations = md.annotations ?? {};
  if (typeof annotations !== 'object' || annotations === null || Array.isArray(annotations)) {
    errors.push({ field: 'metadata.annotations', message: 'expected a map of strings' });
  } else {
    for (const [k, v] of Object.entries(annotations)) {
      if (typeof v !== 'string') errors.push({ field: `metadata.annotations[${JSON.stringify(k)}]`, message: 'expected a string' });
    }
    if (JSON.stringify(annotations).length > MAX_ANNOTATIONS_BYTES) {
      errors.push({ field: 'metadata.annotations', message: `at most ${MAX_ANNOTATIONS_BYTES} bytes in all` });
    }
  }
  if (doc.spec === undefined) errors.push({ field: 'spec', message: 'required' });
  let spec: unknown;
  if (doc.spec !== undefined) {
    const r = def.schema.safeParse(doc.spec);
    if (r.success) spec = r.data;
    else errors.push(...zodFieldErrors(r.error, ['spec']));
  }
  if (errors.length > 0) throw validationError(errors);
  return { def, kind: where.kind, namespace: where.namespace, name: where.name, labels: labels as Record<string, string>, annotations: annotations as Record<string, string>, spec };
}

export { nameError };
