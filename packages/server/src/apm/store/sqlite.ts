import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import Database from 'better-sqlite3';
import type {
  Attributes,
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
  RETENTION_BATCH,
  RETENTION_MINUTES,
  alertEventsSql,
  defaultErrorHandler,
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
  summaries,
  summarySql,
  topologyOf,
  type AggregateRow,
  type AlertRow,
  type Dialect,
  type SpanRow,
  type StoreErrorHandler,
  type SummaryRow,
} from './common.js';
import { BUCKETS, addEncoded, addEncodedPair, countAbove, encodeHist } from './histogram.js';
import { MINUTE_MS, aggregate, isError, type RollupRow } from './rollup.js';
import { checkSli, Exclusive } from './shared.js';
import { WalCheckpointer } from './wal-checkpointer.js';

/**
 * Layout of this file (PRAGMA user_version). 2: resources kept once in their own table, and the time
 * indexes on whole seconds (`start_s`). A layout-1 file is migrated on open; a newer one is refused.
 */
export const SQLITE_APM_LAYOUT = 2;

// Rows in arrival order (rowid), the (trace_id, span_id) key a unique index beside them.
// The time indexes key on the start second, not the millisecond: within a second, entries are in arrival
// order, so a batch appends at one place per (namespace, service) even when its start times are scattered
// (late, replayed or clock-skewed spans), instead of dirtying a page per span all over the index. Queries
// narrow by second through the index and filter start_ms on the rows.
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
  start_s INTEGER NOT NULL,
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
  resource_id INTEGER NOT NULL,
  events TEXT NOT NULL,
  PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_service_second ON spans (namespace, service, start_s);
CREATE INDEX IF NOT EXISTS spans_by_second ON spans (namespace, start_s);
-- One row per distinct resource: a batch's spans mostly share a few, and the resource was ~40 % of a row.
-- last_ms: the latest start of a span stored with it, so that retention can drop those no kept span uses.
CREATE TABLE IF NOT EXISTS resources (
  id INTEGER PRIMARY KEY,
  json TEXT NOT NULL UNIQUE,
  last_ms REAL NOT NULL
);
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

/** Layout 1 → 2, in the transaction that opens the file: resources out of the rows, time indexes by second. */
const MIGRATE_FROM_1 = `
CREATE TABLE resources (id INTEGER PRIMARY KEY, json TEXT NOT NULL UNIQUE, last_ms REAL NOT NULL);
INSERT INTO resources (json, last_ms) SELECT resource, max(start_ms) FROM spans GROUP BY resource;
ALTER TABLE spans ADD COLUMN start_s INTEGER NOT NULL DEFAULT 0;
ALTER TABLE spans ADD COLUMN resource_id INTEGER NOT NULL DEFAULT 0;
UPDATE spans SET start_s = CAST(start_ms / 1000 AS INTEGER), resource_id = (SELECT id FROM resources WHERE json = spans.resource);
ALTER TABLE spans DROP COLUMN resource;
DROP INDEX spans_by_service;
DROP INDEX spans_by_start;
`;

/** Bound in this order by `fillRow`. */
const ROW_COLUMNS = [
  'trace_id',
  'span_id',
  'namespace',
  'parent_span_id',
  'service',
  'version',
  'name',
  'kind',
  'start_ms',
  'start_s',
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
  'resource_id',
  'events',
] as const;

const INSERT_SPAN = `INSERT INTO spans (${ROW_COLUMNS.join(', ')}) VALUES (${ROW_COLUMNS.map(() => '?').join(', ')})
  ON CONFLICT (trace_id, span_id) DO NOTHING`;

const UPSERT_RESOURCE = `INSERT INTO resources (json, last_ms) VALUES (?, ?)
  ON CONFLICT (json) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms) RETURNING id`;

/** A span row with its resource's JSON in the column the shared row mapping reads. */
const SELECT_SPAN = `SELECT s.*, coalesce(r.json, '{}') AS resource FROM spans s LEFT JOIN resources r ON r.id = s.resource_id`;

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
  spanWindow(fromMs, toMs) {
    return { sql: 'start_s >= ? AND start_s <= ?', params: [startSecond(fromMs), startSecond(toMs)] };
  },
};

