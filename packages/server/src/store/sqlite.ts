import Database from 'better-sqlite3';
import {
  AUDIT_GENESIS_HASH,
  auditHash,
  type AuditEntry,
  type AuditEntryBody,
  type Resource,
  type WatchEvent,
} from '@plinth/core';
import {
  ChangeListeners,
  PageCollector,
  SCHEMA_VERSION,
  auditEntry,
  auditFromRow,
  checkExpectation,
  contentOf,
  defaultErrorHandler,
  deletedVersion,
  equalityLabels,
  listChunkSize,
  nextVersion,
  parseResource,
  specOf,
  toEvent,
  toStoredChange,
  type AuditRow,
  type ListRow,
  type StoreErrorHandler,
} from './common.js';
import type { Lease, ListOptions, ListResult, PutRequest, PutResult, Store, StoredChange } from './types.js';

export interface SqliteStoreOptions {
  onError?: StoreErrorHandler | undefined;
}

const DDL = `
CREATE TABLE IF NOT EXISTS meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, revision) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS compaction (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO compaction (id, revision) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS resources (
  kind TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  revision INTEGER NOT NULL,
  labels TEXT NOT NULL,
  doc TEXT NOT NULL,
  PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS changes (
  revision INTEGER PRIMARY KEY,
  type TEXT NOT NULL,
  kind TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  doc TEXT NOT NULL,
  previous_labels TEXT
);
CREATE INDEX IF NOT EXISTS changes_by_key ON changes (kind, namespace, name, revision);
CREATE TABLE IF NOT EXISTS leases (
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, name)
);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  kind TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  outcome TEXT NOT NULL,
  source TEXT NOT NULL,
  revision_before INTEGER,
  revision_after INTEGER,
  detail TEXT,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
-- The head lives apart from the entries: removing the newest entries then shows as a head with no entry.
CREATE TABLE IF NOT EXISTS audit_head (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL
);
INSERT OR IGNORE INTO audit_head (id, seq, hash) VALUES (1, 0, '${AUDIT_GENESIS_HASH}');
`;

/** Ceiling for "no beforeRevision", as an integer SQLite compares natively. */
const NO_BOUND = Number.MAX_SAFE_INTEGER;

type Statement = Database.Statement<unknown[], unknown>;

/**
 * The embedded store: one SQLite file owned by one process. better-sqlite3 is synchronous, so a write's
 * transaction never interleaves with another call of this process: revisions commit in order by
 * construction, and onChange can fire right after the commit returns.
 */
export class SqliteStore implements Store {
  readonly backend = 'sqlite' as const;
  private db: Database.Database | undefined;
  private readonly statements = new Map<string, Statement>();
  private readonly listeners: ChangeListeners;

  constructor(
    readonly path: string,
    options: SqliteStoreOptions = {},
  ) {
    this.listeners = new ChangeListeners(options.onError ?? defaultErrorHandler);
  }

