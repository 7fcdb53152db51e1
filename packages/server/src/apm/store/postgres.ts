import pg from 'pg';
import type {
  AlertEvent,
  AlertEventQuery,
  RedQuery,
  RedRow,
  RetentionPolicy,
  SliCounts,
  SliQuery,
  SpanRecord,
  SpanStore,
  TimeRange,
  Topology,
  TopologyQuery,
  TraceQuery,
  TraceSummary,
} from '../types.js';
import {
  ALERT_INSERT_SQL,
  APM_SCHEMA_VERSION,
  RETENTION_BATCH,
  RETENTION_MINUTES,
  SPAN_COLUMNS,
  alertEventsSql,
  alertFromRow,
  alertParams,
  defaultErrorHandler,
  edgesSql,
  namespacesSql,
  redRows,
  redSql,
  reportersSql,
  searchSql,
  sliSql,
  spanFromRow,
  spanValues,
  summaries,
  summarySql,
  topologyOf,
  type AggregateRow,
  type AlertRow,
  type Dialect,
  type Sql,
  type SpanRow,
  type StoreErrorHandler,
  type SummaryRow,
} from './common.js';
import { countAbove, trimmedLength } from './histogram.js';
import { MINUTE_MS, aggregate, isError, type RollupRow } from './rollup.js';
import { checkSli, Exclusive } from './shared.js';
import { inTransaction } from '../../store/pg-transaction.js';

export interface PostgresSpanStoreOptions {
  /** postgres:// connection URL. */
  url: string;
  /** Every APM table lives in this schema, created when missing. Default `plinth_apm`. */
  schema?: string | undefined;
  /** Connections in the pool. Default 10. */
  poolSize?: number | undefined;
  onError?: StoreErrorHandler | undefined;
  /** Test hook: rows per retention statement. */
  retentionBatch?: number | undefined;
}

export const DEFAULT_APM_SCHEMA = 'plinth_apm';

// As the resource store: unquoted lower-case identifiers only, since the schema goes into `-c search_path=`.
const SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

const INT8_OID = 20;
const INT8_ARRAY_OID = 1016;
/** Counts and epoch milliseconds are int8; all stay below 2^53, so numbers, not strings. */
const types = {
  getTypeParser: ((oid: number, format?: string) => {
    if (format !== 'binary' && oid === INT8_OID) return (v: string) => Number(v);
    if (format !== 'binary' && oid === INT8_ARRAY_OID) {
      const parse = (pg.types.getTypeParser as (oid: number, format: 'text') => (v: string) => (string | null)[])(INT8_ARRAY_OID, 'text');
      return (v: string) => parse(v).map((x) => (x === null ? 0 : Number(x)));
    }
    return pg.types.getTypeParser(oid, format as 'text');
  }) as typeof pg.types.getTypeParser,
};

function ddl(schema: string): string[] {
  const s = `"${schema}"`;
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    `CREATE TABLE IF NOT EXISTS apm_meta (id int PRIMARY KEY CHECK (id = 1), schema_version int NOT NULL)`,
    `INSERT INTO apm_meta (id, schema_version) VALUES (1, ${APM_SCHEMA_VERSION}) ON CONFLICT (id) DO NOTHING`,
    // Attributes, resource and events are JSON text, not jsonb: no parse and re-encode per span at ingest;
    // a tag search casts the few rows it filters.
    `CREATE TABLE IF NOT EXISTS spans (
       trace_id text NOT NULL,
       span_id text NOT NULL,
       namespace text NOT NULL,
       parent_span_id text,
       service text NOT NULL,
       version text,
       name text NOT NULL,
       kind text NOT NULL,
       start_ms float8 NOT NULL,
       duration_ms float8 NOT NULL,
       status text NOT NULL,
       status_message text,
       endpoint text,
       peer text,
       http_status int,
       lane text,
       stress smallint NOT NULL,
       region text,
       caller text,
       is_error smallint NOT NULL,
       attributes text NOT NULL,
       resource text NOT NULL,
       events text NOT NULL,
       PRIMARY KEY (trace_id, span_id)
     )`,
    `CREATE INDEX IF NOT EXISTS spans_by_service ON spans (namespace, service, start_ms)`,
    `CREATE INDEX IF NOT EXISTS spans_by_start ON spans (namespace, start_ms)`,
    `CREATE TABLE IF NOT EXISTS rollups (
       namespace text NOT NULL,
       grp text NOT NULL,
       minute int NOT NULL,
       service text NOT NULL,
       target text NOT NULL,
       lane text NOT NULL,
       stress smallint NOT NULL,
       region text NOT NULL,
       version text NOT NULL,
       count bigint NOT NULL,
       errors bigint NOT NULL,
       rejections bigint NOT NULL,
       hist bigint[] NOT NULL,
       PRIMARY KEY (namespace, grp, minute, service, target, lane, stress, region, version)
     )`,
    `CREATE TABLE IF NOT EXISTS alert_events (
       id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
       namespace text NOT NULL,
       source text NOT NULL,
       state text NOT NULL,
       summary text NOT NULL,
       severity text NOT NULL,
       at_ms bigint NOT NULL,
       notification text NOT NULL,
       details text NOT NULL
     )`,
    `CREATE INDEX IF NOT EXISTS alert_events_by_time ON alert_events (at_ms)`,
    // Element-wise sum; arrays of different lengths (trailing zeros trimmed) pad with zeros.
    `CREATE OR REPLACE FUNCTION ${s}.hist_add(a bigint[], b bigint[]) RETURNS bigint[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
       $$ SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY o), '{}') FROM unnest(a, b) WITH ORDINALITY AS t(x, y, o) $$`,
    `CREATE OR REPLACE AGGREGATE ${s}.hist_sum(bigint[]) (SFUNC = ${s}.hist_add, STYPE = bigint[], INITCOND = '{}')`,
  ];
}

