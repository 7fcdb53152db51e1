// Shared by both backends: the SQL both speak (written with `?` placeholders; PostgreSQL numbers them),
// the mapping of rows to records, and the assembly of RED rows, topologies and trace summaries.
import { PlinthError } from '@plinth/core';
import type {
  AlertEvent,
  AlertEventQuery,
  RedQuery,
  RedRow,
  SpanEvent,
  SpanKind,
  SpanRecord,
  SpanStatus,
  SplitTag,
  Topology,
  TopologyEdge,
  TopologyQuery,
  TraceQuery,
  TraceSummary,
} from '../types.js';
import { quantile } from './histogram.js';
import { minuteRange } from './rollup.js';

export type StoreErrorHandler = (message: string, err: unknown) => void;

export const defaultErrorHandler: StoreErrorHandler = (message, err) => {
  console.error(`plinth span store: ${message}:`, err);
};

/** Layout of the PostgreSQL APM tables; a schema written by a newer layout is refused. (SQLite: SQLITE_APM_LAYOUT.) */
export const APM_SCHEMA_VERSION = 1;

export const DEFAULT_TRACE_LIMIT = 20;
export const MAX_TRACE_LIMIT = 1000;
export const DEFAULT_ALERT_LIMIT = 100;
export const MAX_ALERT_LIMIT = 1000;
/** Rows deleted per retention statement: short statements, so ingest never waits long behind one. */
export const RETENTION_BATCH = 5000;
/** Minutes of rollups deleted per retention statement. */
export const RETENTION_MINUTES = 60;

/** Column order of the spans table, as inserts bind it. */
export const SPAN_COLUMNS = [
  'trace_id',
  'span_id',
  'namespace',
  'parent_span_id',
  'service',
  'version',
  'name',
  'kind',
  'start_ms',
  'duration_ms',
  'status',
  'status_message',
  'endpoint',
  'peer',
  'http_status',
  'lane',
  'stress',
  'region',
  'caller',
  'is_error',
  'attributes',
  'resource',
  'events',
] as const;

export interface SpanRow {
  trace_id: string;
  span_id: string;
  namespace: string;
  parent_span_id: string | null;
  service: string;
  version: string | null;
  name: string;
  kind: string;
  start_ms: number;
  duration_ms: number;
  status: string;
  status_message: string | null;
  endpoint: string | null;
  peer: string | null;
  http_status: number | null;
  lane: string | null;
  stress: number;
  region: string | null;
  caller: string | null;
  is_error: number;
  attributes: string;
  resource: string;
  events: string;
}

export function spanFromRow(r: SpanRow): SpanRecord {
  const attributes = JSON.parse(r.attributes) as SpanRecord['attributes'];
  const grpc = attributes['rpc.grpc.status_code'];
  return {
    namespace: r.namespace,
    traceId: r.trace_id,
    spanId: r.span_id,
    parentSpanId: r.parent_span_id ?? undefined,
    service: r.service,
    version: r.version ?? undefined,
    name: r.name,
    kind: r.kind as SpanKind,
    startMs: r.start_ms,
    durationMs: r.duration_ms,
    status: r.status as SpanStatus,
    statusMessage: r.status_message ?? undefined,
    endpoint: r.endpoint ?? undefined,
    peer: r.peer ?? undefined,
    httpStatus: r.http_status ?? undefined,
    grpcStatus: typeof grpc === 'number' ? grpc : undefined,
    lane: r.lane ?? undefined,
    stress: Number(r.stress) === 1,
    region: r.region ?? undefined,
    caller: r.caller ?? undefined,
    attributes,
    resource: JSON.parse(r.resource) as SpanRecord['resource'],
    events: JSON.parse(r.events) as SpanEvent[],
  };
}

export interface Sql {
  sql: string;
  params: unknown[];
}

/** What differs between the backends' SQL. */
export interface Dialect {
  /** A condition: attribute `key` of the span, as text (booleans `true`/`false`), equals `value`. */
  attrEquals(key: string, value: string): Sql;
  /** The value `hist_sum(hist)` came back as, as counts per bucket. */
  decodeHist(v: unknown): number[];
  /** Extra conditions on spans for `start_ms` in [fromMs, toMs), when the backend indexes time otherwise. */
  spanWindow?(fromMs: number, toMs: number): Sql;
}

const FIELD_TAGS = new Set(['lane', 'region', 'version']);

function invalid(field: string, message: string): PlinthError {
  return new PlinthError('INVALID_PARAMETER', `${field}: ${message}`, { errors: [{ field, message }] });
}

