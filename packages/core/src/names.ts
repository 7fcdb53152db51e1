import { PlinthError, type FieldError } from './errors.js';

/** DNS-1123 label: what namespaces and names may be, so they are safe in URLs, files and DNS. */
const NAME_RE = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
export const MAX_NAME_LENGTH = 253;
export const MAX_NAMESPACE_LENGTH = 63;
/** Label keys: optional DNS prefix + '/' + name, like Kubernetes. */
const LABEL_KEY_NAME_RE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE_RE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;
export const MAX_LABELS = 64;

export function nameError(value: string, what: 'name' | 'namespace'): string | undefined {
  const max = what === 'name' ? MAX_NAME_LENGTH : MAX_NAMESPACE_LENGTH;
  if (value.length === 0) return `${what} must not be empty`;
  if (value.length > max) return `${what} must be at most ${max} characters`;
  if (!NAME_RE.test(value)) {
    return `${what} must consist of lower-case letters, digits, '-' and '.', and start and end with a letter or digit`;
  }
  return undefined;
}

export function assertName(value: string, what: 'name' | 'namespace', field = `metadata.${what}`): void {
  const msg = nameError(value, what);
  if (msg) throw new PlinthError('VALIDATION_FAILED', `${field}: ${msg}`, { errors: [{ field, message: msg }] });
}

export function labelKeyError(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > 253 || !NAME_RE.test(prefix))) return 'label key prefix must be a DNS subdomain';
  if (name.length === 0 || name.length > 63 || !LABEL_KEY_NAME_RE.test(name)) {
    return 'label key name must be 1-63 characters of letters, digits, "-", "_" or ".", starting and ending alphanumeric';
  }
  return undefined;
}

export function labelValueError(value: string): string | undefined {
  if (value.length > 63 || !LABEL_VALUE_RE.test(value)) {
    return 'label value must be at most 63 characters of letters, digits, "-", "_" or ".", starting and ending alphanumeric';
  }
  return undefined;
}

export function labelsErrors(labels: Record<string, string>, field = 'metadata.labels'): FieldError[] {
  const errors: FieldError[] = [];
  const keys = Object.keys(labels);
  if (keys.length > MAX_LABELS) errors.push({ field, message: `at most ${MAX_LABELS} labels` });
  for (const k of keys) {
    const ke = labelKeyError(k);
    if (ke) errors.push({ field: `${field}[${JSON.stringify(k)}]`, message: ke });
    const v = labels[k];
    if (typeof v !== 'string') {
      errors.push({ field: `${field}[${JSON.stringify(k)}]`, message: 'expected a string' });
      continue;
    }
    const ve = labelValueError(v);
    if (ve) errors.push({ field: `${field}[${JSON.stringify(k)}]`, message: ve });
  }
  return errors;
}