const SPAN_TYPES = ['text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'float8', 'float8', 'text', 'text', 'text', 'text', 'int', 'text', 'smallint', 'text', 'text', 'smallint', 'text', 'text', 'text'];

const INSERT_SPANS = `INSERT INTO spans (${SPAN_COLUMNS.join(', ')})
  SELECT * FROM unnest(${SPAN_TYPES.map((t, i) => `$${i + 1}::${t}[]`).join(', ')})
  ON CONFLICT (trace_id, span_id) DO NOTHING
  RETURNING trace_id, span_id`;

// Histograms travel as array literals in a text[]: unnest would flatten a two-dimensional bigint[].
const UPSERT_ROLLUPS = `INSERT INTO rollups (namespace, grp, minute, service, target, lane, stress, region, version, count, errors, rejections, hist)
  SELECT n, g, m, s, t, l, st, r, v, c, e, rj, h::bigint[]
  FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::smallint[], $8::text[], $9::text[],
              $10::bigint[], $11::bigint[], $12::bigint[], $13::text[]) AS u(n, g, m, s, t, l, st, r, v, c, e, rj, h)
  ON CONFLICT (namespace, grp, minute, service, target, lane, stress, region, version) DO UPDATE SET
    count = rollups.count + excluded.count,
    errors = rollups.errors + excluded.errors,
    rejections = rollups.rejections + excluded.rejections,
    hist = hist_add(rollups.hist, excluded.hist)`;

const dialect: Dialect = {
  attrEquals(key, value) {
    return { sql: '(attributes::json ->> ?) = ?', params: [key, value] };
  },
  decodeHist(v) {
    return Array.isArray(v) ? (v as number[]) : [];
  },
};

/** The shared SQL is written with `?`; PostgreSQL wants `$1, $2, ...`. None of it has a literal `?`. */
function numbered(sql: string): string {
  let i = 0;
  return sql.replace(/\?/g, () => `$${++i}`);
}


/** PostgreSQL text cannot hold NUL; one such span would otherwise fail its whole batch on every retry. */
function pgText<T>(v: T): T {
  return (typeof v === 'string' && v.includes('\u0000') ? v.replaceAll('\u0000', '') : v) as T;
}

/**
 * The shared span store: several servers on one schema. Each insert batch is one transaction: spans go in
 * with one multi-row INSERT (column arrays through UNNEST), and only the rows it really inserted (RETURNING)
 * feed the batch's rollups, which are added to the stored ones by UPSERT. Servers thus merge their partial
 * aggregates, and a batch two servers both receive is counted once. Spans and rollup rows are written in
 * key order, so concurrent batches lock in the same order.
 */
export class PostgresSpanStore implements SpanStore {
  readonly backend = 'postgres' as const;
  readonly schema: string;
  private readonly pool: pg.Pool;
  private readonly onError: StoreErrorHandler;
  private readonly exclusiveJobs = new Exclusive();
  private readonly retentionBatch: number;
  private initialized: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: PostgresSpanStoreOptions) {
    const schema = options.schema ?? DEFAULT_APM_SCHEMA;
    if (!SCHEMA_PATTERN.test(schema)) {
      throw new Error(`PostgreSQL schema ${JSON.stringify(schema)} is not valid: use lower-case letters, digits and _ (at most 63, not starting with a digit)`);
    }
    this.schema = schema;
    this.onError = options.onError ?? defaultErrorHandler;
    this.retentionBatch = options.retentionBatch ?? RETENTION_BATCH;
    const url = new URL(options.url);
    const urlOptions = url.searchParams.get('options');
    url.searchParams.delete('options');
    this.pool = new pg.Pool({
      connectionString: url.toString(),
      options: `${urlOptions ? urlOptions + ' ' : ''}-c search_path=${schema}`,
      application_name: 'plinth-apm',
      keepAlive: true,
      types,
      max: options.poolSize ?? 10,
    });
    this.pool.on('error', (err) => this.onError('PostgreSQL idle connection failed', err));
    this.pool.on('connect', (client) => client.on('error', () => {}));
  }

  init(): Promise<void> {
    this.initialized ??= this.doInit().catch((err: unknown) => {
      this.initialized = undefined;
      throw err;
    });
    return this.initialized;
  }

  private async doInit(): Promise<void> {
    await this.tx(async (c) => {
      // Servers starting together: CREATE ... IF NOT EXISTS and CREATE OR REPLACE still race.
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`plinth-apm:init:${this.schema}`]);
      for (const statement of ddl(this.schema)) await c.query(statement);
      const { rows } = await c.query<{ schema_version: number }>('SELECT schema_version FROM apm_meta WHERE id = 1');
      const version = rows[0]?.schema_version ?? APM_SCHEMA_VERSION;
      if (version > APM_SCHEMA_VERSION) {
        throw new Error(`schema ${this.schema} was written by a newer Plinth (APM layout ${version}, this one knows ${APM_SCHEMA_VERSION})`);
      }
    });
  }

  close(): Promise<void> {
    this.closing ??= this.pool.end();
    return this.closing;
  }

  private tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    return inTransaction(this.pool, fn);
  }

  private async all<T>(q: Sql): Promise<T[]> {
    return (await this.pool.query(numbered(q.sql), q.params)).rows as T[];
  }

  async insert(spans: readonly SpanRecord[]): Promise<void> {
    if (spans.length === 0) return;
    const sorted = [...spans].sort((a, b) => (a.traceId === b.traceId ? cmp(a.spanId, b.spanId) : cmp(a.traceId, b.traceId)));
    const columns: unknown[][] = SPAN_COLUMNS.map(() => new Array<unknown>(sorted.length));
    for (let i = 0; i < sorted.length; i++) {
      const s = sorted[i]!;
      const values = spanValues(s, isError(s));
      for (let c = 0; c < values.length; c++) columns[c]![i] = pgText(values[c]);
    }
    await this.tx(async (c) => {
      const { rows } = await c.query<{ trace_id: string; span_id: string }>(INSERT_SPANS, columns);
      if (rows.length === 0) return;
      const fresh = new Set(rows.map((r) => r.trace_id + '/' + r.span_id));
      // The first of duplicates within the batch is the one inserted; later copies must not count again.
      const inserted = sorted.filter((s) => fresh.delete(pgText(s.traceId) + '/' + pgText(s.spanId)));
      const agg = aggregate(inserted);
      if (agg.length > 0) await c.query(UPSERT_ROLLUPS, rollupColumns(agg));
    });
  }

  async trace(namespace: string, traceId: string): Promise<SpanRecord[]> {
    const { rows } = await this.pool.query('SELECT * FROM spans WHERE trace_id = $1 AND namespace = $2 ORDER BY start_ms, span_id', [traceId, namespace]);
    return (rows as SpanRow[]).map(spanFromRow);
  }

  async searchTraces(q: TraceQuery): Promise<TraceSummary[]> {
    const found = await this.all<{ trace_id: string }>(searchSql(q, dialect));
    if (found.length === 0) return [];
    const ids = found.map((f) => f.trace_id);
    return summaries(ids, await this.all<SummaryRow>(summarySql(q.namespace, ids)));
  }

  async red(q: RedQuery): Promise<RedRow[]> {
    const plan = redSql(q);
    return redRows(q, plan, await this.all<AggregateRow>(plan), dialect);
  }

  async topology(q: TopologyQuery): Promise<Topology> {
    const [edges, reporters] = await Promise.all([
      this.all<AggregateRow>(edgesSql(q)),
      this.all<{ service: string }>(reportersSql(q.fromMs, q.toMs, q.namespace)),
    ]);
    return topologyOf(q, edges, new Set(reporters.map((r) => r.service)), dialect);
  }

  async sli(q: SliQuery): Promise<SliCounts> {
    checkSli(q);
    const row = (await this.all<AggregateRow>(sliSql(q)))[0];
    const total = Number(row?.count ?? 0);
    if (q.indicator === 'availability') return { total, bad: Number(row?.errors ?? 0) };
    return { total, bad: Math.round(countAbove(dialect.decodeHist(row?.hist), q.thresholdMs!)) };
  }

  async services(q: TimeRange & { namespace?: string | undefined }): Promise<{ namespace: string; service: string }[]> {
    const rows = await this.all<{ namespace: string; service: string }>(reportersSql(q.fromMs, q.toMs, q.namespace));
    return rows
      .map((r) => ({ namespace: r.namespace, service: r.service }))
      .sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.service, b.service));
  }

  async enforceRetention(nowMs: number, policy: RetentionPolicy): Promise<{ spans: number; rollups: number }> {
    const spanCutoff = nowMs - policy.spansMs;
    const minuteCutoff = Math.floor((nowMs - policy.rollupsMs) / MINUTE_MS);
    let spans = 0;
    let rollups = 0;
    for (const { n } of await this.all<{ n: string }>({ sql: namespacesSql('spans'), params: [] })) {
      for (;;) {
        // Bounded statements, each its own short transaction, instead of one long DELETE holding its locks.
        const r = await this.pool.query(
          'DELETE FROM spans WHERE ctid = ANY(ARRAY(SELECT ctid FROM spans WHERE namespace = $1 AND start_ms < $2 LIMIT $3))',
          [n, spanCutoff, this.retentionBatch],
        );
        spans += r.rowCount ?? 0;
        if ((r.rowCount ?? 0) < this.retentionBatch) break;
      }
    }
    for (const { n } of await this.all<{ n: string }>({ sql: namespacesSql('rollups'), params: [] })) {
      for (const grp of ['s', 'c', 'i']) {
        for (;;) {
          const { rows } = await this.pool.query<{ m: number | null }>('SELECT min(minute) AS m FROM rollups WHERE namespace = $1 AND grp = $2', [n, grp]);
          const m = rows[0]?.m ?? null;
          if (m === null || m >= minuteCutoff) break;
          const r = await this.pool.query('DELETE FROM rollups WHERE namespace = $1 AND grp = $2 AND minute < $3', [
            n,
            grp,
            Math.min(m + RETENTION_MINUTES, minuteCutoff),
          ]);
          rollups += r.rowCount ?? 0;
        }
      }
    }
    await this.pool.query('DELETE FROM alert_events WHERE at_ms < $1', [nowMs - policy.rollupsMs]);
    return { spans, rollups };
  }

  async appendAlertEvent(e: AlertEvent): Promise<void> {
    await this.pool.query(numbered(ALERT_INSERT_SQL), alertParams(e).map(pgText));
  }

  async alertEvents(q: AlertEventQuery): Promise<AlertEvent[]> {
    return (await this.all<AlertRow>(alertEventsSql(q))).map(alertFromRow);
  }

  /**
   * A session advisory lock on a connection of its own, held while `fn` runs (which may use the pool: the
   * lock's connection is not the one `fn` queries on). Keyed by schema and name, so deployments sharing a
   * database but not a schema never exclude each other.
   */
  async exclusive(name: string, fn: () => Promise<void>): Promise<boolean> {
    const key = `plinth-apm:${this.schema}:${name}`;
    return this.exclusiveJobs.run(name, fn, async (inner) => {
      const client = await this.pool.connect();
      let broken = false;
      try {
        let locked: boolean;
        try {
          locked = (await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [key])).rows[0]?.ok === true;
        } catch (err) {
          broken = true;
          throw err;
        }
        if (!locked) return false;
        try {
          await inner();
        } finally {
          try {
            await client.query('SELECT pg_advisory_unlock(hashtext($1))', [key]);
          } catch (err) {
            // Destroying the connection ends its session, which releases the lock all the same.
            broken = true;
            this.onError('could not release an advisory lock; dropping its connection', err);
          }
        }
        return true;
      } finally {
        client.release(broken ? true : undefined);
      }
    });
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function rollupColumns(rows: readonly RollupRow[]): unknown[][] {
  const cols: unknown[][] = Array.from({ length: 13 }, () => new Array<unknown>(rows.length));
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    const values = [r.namespace, r.grp, r.minute, r.service, r.target, r.lane, r.stress, r.region, r.version, r.count, r.errors, r.rejections];
    for (let c = 0; c < values.length; c++) cols[c]![i] = pgText(values[c]);
    cols[12]![i] = `{${r.hist.slice(0, trimmedLength(r.hist)).join(',')}}`;
  }
  return cols;
}