  async init(): Promise<void> {
    if (this.db) return;
    const db = new Database(this.path);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      // Another connection (a backup, an operator's sqlite3 shell) may hold the lock briefly.
      db.pragma('busy_timeout = 5000');
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version > SCHEMA_VERSION) {
        throw new Error(`${this.path} was written by a newer Plinth (store layout ${version}, this one knows ${SCHEMA_VERSION})`);
      }
      db.transaction(() => {
        db.exec(DDL);
        db.pragma(`user_version = ${SCHEMA_VERSION}`);
      }).immediate();
    } catch (err) {
      db.close();
      throw err;
    }
    this.db = db;
  }

  async close(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    this.statements.clear();
    db?.close();
  }

  private handle(): Database.Database {
    if (!this.db) throw new Error('the SQLite store is not open (call init() first)');
    return this.db;
  }

  /** Prepared once per SQL text and reused; list builds its SQL from the filters, so a map, not fields. */
  private stmt(sql: string): Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.handle().prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  private write<T>(fn: () => T): T {
    // IMMEDIATE takes the write lock up front instead of upgrading a read lock mid-transaction.
    return this.handle().transaction(fn).immediate();
  }

  private read<T>(fn: () => T): T {
    return this.handle().transaction(fn).deferred();
  }

  private revisionNow(): number {
    return (this.stmt('SELECT revision FROM meta WHERE id = 1').get() as { revision: number }).revision;
  }

  private nextRevision(): number {
    return (this.stmt('UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision').get() as { revision: number }).revision;
  }

  private current(kind: string, namespace: string, name: string): Resource | undefined {
    const row = this.stmt('SELECT doc FROM resources WHERE kind = ? AND namespace = ? AND name = ?').get(kind, namespace, name) as
      | { doc: string }
      | undefined;
    return row ? parseResource(row.doc) : undefined;
  }

  private upsertLease(namespace: string, name: string, expiresAt: number): void {
    this.stmt(
      'INSERT INTO leases (namespace, name, expires_at) VALUES (?, ?, ?) ON CONFLICT (namespace, name) DO UPDATE SET expires_at = excluded.expires_at',
    ).run(namespace, name, expiresAt);
  }

  private recordChange(type: string, r: Resource, doc: string, previousLabels: Record<string, string> | null): void {
    this.stmt('INSERT INTO changes (revision, type, kind, namespace, name, doc, previous_labels) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
      r.metadata.revision,
      type,
      r.kind,
      r.metadata.namespace,
      r.metadata.name,
      doc,
      previousLabels === null ? null : JSON.stringify(previousLabels),
    );
  }

  /** Deletes inside the caller's transaction; returns the resource stamped with the delete's revision. */
  private deleteLocked(current: Resource): Resource {
    const revision = this.nextRevision();
    const gone = deletedVersion(current, revision);
    const doc = JSON.stringify(gone);
    const { kind } = current;
    const { namespace, name } = current.metadata;
    this.stmt('DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?').run(kind, namespace, name);
    this.recordChange('DELETED', gone, doc, null);
    if (kind === 'Instance') this.stmt('DELETE FROM leases WHERE namespace = ? AND name = ?').run(namespace, name);
    return parseResource(doc);
  }

  async get(kind: string, namespace: string, name: string): Promise<Resource | undefined> {
    return this.current(kind, namespace, name);
  }

  async list(kind: string, options: ListOptions = {}): Promise<ListResult> {
    const { namespace, selector, limit, after } = options;
    const where = ['kind = ?'];
    const params: unknown[] = [kind];
    if (namespace !== undefined) {
      where.push('namespace = ?');
      params.push(namespace);
    }
    for (const [key, value] of equalityLabels(selector)) {
      // A key that cannot be written as a JSON path is left to the JS check.
      if (/["\\]/.test(key)) continue;
      where.push('json_extract(labels, ?) = ?');
      params.push(`$."${key}"`, value);
    }
    const head = `SELECT namespace, name, labels, doc FROM resources WHERE ${where.join(' AND ')}`;
    const fromStart = this.stmt(`${head} ORDER BY namespace, name LIMIT ?`);
    const fromKey = this.stmt(`${head} AND (namespace, name) > (?, ?) ORDER BY namespace, name LIMIT ?`);
    const chunk = listChunkSize(limit);

    return this.read(() => {
      const revision = this.revisionNow();
      const page = new PageCollector(limit, selector);
      let cursor = after;
      for (;;) {
        const raw = (cursor ? fromKey.all(...params, cursor.namespace, cursor.name, chunk) : fromStart.all(...params, chunk)) as {
          namespace: string;
          name: string;
          labels: string;
          doc: string;
        }[];
        const rows: ListRow[] = raw.map((r) => ({ ...r, labels: JSON.parse(r.labels) as Record<string, string> }));
        const last = rows[rows.length - 1];
        if (page.add(rows) || rows.length < chunk || !last) break;
        cursor = { namespace: last.namespace, name: last.name };
      }
      return page.result(revision);
    });
  }

  async put(req: PutRequest): Promise<PutResult> {
    const content = contentOf(req.labels, req.annotations, specOf(req));
    const result = this.write((): PutResult => {
      const current = this.current(req.kind, req.namespace, req.name);
      checkExpectation(req, req.expectRevision, current?.metadata.revision);
      if (current && contentOf(current.metadata.labels, current.metadata.annotations, current.spec) === content) {
        // Re-registering an unchanged Instance must still revive its lease.
        if (req.leaseExpiresAt !== undefined) this.upsertLease(req.namespace, req.name, req.leaseExpiresAt);
        return { type: 'UNCHANGED', resource: current, previous: structuredClone(current) };
      }
      const revision = this.nextRevision();
      const next = nextVersion(req, revision, current, new Date().toISOString());
      const doc = JSON.stringify(next);
      this.stmt(
        `INSERT INTO resources (kind, namespace, name, revision, labels, doc) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (kind, namespace, name) DO UPDATE SET revision = excluded.revision, labels = excluded.labels, doc = excluded.doc`,
      ).run(req.kind, req.namespace, req.name, revision, JSON.stringify(req.labels), doc);
      const type = current ? 'MODIFIED' : 'ADDED';
      this.recordChange(type, next, doc, current ? current.metadata.labels : null);
      if (req.leaseExpiresAt !== undefined) this.upsertLease(req.namespace, req.name, req.leaseExpiresAt);
      return { type, resource: parseResource(doc), previous: current };
    });
    if (result.type !== 'UNCHANGED') this.listeners.emit(result.resource.metadata.revision);
    return result;
  }

  async delete(kind: string, namespace: string, name: string, options: { expectRevision?: number } = {}): Promise<Resource | undefined> {
    const gone = this.write(() => {
      const current = this.current(kind, namespace, name);
      if (!current) return undefined;
      checkExpectation({ kind, namespace, name }, options.expectRevision, current.metadata.revision);
      return this.deleteLocked(current);
    });
    if (gone) this.listeners.emit(gone.metadata.revision);
    return gone;
  }

  async history(
    kind: string,
    namespace: string,
    name: string,
    options: { limit?: number; beforeRevision?: number } = {},
  ): Promise<WatchEvent[]> {
    const rows = this.stmt(
      `SELECT revision, type, doc FROM changes WHERE kind = ? AND namespace = ? AND name = ? AND revision < ?
       ORDER BY revision DESC LIMIT ?`,
    ).all(kind, namespace, name, options.beforeRevision ?? NO_BOUND, options.limit ?? -1) as { revision: number; type: string; doc: string }[];
    return rows.map((r) => toEvent(r.revision, r.type, r.doc));
  }

  async atRevision(kind: string, namespace: string, name: string, revision: number): Promise<WatchEvent | undefined> {
    const r = this.stmt('SELECT revision, type, doc FROM changes WHERE revision = ? AND kind = ? AND namespace = ? AND name = ?').get(
      revision,
      kind,
      namespace,
      name,
    ) as { revision: number; type: string; doc: string } | undefined;
    return r ? toEvent(r.revision, r.type, r.doc) : undefined;
  }

  async changesSince(revision: number, limit: number): Promise<StoredChange[]> {
    const rows = this.stmt('SELECT revision, type, doc, previous_labels FROM changes WHERE revision > ? ORDER BY revision LIMIT ?').all(
      revision,
      limit,
    ) as { revision: number; type: string; doc: string; previous_labels: string | null }[];
    return rows.map((r) => toStoredChange(r.revision, r.type, r.doc, r.previous_labels));
  }

  async currentRevision(): Promise<number> {
    return this.revisionNow();
  }

  async compactedRevision(): Promise<number> {
    return (this.stmt('SELECT revision FROM compaction WHERE id = 1').get() as { revision: number }).revision;
  }

  async compact(revision: number): Promise<void> {
    this.write(() => {
      const target = Math.min(revision, this.revisionNow());
      const done = (this.stmt('SELECT revision FROM compaction WHERE id = 1').get() as { revision: number }).revision;
      if (target <= done) return;
      this.stmt('DELETE FROM changes WHERE revision <= ?').run(target);
      this.stmt('UPDATE compaction SET revision = ? WHERE id = 1').run(target);
    });
  }

  onChange(listener: (revision: number) => void): () => void {
    return this.listeners.add(listener);
  }

  async renewLease(namespace: string, name: string, expiresAt: number): Promise<boolean> {
    return this.stmt('UPDATE leases SET expires_at = ? WHERE namespace = ? AND name = ?').run(expiresAt, namespace, name).changes > 0;
  }

  async getLease(namespace: string, name: string): Promise<Lease | undefined> {
    const r = this.stmt('SELECT namespace, name, expires_at FROM leases WHERE namespace = ? AND name = ?').get(namespace, name) as
      | { namespace: string; name: string; expires_at: number }
      | undefined;
    return r ? { namespace: r.namespace, name: r.name, expiresAt: r.expires_at } : undefined;
  }

  async expiredLeases(now: number, limit: number): Promise<Lease[]> {
    const rows = this.stmt(
      'SELECT namespace, name, expires_at FROM leases WHERE expires_at < ? ORDER BY expires_at, namespace, name LIMIT ?',
    ).all(now, limit) as { namespace: string; name: string; expires_at: number }[];
    return rows.map((r) => ({ namespace: r.namespace, name: r.name, expiresAt: r.expires_at }));
  }

  async expireLease(namespace: string, name: string, now: number): Promise<Resource | undefined> {
    const gone = this.write(() => {
      const lease = this.stmt('SELECT expires_at FROM leases WHERE namespace = ? AND name = ?').get(namespace, name) as
        | { expires_at: number }
        | undefined;
      if (!lease || lease.expires_at >= now) return undefined;
      const instance = this.current('Instance', namespace, name);
      if (!instance) {
        // A lease without its Instance protects nothing.
        this.stmt('DELETE FROM leases WHERE namespace = ? AND name = ?').run(namespace, name);
        return undefined;
      }
      return this.deleteLocked(instance);
    });
    if (gone) this.listeners.emit(gone.metadata.revision);
    return gone;
  }

  async appendAudit(body: AuditEntryBody): Promise<AuditEntry> {
    return this.write(() => {
      const head = this.stmt('SELECT seq, hash FROM audit_head WHERE id = 1').get() as { seq: number; hash: string };
      const seq = head.seq + 1;
      const hash = auditHash(head.hash, seq, body);
      const e = auditEntry(seq, head.hash, hash, body);
      this.stmt(
        `INSERT INTO audit (seq, time, actor, action, kind, namespace, name, outcome, source, revision_before, revision_after, detail, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        e.seq,
        e.time,
        e.actor,
        e.action,
        e.kind,
        e.namespace,
        e.name,
        e.outcome,
        e.source,
        e.revisionBefore,
        e.revisionAfter,
        e.detail,
        e.prevHash,
        e.hash,
      );
      this.stmt('UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1').run(seq, hash);
      return e;
    });
  }

  async readAudit(afterSeq: number, limit: number): Promise<AuditEntry[]> {
    const rows = this.stmt('SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?').all(afterSeq, limit) as AuditRow[];
    return rows.map(auditFromRow);
  }

  async auditHead(): Promise<{ seq: number; hash: string }> {
    const h = this.stmt('SELECT seq, hash FROM audit_head WHERE id = 1').get() as { seq: number; hash: string };
    return { seq: h.seq, hash: h.hash };
  }
}