/** C0 controls and DEL: never part of a name, a tag or a filter value. */
export function hasControlChars(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** Keys that a JSON path can name without quoting rules that differ between SQLite and PostgreSQL. */
export function tagKeyError(key: string): string | undefined {
  if (key.length === 0) return 'a tag key must not be empty';
  if (key.length > 256) return 'a tag key must be at most 256 characters';
  if (/["\\]/.test(key) || hasControlChars(key)) return 'a tag key must not contain quotes, backslashes or control characters';
  return undefined;
}

export function clampLimit(limit: number | undefined, def: number, max: number): number {
  if (limit === undefined || !Number.isFinite(limit)) return def;
  return Math.max(1, Math.min(max, Math.floor(limit)));
}

/** Trace ids with a span matching every filter, newest first. */
export function searchSql(q: TraceQuery, d: Dialect): Sql {
  const where = ['namespace = ?', 'start_ms >= ?', 'start_ms < ?'];
  const params: unknown[] = [q.namespace, q.fromMs, q.toMs];
  const window = d.spanWindow?.(q.fromMs, q.toMs);
  if (window) {
    where.push(window.sql);
    params.push(...window.params);
  }
  if (q.service !== undefined) {
    where.push('service = ?');
    params.push(q.service);
  }
  if (q.endpoint !== undefined) {
    where.push('endpoint = ?');
    params.push(q.endpoint);
  }
  if (q.status !== undefined) where.push(q.status === 'error' ? 'is_error = 1' : 'is_error = 0');
  if (q.minDurationMs !== undefined) {
    where.push('duration_ms >= ?');
    params.push(q.minDurationMs);
  }
  if (q.maxDurationMs !== undefined) {
    where.push('duration_ms <= ?');
    params.push(q.maxDurationMs);
  }
  for (const [key, value] of Object.entries(q.tags ?? {})) {
    const err = tagKeyError(key);
    if (err) throw invalid('tag', err);
    if (FIELD_TAGS.has(key)) {
      where.push(`${key} = ?`);
      params.push(value);
    } else if (key === 'stress') {
      if (value !== 'true' && value !== 'false') throw invalid('tag', 'stress is "true" or "false"');
      where.push(value === 'true' ? 'stress = 1' : 'stress = 0');
    } else {
      const c = d.attrEquals(key, value);
      where.push(c.sql);
      params.push(...c.params);
    }
  }
  params.push(clampLimit(q.limit, DEFAULT_TRACE_LIMIT, MAX_TRACE_LIMIT));
  return {
    sql: `SELECT trace_id, min(start_ms) AS first_ms FROM spans WHERE ${where.join(' AND ')} GROUP BY trace_id ORDER BY first_ms DESC, trace_id LIMIT ?`,
    params,
  };
}

/**
 * The spans of the found traces that summaries need (not their attributes). `namespaceTerm`: SQLite
 * passes `+namespace`, which keeps its planner (no statistics) from walking a namespace's time index
 * instead of looking the traces up by key.
 */
export function summarySql(namespace: string, traceIds: readonly string[], namespaceTerm = 'namespace'): Sql {
  return {
    sql: `SELECT trace_id, span_id, parent_span_id, service, name, start_ms, duration_ms, is_error FROM spans
          WHERE ${namespaceTerm} = ? AND trace_id IN (${traceIds.map(() => '?').join(', ')})`,
    params: [namespace, ...traceIds],
  };
}

export interface SummaryRow {
  trace_id: string;
  span_id: string;
  parent_span_id: string | null;
  service: string;
  name: string;
  start_ms: number;
  duration_ms: number;
  is_error: number;
}

export function summaries(order: readonly string[], rows: readonly SummaryRow[]): TraceSummary[] {
  const byTrace = new Map<string, SummaryRow[]>();
  for (const r of rows) {
    let list = byTrace.get(r.trace_id);
    if (!list) byTrace.set(r.trace_id, (list = []));
    list.push(r);
  }
  const out: TraceSummary[] = [];
  for (const traceId of order) {
    const spans = byTrace.get(traceId);
    if (!spans || spans.length === 0) continue;
    let root: SummaryRow | undefined;
    let earliest = spans[0]!;
    let start = Infinity;
    let end = -Infinity;
    let errors = 0;
    const services = new Set<string>();
    for (const s of spans) {
      if (s.start_ms < earliest.start_ms) earliest = s;
      if (s.parent_span_id === null && (!root || s.start_ms < root.start_ms)) root = s;
      start = Math.min(start, s.start_ms);
      end = Math.max(end, s.start_ms + s.duration_ms);
      if (Number(s.is_error) === 1) errors++;
      services.add(s.service);
    }
    const head = root ?? earliest;
    out.push({
      traceId,
      rootService: head.service,
      rootName: head.name,
      startMs: start,
      durationMs: end - start,
      spanCount: spans.length,
      errorCount: errors,
      services: [...services].sort(),
    });
  }
  return out;
}

const SPLIT_COLUMNS: Record<SplitTag, string> = { lane: 'lane', stress: 'stress', region: 'region', version: 'version' };

export interface RedPlan extends Sql {
  splits: SplitTag[];
}

export function redSql(q: RedQuery): RedPlan {
  const splits = [...new Set(q.split ?? [])].sort();
  for (const s of splits) if (!Object.hasOwn(SPLIT_COLUMNS, s)) throw invalid('split', `unknown split tag ${JSON.stringify(s)}`);
  const m = minuteRange(q.fromMs, q.toMs);
  const where = ['namespace = ?', 'grp = ?', 'minute >= ?', 'minute < ?'];
  const params: unknown[] = [q.namespace, q.group === 'edge' ? 'c' : 's', m.from, m.to];
  if (!q.includeStress && !splits.includes('stress')) where.push('stress = 0');
  if (q.service !== undefined) {
    if (q.group === 'edge') {
      where.push('(service = ? OR target = ?)');
      params.push(q.service, q.service);
    } else {
      where.push('service = ?');
      params.push(q.service);
    }
  }
  const keys = ['service', ...(q.group === 'service' ? [] : ['target']), ...splits.map((s) => SPLIT_COLUMNS[s])];
  return {
    sql: `SELECT ${keys.join(', ')}, ${SUMS} FROM rollups WHERE ${where.join(' AND ')} GROUP BY ${keys.join(', ')}`,
    params,
    splits,
  };
}

/** CAST: PostgreSQL sums bigints as numeric, which its driver returns as strings. */
const SUMS = 'CAST(sum(count) AS bigint) AS count, CAST(sum(errors) AS bigint) AS errors, CAST(sum(rejections) AS bigint) AS rejections, hist_sum(hist) AS hist';

export interface AggregateRow {
  service: string;
  target?: string;
  lane?: string;
  stress?: number;
  region?: string;
  version?: string;
  count: number | null;
  errors: number | null;
  rejections: number | null;
  hist: unknown;
}

function rangeSeconds(fromMs: number, toMs: number): number {
  return Math.max(0, toMs - fromMs) / 1000;
}

export function redRows(q: RedQuery, plan: RedPlan, rows: readonly AggregateRow[], d: Dialect): RedRow[] {
  const seconds = rangeSeconds(q.fromMs, q.toMs);
  const out = rows.map((r): RedRow => {
    const hist = d.decodeHist(r.hist);
    const count = Number(r.count ?? 0);
    const errors = Number(r.errors ?? 0);
    const tags: Partial<Record<SplitTag, string>> = {};
    for (const s of plan.splits) tags[s] = s === 'stress' ? String(Number(r.stress) === 1) : String(r[s] ?? '');
    const row: RedRow = {
      service: r.service,
      tags,
      count,
      errors,
      ratePerSec: seconds > 0 ? count / seconds : 0,
      errorRate: count > 0 ? errors / count : 0,
      p50Ms: quantile(hist, 0.5),
      p95Ms: quantile(hist, 0.95),
      p99Ms: quantile(hist, 0.99),
      rejections: Number(r.rejections ?? 0),
    };
    if (q.group === 'endpoint') row.endpoint = r.target ?? '';
    if (q.group === 'edge') row.peer = r.target ?? '';
    return row;
  });
  return out.sort((a, b) => cmp(sortKey(a), sortKey(b)));
}

function sortKey(r: RedRow): string {
  return [r.service, r.endpoint ?? '', r.peer ?? '', ...Object.values(r.tags)].join('\u0000');
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function edgesSql(q: TopologyQuery): Sql {
  const m = minuteRange(q.fromMs, q.toMs);
  return {
    sql: `SELECT service, target, ${SUMS} FROM rollups WHERE namespace = ? AND grp = 'c' AND minute >= ? AND minute < ?${q.includeStress ? '' : ' AND stress = 0'}
          GROUP BY service, target`,
    params: [q.namespace, m.from, m.to],
  };
}

/** Services that reported any span in the range (any kind, stress or not). */
export function reportersSql(fromMs: number, toMs: number, namespace: string | undefined): Sql {
  const m = minuteRange(fromMs, toMs);
  return namespace === undefined
    ? { sql: 'SELECT DISTINCT namespace, service FROM rollups WHERE minute >= ? AND minute < ?', params: [m.from, m.to] }
    : { sql: 'SELECT DISTINCT namespace, service FROM rollups WHERE namespace = ? AND minute >= ? AND minute < ?', params: [namespace, m.from, m.to] };
}

export function topologyOf(q: TopologyQuery, edgeRows: readonly AggregateRow[], reporters: ReadonlySet<string>, d: Dialect): Topology {
  const edges: TopologyEdge[] = [];
  for (const r of edgeRows) {
    const callee = r.target ?? '';
    if (q.service !== undefined && r.service !== q.service && callee !== q.service) continue;
    const hist = d.decodeHist(r.hist);
    edges.push({
      caller: r.service,
      callee,
      external: !reporters.has(callee),
      count: Number(r.count ?? 0),
      errors: Number(r.errors ?? 0),
      p50Ms: quantile(hist, 0.5),
      p95Ms: quantile(hist, 0.95),
      p99Ms: quantile(hist, 0.99),
    });
  }
  edges.sort((a, b) => cmp(a.caller, b.caller) || cmp(a.callee, b.callee));
  const names = new Set<string>();
  if (q.service === undefined) for (const s of reporters) names.add(s);
  else if (reporters.has(q.service)) names.add(q.service);
  for (const e of edges) {
    names.add(e.caller);
    names.add(e.callee);
  }
  const nodes = [...names].sort().map((name) => ({ name, external: !reporters.has(name) }));
  return { nodes, edges };
}

export function alertEventsSql(q: AlertEventQuery): Sql {
  const where: string[] = [];
  const params: unknown[] = [];
  if (q.namespace !== undefined) {
    where.push('namespace = ?');
    params.push(q.namespace);
  }
  if (q.source !== undefined) {
    where.push('source = ?');
    params.push(q.source);
  }
  if (q.fromMs !== undefined) {
    where.push('at_ms >= ?');
    params.push(q.fromMs);
  }
  params.push(clampLimit(q.limit, DEFAULT_ALERT_LIMIT, MAX_ALERT_LIMIT));
  return {
    sql: `SELECT namespace, source, state, summary, severity, at_ms, notification, details FROM alert_events
          ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY at_ms DESC, id DESC LIMIT ?`,
    params,
  };
}

export interface AlertRow {
  namespace: string;
  source: string;
  state: string;
  summary: string;
  severity: string;
  at_ms: number;
  notification: string;
  details: string;
}

export function alertFromRow(r: AlertRow): AlertEvent {
  return {
    namespace: r.namespace,
    source: r.source,
    state: r.state as AlertEvent['state'],
    summary: r.summary,
    severity: r.severity as AlertEvent['severity'],
    atMs: Number(r.at_ms),
    notification: r.notification,
    details: JSON.parse(r.details) as AlertEvent['details'],
  };
}

export const ALERT_INSERT_SQL =
  'INSERT INTO alert_events (namespace, source, state, summary, severity, at_ms, notification, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)';

export function alertParams(e: AlertEvent): unknown[] {
  return [e.namespace, e.source, e.state, e.summary, e.severity, e.atMs, e.notification, JSON.stringify(e.details ?? {})];
}

export function sliSql(q: { namespace: string; service: string; endpoint?: string | undefined; fromMs: number; toMs: number }): Sql {
  const m = minuteRange(q.fromMs, q.toMs);
  const params: unknown[] = [q.namespace, q.service, m.from, m.to];
  let sql = `SELECT ${SUMS} FROM rollups WHERE namespace = ? AND grp = 's' AND service = ? AND minute >= ? AND minute < ? AND stress = 0`;
  if (q.endpoint !== undefined) {
    sql += ' AND target = ?';
    params.push(q.endpoint);
  }
  return { sql, params };
}

/** Namespaces holding rows of a table, by loose index scan: one index probe per namespace, not a scan. */
export function namespacesSql(table: 'spans' | 'rollups'): string {
  return `WITH RECURSIVE ns(n) AS (
            SELECT min(namespace) FROM ${table}
            UNION ALL
            SELECT (SELECT min(namespace) FROM ${table} WHERE namespace > ns.n) FROM ns WHERE ns.n IS NOT NULL
          ) SELECT n FROM ns WHERE n IS NOT NULL`;
}

/** The values a span row binds, in SPAN_COLUMNS order. */
export function spanValues(s: SpanRecord, error: boolean): unknown[] {
  return [
    s.traceId,
    s.spanId,
    s.namespace,
    s.parentSpanId ?? null,
    s.service,
    s.version ?? null,
    s.name,
    s.kind,
    s.startMs,
    s.durationMs,
    s.status,
    s.statusMessage ?? null,
    s.endpoint ?? null,
    s.peer ?? null,
    s.httpStatus ?? null,
    s.lane ?? null,
    s.stress ? 1 : 0,
    s.region ?? null,
    s.caller ?? null,
    error ? 1 : 0,
    JSON.stringify(s.attributes ?? {}),
    JSON.stringify(s.resource ?? {}),
    JSON.stringify(s.events ?? []),
  ];
}
