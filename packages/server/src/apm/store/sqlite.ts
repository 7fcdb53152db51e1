import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import Database from 'better-sqlite3';
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
  type SpanRow,
  type SummaryRow,
} from './common.js';
import { BUCKETS, addEncoded, addEncodedPair, countAbove, encodeHist } from './histogram.js';
import { MINUTE_MS, aggregate, isError, type RollupRow } from './rollup.js';
import { checkSli, Exclusive } from './shared.js';

const DDL = `
CREATE TABLE IF NOT EXISTS spans (
  trace_id TEXT NOT NULL,
  span_id TEXT NOT NULL,
  namespace TEXT NOT NULL,
  parent_span_id TEXT,
  service TEXT NOT NULL,
  version TEXT,
  name TEXT NOT NULL,
  kind TEXT NOT NULL,
  start_ms REAL NOT NULL,
  duration_ms REAL NOT NULL,
  status TEXT NOT NULL,
  status_message TEXT,
  endpoint TEXT,
  peer TEXT,
  http_status INTEGER,
  lane TEXT,
  stress INTEGER NOT NULL,
  region TEXT,
  caller TEXT,
  is_error INTEGER NOT NULL,
  attributes TEXT NOT NULL,
  resource TEXT NOT NULL,
  events TEXT NOT NULL,
  PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_service ON spans (namespace, service, start_ms);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (namespace, start_ms);
CREATE TABLE IF NOT EXISTS rollups (
  namespace TEXT NOT NULL,
  grp TEXT NOT NULL,
  minute INTEGER NOT NULL,
  service TEXT NOT NULL,
  target TEXT NOT NULL,
  lane TEXT NOT NULL,
  stress INTEGER NOT NULL,
  region TEXT NOT NULL,
  version TEXT NOT NULL,
  count INTEGER NOT NULL,
  errors INTEGER NOT NULL,
  rejections INTEGER NOT NULL,
  hist BLOB NOT NULL,
  PRIMARY KEY (namespace, grp, minute, service, target, lane, stress, region, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert_events (
  id INTEGER PRIMARY KEY,
  namespace TEXT NOT NULL,
  source TEXT NOT NULL,
  state TEXT NOT NULL,
  summary TEXT NOT NULL,
  severity TEXT NOT NULL,
  at_ms INTEGER NOT NULL,
  notification TEXT NOT NULL,
  details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_by_time ON alert_events (at_ms);
`;

const INSERT_SPAN = `INSERT INTO spans (${SPAN_COLUMNS.join(', ')}) VALUES (${SPAN_COLUMNS.map(() => '?').join(', ')})
  ON CONFLICT (trace_id, span_id) DO NOTHING`;

const UPSERT_ROLLUP = `INSERT INTO rollups (namespace, grp, minute, service, target, lane, stress, region, version, count, errors, rejections, hist)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (namespace, grp, minute, service, target, lane, stress, region, version) DO UPDATE SET
    count = count + excluded.count, errors = errors + excluded.errors, rejections = rejections + excluded.rejections,
    hist = hist_add(hist, excluded.hist)`;

type Statement = Database.Statement<unknown[], unknown>;

const dialect: Dialect = {
  attrEquals(key, value) {
    const path = `$."${key}"`;
    // json_extract gives booleans as 1/0 and numbers as numbers; compared as text like PostgreSQL's ->>.
    return {
      sql: `(CASE json_type(attributes, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(json_extract(attributes, ?) AS TEXT) END) = ?`,
      params: [path, path, value],
    };
  },
  decodeHist(v) {
    return typeof v === 'string' ? (JSON.parse(v) as number[]) : [];
  },
};

export interface SqliteSpanStoreOptions {
  /** Test hook: rows per retention statement. */
  retentionBatch?: number | undefined;
}

/**
 * The embedded span store: its own SQLite file (DATA/apm.db), apart from the resource database, so that span
 * volume never slows resource writes. better-sqlite3 is synchronous: an insert batch is one transaction of
 * prepared statements that no other call of this process interleaves with.
 */
export class SqliteSpanStore implements SpanStore {
  readonly backend = 'sqlite' as const;
  private db: Database.Database | undefined;
  private readonly statements = new Map<string, Statement>();
  private insertBatch: ((spans: readonly SpanRecord[]) => void) | undefined;
  private readonly exclusiveJobs = new Exclusive();
  private readonly retentionBatch: number;