function startSecond(ms: number): number {
  return Math.floor(ms / 1000);
}

/** Pages in the WAL after which the writer checkpoints by itself: the usual 8000 (32 MiB), or 4x that while a thread does it. */
const AUTOCHECKPOINT_PAGES = 8000;
const AUTOCHECKPOINT_BACKSTOP_PAGES = 4 * AUTOCHECKPOINT_PAGES;

export interface SqliteSpanStoreOptions {
  /** Test hook: rows per retention statement. */
  retentionBatch?: number | undefined;
  /**
   * Checkpoint the WAL from a worker thread (default true for a file): the fsyncs a checkpoint ends with
   * then never stall the event loop. False: SQLite's automatic checkpoint, inside the commit.
   */
  backgroundCheckpoint?: boolean | undefined;
  /** Where failures the store survives are reported (the checkpoint thread lost). Default: console.error. */
  onError?: StoreErrorHandler | undefined;
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
  private readonly backgroundCheckpoint: boolean;
  private readonly onError: StoreErrorHandler;
  private checkpointer: WalCheckpointer | undefined;

  constructor(
    readonly path: string,
    options: SqliteSpanStoreOptions = {},
  ) {
    this.retentionBatch = options.retentionBatch ?? RETENTION_BATCH;
    this.backgroundCheckpoint = options.backgroundCheckpoint ?? true;
    this.onError = options.onError ?? defaultErrorHandler;
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
      db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version > SQLITE_APM_LAYOUT) {
        throw new Error(`${this.path} was written by a newer Plinth (APM layout ${version}, this one knows ${SQLITE_APM_LAYOUT})`);
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
        if (version === 1) db.exec(MIGRATE_FROM_1);
        db.exec(DDL);
        db.pragma(`user_version = ${SQLITE_APM_LAYOUT}`);
      }).immediate();
    } catch (err) {
      db.close();
      throw err;
    }
    if (onDisk) for (const f of [`${this.path}-wal`, `${this.path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    if (onDisk && this.backgroundCheckpoint) {
      try {
        this.checkpointer = await WalCheckpointer.start(this.path, {
          onError: (err, lost) => {
            // Lost: the writer checkpoints by itself again, as without the thread.
            if (lost && this.db === db) db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
            this.onError(lost ? 'the WAL checkpoint thread is gone; checkpointing on the event loop' : 'WAL checkpoint failed', err);
          },
        });
        // Only a backstop now, should the thread fall behind.
        db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_BACKSTOP_PAGES}`);
      } catch (err) {
        this.onError('no WAL checkpoint thread; checkpointing on the event loop', err);
      }
    }
    this.db = db;
    this.insertBatch = batchInserter(db);
  }

  async close(): Promise<void> {
    const db = this.db;
    const checkpointer = this.checkpointer;
    this.db = undefined;
    this.checkpointer = undefined;
    this.insertBatch = undefined;
    this.statements.clear();
    // The thread's connection first: closing the last one checkpoints the WAL completely and removes it.
    await checkpointer?.close();
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
    // Not while the thread checkpoints: a commit meanwhile would keep the WAL from restarting.
    const idle = this.checkpointer?.idle;
    if (idle) await idle;
    this.handle();
    this.insertBatch!(spans);
    this.checkpointer?.written(spans.length);
  }

  async trace(namespace: string, traceId: string): Promise<SpanRecord[]> {
    // `+`: by the (trace_id, span_id) key, never a walk of the namespace's time index.
    const rows = this.stmt(`${SELECT_SPAN} WHERE s.trace_id = ? AND +s.namespace = ? ORDER BY s.start_ms, s.span_id`).all(traceId, namespace) as SpanRow[];
    return rows.map(spanFromRow);
  }

  async searchTraces(q: TraceQuery): Promise<TraceSummary[]> {
    const { sql, params } = searchSql(q, dialect);
    const found = this.stmt(sql).all(...params) as { trace_id: string }[];
    if (found.length === 0) return [];
    const ids = found.map((f) => f.trace_id);
    const s = summarySql(q.namespace, ids, '+namespace');
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
    const deleteSpans = this.stmt(
      'DELETE FROM spans WHERE rowid IN (SELECT rowid FROM spans WHERE namespace = ? AND start_s <= ? AND start_ms < ? LIMIT ?)',
    );
    for (const ns of spanNamespaces) {
      for (;;) {
        const n = deleteSpans.run(ns, startSecond(spanCutoff), spanCutoff, this.retentionBatch).changes;
        spans += n;
        if (n < this.retentionBatch) break;
        // Each batch is its own short transaction; ingest and queries get the loop between two.
        await yieldToLoop();
      }
    }
    // Every span left started at or after the cutoff, and its resource's last_ms is at least that start.
    // (A span older than the cutoff that arrived during the loop above may lose its resource: it goes
    // at the next run, and reads give it an empty one meanwhile.)
    this.stmt('DELETE FROM resources WHERE last_ms < ?').run(spanCutoff);
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

const EMPTY: Attributes = {};

/** The insert transaction: resources first (one upsert per distinct one), then the rows, then the rollups. */
function batchInserter(db: Database.Database): (spans: readonly SpanRecord[]) => void {
  const insertSpan = db.prepare(INSERT_SPAN);
  const upsertResource = db.prepare(UPSERT_RESOURCE);
  const upsertRollup = db.prepare(UPSERT_ROLLUP);
  // Bound values are copied by SQLite at each run: one array serves every row.
  const row = new Array<unknown>(ROW_COLUMNS.length);
  const tx = db.transaction((spans: readonly SpanRecord[]) => {
    // The spans of one OTLP ResourceSpans share one resource object: keyed by identity, serialized once.
    const latest = new Map<Attributes, number>();
    for (const s of spans) {
      const r = s.resource ?? EMPTY;
      const t = latest.get(r);
      if (t === undefined || s.startMs > t) latest.set(r, s.startMs);
    }
    const resourceIds = new Map<Attributes, number>();
    for (const [r, last] of latest) resourceIds.set(r, (upsertResource.get(JSON.stringify(r), last) as { id: number }).id);
    const inserted: SpanRecord[] = [];
    for (const s of spans) {
      fillRow(row, s, resourceIds.get(s.resource ?? EMPTY)!);
      // Only spans new to the store feed the rollups: a re-sent batch must not count twice.
      if (insertSpan.run(row).changes > 0) inserted.push(s);
    }
    for (const r of aggregate(inserted)) upsertRollup.run(rollupValues(r));
  });
  return (spans) => tx.immediate(spans);
}

/** A span's values in ROW_COLUMNS order. */
function fillRow(row: unknown[], s: SpanRecord, resourceId: number): void {
  row[0] = s.traceId;
  row[1] = s.spanId;
  row[2] = s.namespace;
  row[3] = s.parentSpanId ?? null;
  row[4] = s.service;
  row[5] = s.version ?? null;
  row[6] = s.name;
  row[7] = s.kind;
  row[8] = s.startMs;
  row[9] = startSecond(s.startMs);
  row[10] = s.durationMs;
  row[11] = s.status;
  row[12] = s.statusMessage ?? null;
  row[13] = s.endpoint ?? null;
  row[14] = s.peer ?? null;
  row[15] = s.httpStatus ?? null;
  row[16] = s.lane ?? null;
  row[17] = s.stress ? 1 : 0;
  row[18] = s.region ?? null;
  row[19] = s.caller ?? null;
  row[20] = isError(s) ? 1 : 0;
  row[21] = JSON.stringify(s.attributes ?? EMPTY);
  row[22] = resourceId;
  row[23] = s.events !== undefined && s.events.length > 0 ? JSON.stringify(s.events) : '[]';
}

function rollupValues(r: RollupRow): unknown[] {
  return [r.namespace, r.grp, r.minute, r.service, r.target, r.lane, r.stress, r.region, r.version, r.count, r.errors, r.rejections, encodeHist(r.hist)];
}
