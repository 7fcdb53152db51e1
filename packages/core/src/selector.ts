import { PlinthError } from './errors.js';
import { labelKeyError, labelValueError } from './names.js';

/**
 * Label selectors in the Kubernetes syntax users already know:
 * `team=orders,tier!=canary,env in (prod,staging),!legacy,lane`.
 */
export type Requirement =
  | { op: 'eq'; key: string; value: string }
  | { op: 'neq'; key: string; value: string }
  | { op: 'in'; key: string; values: string[] }
  | { op: 'notin'; key: string; values: string[] }
  | { op: 'exists'; key: string }
  | { op: 'notexists'; key: string };

export interface Selector {
  readonly requirements: readonly Requirement[];
  readonly source: string;
}

export const EVERYTHING: Selector = { requirements: [], source: '' };
export const MAX_SELECTOR_LENGTH = 4096;

function fail(source: string, why: string): never {
  throw new PlinthError('INVALID_SELECTOR', `selector ${JSON.stringify(source)}: ${why}`);
}

/** Splits on commas that are not inside parentheses. */
function splitTerms(source: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      out.push(source.slice(start, i));
      start = i + 1;
    }
    if (depth < 0) fail(source, 'unbalanced parentheses');
  }
  if (depth !== 0) fail(source, 'unbalanced parentheses');
  out.push(source.slice(start));
  return out.map((t) => t.trim());
}

function checkKey(source: string, key: string): string {
  const err = labelKeyError(key);
  if (err) fail(source, `${JSON.stringify(key)}: ${err}`);
  return key;
}

function checkValue(source: string, value: string): string {
  const err = labelValueError(value);
  if (err) fail(source, `${JSON.stringify(value)}: ${err}`);
  return value;
}

export function parseSelector(source: string | undefined | null): Selector {
  if (source === undefined || source === null || source.trim() === '') return EVERYTHING;
  if (source.length > MAX_SELECTOR_LENGTH) fail(source.slice(0, 32) + '...', `longer than ${MAX_SELECTOR_LENGTH} characters`);
  const requirements: Requirement[] = [];
  for (const term of splitTerms(source)) {
    if (term === '') fail(source, 'empty term');
    let m: RegExpExecArray | null;
    if ((m = /^([^\s=!(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(term))) {
      const key = checkKey(source, m[1]!);
      const values = m[3]!
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '')
        .map((v) => checkValue(source, v));
      if (values.length === 0) fail(source, `${m[2]} needs at least one value`);
      requirements.push({ op: m[2] === 'in' ? 'in' : 'notin', key, values });
    } else if ((m = /^([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)$/.exec(term))) {
      const key = checkKey(source, m[1]!);
      const value = checkValue(source, m[3]!);
      requirements.push(m[2] === '!=' ? { op: 'neq', key, value } : { op: 'eq', key, value });
    } else if ((m = /^!\s*([^\s=!(),]+)$/.exec(term))) {
      requirements.push({ op: 'notexists', key: checkKey(source, m[1]!) });
    } else if ((m = /^([^\s=!(),]+)$/.exec(term))) {
      requirements.push({ op: 'exists', key: checkKey(source, m[1]!) });
    } else {
      fail(source, `cannot parse ${JSON.stringify(term)}`);
    }
  }
  return { requirements, source };
}

export function matchesSelector(selector: Selector, labels: Readonly<Record<string, string>> | undefined): boolean {
  const l = labels ?? {};
  for (const r of selector.requirements) {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    const v = has ? l[r.key] : undefined;
    switch (r.op) {
      case 'eq':
        if (v !== r.value) return false;
        break;
      case 'neq':
        if (v === r.value) return false;
        break;
      case 'in':
        if (v === undefined || !r.values.includes(v)) return false;
        break;
      case 'notin':
        if (v !== undefined && r.values.includes(v)) return false;
        break;
      case 'exists':
        if (!has) return false;
        break;
      case 'notexists':
        if (has) return false;
        break;
    }
  }
  return true;
}

/** Selector from a plain `{key: value}` map (every pair must match). */
export function selectorFromLabels(labels: Record<string, string>): Selector {
  const requirements: Requirement[] = Object.entries(labels).map(([key, value]) => ({ op: 'eq', key, value }));
  return { requirements, source: requirements.map((r) => `${r.key}=${(r as { value: string }).value}`).join(',') };
}