  constructor(
    readonly path: string,
    options: SqliteSpanStoreOptions = {},
  ) {
    this.retentionBatch = options.retentionBatch ?? RETENTION_BATCH;
  }

  async init(): Promise<void> {
    if (this.db) return;
    const onDisk = this.path !== ':memory:' && this.path !== '';
    if (onDisk) {
      // Created owner-only before SQLite opens it: SQLite gives the -wal and -shm files the main file's mode.
      closeSync(openSync(this.path, 'a', 0o600));
      chmodSync(this.path, 0o600);
    }
    const db = new Database(this.path);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('busy_timeout = 5000');
      // Ingest dirties pages all over the (trace_id, span_id) index (random ids); checkpointing every 32 MiB
      // instead of 4 MiB copies each hot index page back far less often (~1.4x the insert rate measured).
      db.pragma('wal_autocheckpoint = 8000');
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version > APM_SCHEMA_VERSION) {
        throw new Error(`${this.path} was written by a newer Plinth (APM layout ${version}, this one knows ${APM_SCHEMA_VERSION})`);
      }
      db.function('hist_add', { deterministic: true }, (a: unknown, b: unknown) => addEncodedPair(a as Uint8Array | null, b as Uint8Array | null));
      db.aggregate('hist_sum', {
        start: () => new Array<number>(BUCKETS).fill(0),
        step: (acc: number[], h: unknown) => {
          addEncoded(acc, h as Uint8Array | null);
          return acc;
        },
        // Totals over many minutes can pass 2^32, which the stored uint32 form cannot hold: JSON it is.
        result: (acc: number[]) => JSON.stringify(acc),
      });
      db.transaction(() => {
        db.exec(DDL);
        db.pragma(`user_version = ${APM_SCHEMA_VERSION}`);
      }).immediate();
    } catch (err) {
      db.close();
      throw err;
    }
    if (onDisk) for (const f of [`${this.path}-wal`, `${this.path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    this.db = db;
    const insertSpan = db.prepare(INSERT_SPAN);
    const upsertRollup = db.prepare(UPSERT_ROLLUP);
    const tx = db.transaction((spans: readonly SpanRecord[]) => {
      const inserted: SpanRecord[] = [];
      for (const s of spans) {
        // Only spans new to the store feed the rollups: a re-sent batch must not count twice.
        if (insertSpan.run(...spanValues(s, isError(s))).changes > 0) inserted.push(s);
      }
      for (const r of aggregate(inserted)) upsertRollup.run(...rollupValues(r));
    });
    this.insertBatch = (spans) => tx.immediate(spans);
  }

  async close(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    this.insertBatch = undefined;
    this.statements.clear();
    db?.close();
  }

  private handle(): Database.Database {
    if (!this.db) throw new Error('the SQLite span store is not open (call init() first)');
    return this.db;
  }

  private stmt(sql: string): Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.handle().prepare(sql);
      // Search SQL varies with its filters; bounded, so that odd filter mixes cannot grow it without end.
      if (this.statements.size > 200) this.statements.clear();
      this.statements.set(sql, s);
    }
    return s;
  }

  async insert(spans: readonly SpanRecord[]): Promise<void> {
    if (spans.length === 0) return;
    this.handle();
    this.insertBatch!(spans);
  }

  async trace(namespace: string, traceId: string): Promise<SpanRecord[]> {
    const rows = this.stmt('SELECT * FROM spans WHERE trace_id = ? AND namespace = ? ORDER BY start_ms, span_id').all(traceId, namespace) as SpanRow[];
    return rows.map(spanFromRow);
  }

  async searchTraces(q: TraceQuery): Promise<TraceSummary[]> {
    const { sql, params } = searchSql(q, dialect);
    const found = this.stmt(sql).all(...params) as { trace_id: string }[];
    if (found.length === 0) return [];
    const ids = found.map((f) => f.trace_id);
    const s = summarySql(q.namespace, ids);
    return summaries(ids, this.handle().prepare(s.sql).all(...s.params) as SummaryRow[]);
  }

  async red(q: RedQuery): Promise<RedRow[]> {
    const plan = redSql(q);
    return redRows(q, plan, this.stmt(plan.sql).all(...plan.params) as AggregateRow[], dialect);
  }

  async topology(q: TopologyQuery): Promise<Topology> {
    const e = edgesSql(q);
    const r = reportersSql(q.fromMs, q.toMs, q.namespace);
    const [edges, reporters] = this.handle()
      .transaction(() => [this.stmt(e.sql).all(...e.params) as AggregateRow[], this.stmt(r.sql).all(...r.params) as { service: string }[]] as const)
      .deferred();
    return topologyOf(q, edges, new Set(reporters.map((x) => x.service)), dialect);
  }

  async sli(q: SliQuery): Promise<SliCounts> {
    checkSli(q);
    const { sql, params } = sliSql(q);
    const row = this.stmt(sql).get(...params) as AggregateRow;
    const total = Number(row.count ?? 0);
    if (q.indicator === 'availability') return { total, bad: Number(row.errors ?? 0) };
    return { total, bad: Math.round(countAbove(dialect.decodeHist(row.hist), q.thresholdMs!)) };
  }

  async services(q: TimeRange & { namespace?: string | undefined }): Promise<{ namespace: string; service: string }[]> {
    const { sql, params } = reportersSql(q.fromMs, q.toMs, q.namespace);
    const rows = this.stmt(sql).all(...params) as { namespace: string; service: string }[];
    return rows
      .map((r) => ({ namespace: r.namespace, service: r.service }))
      .sort((a, b) => (a.namespace === b.namespace ? (a.service < b.service ? -1 : 1) : a.namespace < b.namespace ? -1 : 1));
  }

  async enforceRetention(nowMs: number, policy: RetentionPolicy): Promise<{ spans: number; rollups: number }> {
    const spanCutoff = nowMs - policy.spansMs;
    const minuteCutoff = Math.floor((nowMs - policy.rollupsMs) / MINUTE_MS);
    let spans = 0;
    let rollups = 0;
    const spanNamespaces = (this.stmt(namespacesSql('spans')).all() as { n: string }[]).map((r) => r.n);
    const deleteSpans = this.stmt('DELETE FROM spans WHERE rowid IN (SELECT rowid FROM spans WHERE namespace = ? AND start_ms < ? LIMIT ?)');
    for (const ns of spanNamespaces) {
      for (;;) {
        const n = deleteSpans.run(ns, spanCutoff, this.retentionBatch).changes;
        spans += n;
        if (n < this.retentionBatch) break;
        // Each batch is its own short transaction; ingest and queries get the loop between two.
        await yieldToLoop();
      }
    }
    const rollupNamespaces = (this.stmt(namespacesSql('rollups')).all() as { n: string }[]).map((r) => r.n);
    const oldest = this.stmt('SELECT min(minute) AS m FROM rollups WHERE namespace = ? AND grp = ?');
    const deleteRollups = this.stmt('DELETE FROM rollups WHERE namespace = ? AND grp = ? AND minute < ?');
    for (const ns of rollupNamespaces) {
      for (const grp of ['s', 'c', 'i']) {
        for (;;) {
          const m = (oldest.get(ns, grp) as { m: number | null }).m;
          if (m === null || m >= minuteCutoff) break;
          rollups += deleteRollups.run(ns, grp, Math.min(m + RETENTION_MINUTES, minuteCutoff)).changes;
          await yieldToLoop();
        }
      }
    }
    // The alert history is kept as long as the figures it was raised on.
    this.stmt('DELETE FROM alert_events WHERE at_ms < ?').run(nowMs - policy.rollupsMs);
    return { spans, rollups };
  }

  async appendAlertEvent(e: AlertEvent): Promise<void> {
    this.stmt(ALERT_INSERT_SQL).run(...alertParams(e));
  }

  async alertEvents(q: AlertEventQuery): Promise<AlertEvent[]> {
    const { sql, params } = alertEventsSql(q);
    return (this.stmt(sql).all(...params) as AlertRow[]).map(alertFromRow);
  }

  /** One process owns the file, so only this process's own concurrent runs of the job are excluded. */
  async exclusive(name: string, fn: () => Promise<void>): Promise<boolean> {
    return this.exclusiveJobs.run(name, fn);
  }
}

function rollupValues(r: RollupRow): unknown[] {
  return [r.namespace, r.grp, r.minute, r.service, r.target, r.lane, r.stress, r.region, r.version, r.count, r.errors, r.rejections, encodeHist(r.hist)];
}
