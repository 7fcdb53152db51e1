export interface Change {
  path: string;
  op: 'add' | 'remove' | 'replace';
  before?: unknown;
  after?: unknown;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function join(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? (base ? `${base}.${key}` : key) : `${base}[${JSON.stringify(key)}]`;
}

/** Field-level differences between two JSON values, with user-readable paths (`spec.rules[2].threshold`). */
export function diffValues(before: unknown, after: unknown, path = '', out: Change[] = []): Change[] {
  if (isObject(before) && isObject(after)) {
    for (const k of Object.keys(before)) {
      if (!(k in after)) out.push({ path: join(path, k), op: 'remove', before: before[k] });
      else diffValues(before[k], after[k], join(path, k), out);
    }
    for (const k of Object.keys(after)) if (!(k in before)) out.push({ path: join(path, k), op: 'add', after: after[k] });
    return out;
  }
  if (Array.isArray(before) && Array.isArray(after)) {
    const n = Math.max(before.length, after.length);
    for (let i = 0; i < n; i++) {
      if (i >= before.length) out.push({ path: join(path, i), op: 'add', after: after[i] });
      else if (i >= after.length) out.push({ path: join(path, i), op: 'remove', before: before[i] });
      else diffValues(before[i], after[i], join(path, i), out);
    }
    return out;
  }
  if (JSON.stringify(before) !== JSON.stringify(after)) out.push({ path: path || '(root)', op: 'replace', before, after });
  return out;
}
