import { PlinthError } from '@plinth/core';

/** A non-negative integer query parameter, or undefined when absent. */
export function intParam(q: URLSearchParams, name: string, opts: { min?: number; max?: number } = {}): number | undefined {
  const raw = q.get(name);
  if (raw === null || raw === '') return undefined;
  if (!/^\d{1,15}$/.test(raw)) throw new PlinthError('INVALID_PARAMETER', `${name} must be a non-negative integer`);
  const n = Number(raw);
  if (opts.min !== undefined && n < opts.min) throw new PlinthError('INVALID_PARAMETER', `${name} must be at least ${opts.min}`);
  if (opts.max !== undefined && n > opts.max) throw new PlinthError('INVALID_PARAMETER', `${name} must be at most ${opts.max}`);
  return n;
}

/** `If-Match: 12` or `If-Match: "12"`. */
export function revisionHeader(value: string | string[] | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const v = (Array.isArray(value) ? value[0]! : value).trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
  if (!/^\d{1,15}$/.test(v)) throw new PlinthError('BAD_REQUEST', `${name} must be a revision number`);
  return Number(v);
}
