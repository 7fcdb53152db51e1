import { API_VERSION, type Resource, type WatchEvent } from '@plinth/core';
import { stringify as toYaml } from 'yaml';
import { UsageError } from './errors.js';

export const OUTPUT_FORMATS = ['table', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export function parseOutputFormat(value: string | undefined): OutputFormat {
  const v = (value ?? 'table').toLowerCase();
  if ((OUTPUT_FORMATS as readonly string[]).includes(v)) return v as OutputFormat;
  throw new UsageError(`unknown output format ${JSON.stringify(value)} (expected ${OUTPUT_FORMATS.join(', ')})`);
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

export function yaml(value: unknown): string {
  // lineWidth 0: never fold long strings, so config content round-trips byte for byte through apply.
  return toYaml(value, { lineWidth: 0, aliasDuplicateObjects: false }).replace(/\n$/, '');
}

/** Columns padded to the widest cell, three spaces apart, like kubectl: easy to read and to `awk`. */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** Compact age the way kubectl prints it: 45s, 12m, 5h, 3d. */
export function formatAge(iso: string | undefined, now: number = Date.now()): string {
  if (!iso) return '<unknown>';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '<unknown>';
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  return d < 730 ? `${d}d` : `${Math.floor(d / 365)}y`;
}

function cell(v: unknown): string {
  if (v === undefined || v === null || v === '') return '<none>';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : s.slice(0, max - 3) + '...';
}

interface Column {
  header: string;
  value(r: Resource): string;
}

const spec = (r: Resource): Record<string, unknown> => (r.spec && typeof r.spec === 'object' ? r.spec : {});

/** The few spec fields worth a column, per kind; other kinds show the common columns only. */
const KIND_COLUMNS: Record<string, Column[]> = {
  Instance: [
    { header: 'SERVICE', value: (r) => cell(spec(r)['service']) },
    { header: 'VERSION', value: (r) => cell(spec(r)['version']) },
    { header: 'LANE', value: (r) => cell(spec(r)['lane']) },
    { header: 'ADDRESS', value: (r) => cell(spec(r)['address']) },
    { header: 'HEALTH', value: (r) => cell(spec(r)['health']) + (spec(r)['draining'] === true ? ',draining' : '') },
  ],
  Config: [{ header: 'FORMAT', value: (r) => cell(spec(r)['format']) }],
  Secret: [
    {
      header: 'KEYS',
      value: (r) => {
        const keys = spec(r)['keys'];
        return Array.isArray(keys) ? truncate(keys.join(',') || '<none>', 60) : '<none>';
      },
    },
  ],
  Service: [{ header: 'TEAM', value: (r) => cell(spec(r)['team']) }],
};

export function resourceTable(items: readonly Resource[], now: number = Date.now()): string {
  const kinds = new Set(items.map((r) => r.kind));
  // Kind-specific columns only make sense when every row is of that kind.
  const extra = kinds.size === 1 ? (KIND_COLUMNS[[...kinds][0]!] ?? []) : [];
  const headers = ['NAMESPACE', 'NAME', ...(kinds.size > 1 ? ['KIND'] : []), 'REVISION', 'AGE', ...extra.map((c) => c.header)];
  const rows = items.map((r) => [
    r.metadata.namespace,
    r.metadata.name,
    ...(kinds.size > 1 ? [r.kind] : []),
    String(r.metadata.revision),
    formatAge(r.metadata.createdAt, now),
    ...extra.map((c) => c.value(r)),
  ]);
  return renderTable(headers, rows);
}

/** One resource: the document itself in json/yaml (so `get -o yaml > f.yaml; apply -f f.yaml` round-trips). */
export function formatResource(r: Resource, format: OutputFormat, now?: number): string {
  if (format === 'json') return json(r);
  if (format === 'yaml') return yaml(r);
  return resourceTable([r], now);
}

/** Many resources: a `List` document in json/yaml (carrying the list's revision, the point to watch from). */
export function formatResourceList(items: readonly Resource[], format: OutputFormat, revision?: number, now?: number): string {
  const list = { apiVersion: API_VERSION, kind: 'List', ...(revision !== undefined ? { revision } : {}), items };
  if (format === 'json') return json(list);
  if (format === 'yaml') return yaml(list);
  return resourceTable(items, now);
}

export function formatHistory(items: readonly WatchEvent[], format: OutputFormat): string {
  if (format === 'json') return json({ items });
  if (format === 'yaml') return yaml({ items });
  return renderTable(
    ['REVISION', 'TYPE', 'TIME'],
    items.map((e) => [String(e.revision), e.type, e.resource?.metadata?.updatedAt ?? '<unknown>']),
  );
}

export function resourceRef(r: { kind: string; metadata: { namespace: string; name: string } }): string {
  return `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`;
}

/** One watch event per line: `MODIFIED Config/retail/checkout rev 43`, or one JSON object per line. */
export function formatWatchEvent(e: WatchEvent, format: OutputFormat): string {
  if (format === 'json') return JSON.stringify(e);
  if (format === 'yaml') return '---\n' + yaml(e);
  return `${e.type} ${resourceRef(e.resource)} rev ${e.revision}`;
}

/** The resource as a user reads it in a diff: the parts that can change, without revision bookkeeping. */
export function diffView(r: Resource): unknown {
  return {
    apiVersion: r.apiVersion,
    kind: r.kind,
    metadata: {
      namespace: r.metadata.namespace,
      name: r.metadata.name,
      labels: r.metadata.labels ?? {},
      annotations: r.metadata.annotations ?? {},
    },
    spec: r.spec,
  };
}

/** A server-side change list, one line per change: `~ spec.content: "a" -> "b"`. */
export function formatChanges(changes: readonly { path: string; op: string; before?: unknown; after?: unknown }[]): string {
  if (changes.length === 0) return 'no changes';
  const show = (v: unknown): string => truncate(v === undefined ? 'undefined' : JSON.stringify(v), 200);
  return changes
    .map((c) => {
      if (c.op === 'add') return `+ ${c.path}: ${show(c.after)}`;
      if (c.op === 'remove') return `- ${c.path}: ${show(c.before)}`;
      return `~ ${c.path}: ${show(c.before)} -> ${show(c.after)}`;
    })
    .join('\n');
}
