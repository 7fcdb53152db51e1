import { createHash } from 'node:crypto';
import pg from 'pg';
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
import { inTransaction, RetryTransaction } from './pg-transaction.js';
import type { Lease, ListOptions, ListResult, PutRequest, PutResult, Store, StoredChange } from './types.js';

export interface PostgresStoreOptions {
  /** postgres:// connection URL. */
  url: string;
  /** Every table lives in this schema, created when missing. Default `plinth`. */
  schema?: string | undefined;
  /** Connections in the pool. Default 10. */
  poolSize?: number | undefined;
  onError?: StoreErrorHandler | undefined;
}

export const DEFAULT_SCHEMA = 'plinth';

// Unquoted-identifier rules, lower case only: the schema also goes into `-c search_path=`, where any other
// spelling would need quoting that the startup options cannot carry.
const SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;

/** Revisions, seqs and epoch milliseconds are int8; all stay far below 2^53, so numbers, not strings. */
const INT8_OID = 20;
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID && format !== 'binary' ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

function ddl(schema: string): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS "${schema}"`,
    `CREATE TABLE IF NOT EXISTS meta (
       id int PRIMARY KEY CHECK (id = 1),
       schema_version int NOT NULL,
       revision bigint NOT NULL
     )`,
    `INSERT INTO meta (id, schema_version, revision) VALUES (1, ${SCHEMA_VERSION}, 0) ON CONFLICT (id) DO NOTHING`,
    // Apart from meta, so compaction never waits for (or blocks) the writers' revision lock.
    `CREATE TABLE IF NOT EXISTS compaction (id int PRIMARY KEY CHECK (id = 1), revision bigint NOT NULL)`,
    `INSERT INTO compaction (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`,
    // COLLATE "C": byte order, the order SQLite lists in, whatever the database's locale.
    `CREATE TABLE IF NOT EXISTS resources (
       kind text COLLATE "C" NOT NULL,
       namespace text COLLATE "C" NOT NULL,
       name text COLLATE "C" NOT NULL,
       revision bigint NOT NULL,
       labels jsonb NOT NULL,
       doc text NOT NULL,
       PRIMARY KEY (kind, namespace, name)
     )`,
    `CREATE INDEX IF NOT EXISTS resources_by_labels ON resources USING gin (labels jsonb_path_ops)`,
    // doc is text, not jsonb: jsonb rejects NUL characters in strings and renormalizes numbers; text round-trips.
    `CREATE TABLE IF NOT EXISTS changes (
       revision bigint PRIMARY KEY,
       type text NOT NULL,
       kind text COLLATE "C" NOT NULL,
       namespace text COLLATE "C" NOT NULL,
       name text COLLATE "C" NOT NULL,
       doc text NOT NULL,
       previous_labels text
     )`,
    `CREATE INDEX IF NOT EXISTS changes_by_key ON changes (kind, namespace, name, revision)`,
    `CREATE TABLE IF NOT EXISTS leases (
       namespace text COLLATE "C" NOT NULL,
       name text COLLATE "C" NOT NULL,
       expires_at bigint NOT NULL,
       PRIMARY KEY (namespace, name)
     )`,
    `CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at)`,
    `CREATE TABLE IF NOT EXISTS audit (
       seq bigint PRIMARY KEY,
       time text NOT NULL,
       actor text NOT NULL,
       action text NOT NULL,
       kind text NOT NULL,
       namespace text NOT NULL,
       name text NOT NULL,
       outcome text NOT NULL,
       source text NOT NULL,
       revision_before bigint,
       revision_after bigint,
       detail text,
       prev_hash text NOT NULL,
       hash text NOT NULL
     )`,
    // Apart from the entries, so removing the newest entries shows; its row lock serializes appends.
    `CREATE TABLE IF NOT EXISTS audit_head (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, hash text NOT NULL)`,
    `INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '${AUDIT_GENESIS_HASH}') ON CONFLICT (id) DO NOTHING`,
  ];
}


type Query = pg.PoolClient;

/**
 * The shared store: several `plinth server` processes on one database (one schema).
 *
 * Ordering: every write takes its revision with `UPDATE meta ... RETURNING`, whose row lock is held until
 * commit, so revision N+1 cannot be taken before N has committed. Readers of `changesSince` therefore never
 * see a later revision while an earlier one is still in flight.
 *
 * Lock order, to stay free of deadlocks: resource row, then meta, then lease. A create has no row to lock
 * and takes meta first; if another process created the row meanwhile, it starts over.
 */
export class PostgresStore implements Store {
  readonly backend = 'postgres' as const;
  readonly schema: string;
  /** NOTIFY channel; names the schema so that stores in other schemas of the database never hear it. */
  readonly channel: string;
  private readonly pool: pg.Pool;
  private readonly clientConfig: pg.ClientConfig;
  private readonly listeners: ChangeListeners;
  private readonly onError: StoreErrorHandler;
  private listenClient: pg.Client | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectAttempt = 0;
  /** Newest revision listeners were told about: our own commit and its NOTIFY echo fire once, not twice. */
  private lastFired = 0;
  private initialized: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: PostgresStoreOptions) {
    const schema = options.schema ?? DEFAULT_SCHEMA;
    if (!SCHEMA_PATTERN.test(schema)) {
      throw new Error(`PostgreSQL schema ${JSON.stringify(schema)} is not valid: use lower-case letters, digits and _ (at most 63, not starting with a digit)`);
    }
    this.schema = schema;
    const channel = `plinth_changes_${schema}`;
    this.channel = channel.length <= 63 ? channel : `plinth_changes_${createHash('sha256').update(schema).digest('hex').slice(0, 40)}`;
    this.onError = options.onError ?? defaultErrorHandler;
    this.listeners = new ChangeListeners(this.onError);

    // pg lets a URL's own parameters win over explicit settings, so `options` is lifted out of the URL and
    // merged: otherwise a URL carrying `?options=` would silently drop the search_path.
    const url = new URL(options.url);
    const urlOptions = url.searchParams.get('options');
    url.searchParams.delete('options');
    this.clientConfig = {
      connectionString: url.toString(),
      options: `${urlOptions ? urlOptions + ' ' : ''}-c search_path=${schema}`,
      application_name: 'plinth',
      keepAlive: true,
      types,
    };
    this.pool = new pg.Pool({ ...this.clientConfig, max: options.poolSize ?? 10 });
    // An idle connection that dies (server restart, failover) is dropped by the pool; without this
    // handler its 'error' event would crash the process.
    this.pool.on('error', (err) => this.onError('PostgreSQL idle connection failed', err));
    // A checked-out connection that dies between two queries emits 'error' too; the next query reports it.
    this.pool.on('connect', (client) => client.on('error', () => {}));
  }

  init(): Promise<void> {
    // A failed init may be retried (the database may come up later); a successful one is done once.
    this.initialized ??= this.doInit().catch((err: unknown) => {
      this.initialized = undefined;
      throw err;
    });
    return this.initialized;
  }

  private async doInit(): Promise<void> {
    await this.tx(async (c) => {
      // Several servers may start at once against a fresh database; CREATE ... IF NOT EXISTS still races.
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`plinth:init:${this.schema}`]);
      for (const statement of ddl(this.schema)) await c.query(statement);
      const { rows } = await c.query<{ schema_version: number }>('SELECT schema_version FROM meta WHERE id = 1');
      const version = rows[0]?.schema_version ?? SCHEMA_VERSION;
      if (version > SCHEMA_VERSION) {
        throw new Error(`schema ${this.schema} was written by a newer Plinth (store layout ${version}, this one knows ${SCHEMA_VERSION})`);
      }
    });
    this.lastFired = await this.currentRevision();
    await this.connectListener();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      const listener = this.listenClient;
      this.listenClient = undefined;
      if (listener) await listener.end().catch(() => {});
      await this.pool.end();
    })();
    return this.closing;
  }

  // ---- notifications --------------------------------------------------------------------------------

  private changed(revision: number, force = false): void {
    if (!force && revision <= this.lastFired) return;
    this.lastFired = Math.max(this.lastFired, revision);
    this.listeners.emit(revision);
  }

  private async connectListener(): Promise<void> {
    const client = new pg.Client({ ...this.clientConfig, application_name: 'plinth-listen' });
    client.on('error', (err) => this.listenerLost(client, err));
    client.on('end', () => this.listenerLost(client, undefined));
    client.on('notification', (msg) => {
      if (msg.channel !== this.channel) return;
      const revision = Number(msg.payload);
      if (Number.isSafeInteger(revision)) this.changed(revision);
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel}"`);
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    if (this.closing) {
      await client.end().catch(() => {});
      return;
    }
    this.listenClient = client;
  }

  private listenerLost(client: pg.Client, err: Error | undefined): void {
    // Events of a client given up on already (or still connecting, whose connect() rejects) are ignored.
    if (client !== this.listenClient) return;
    this.listenClient = undefined;
    this.onError('PostgreSQL notification connection lost; reconnecting', err ?? new Error('connection ended'));
    client.end().catch(() => {});
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closing || this.reconnectTimer) return;
    const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.reconnectAttempt);
    this.reconnectAttempt++;
    // Jitter, so that servers cut off together do not all come back in the same instant.
    this.reconnectTimer = setTimeout(
      () => {
        this.reconnectTimer = undefined;
        void this.reconnect();
      },
      ceiling / 2 + (Math.random() * ceiling) / 2,
    );
    this.reconnectTimer.unref();
  }

  private async reconnect(): Promise<void> {
    if (this.closing) return;
    try {
      await this.connectListener();
    } catch (err) {
      this.onError('PostgreSQL notification connection failed; retrying', err);
      this.scheduleReconnect();
      return;
    }
    this.reconnectAttempt = 0;
    // Whatever was notified while we were away is lost: fire once so that listeners read the log again.
    let revision = this.lastFired;
    try {
      revision = await this.currentRevision();
    } catch {
      // listeners catch up from their own cursor; the number is only a hint
    }
    if (!this.closing) this.changed(revision, true);
  }

  // ---- transactions ---------------------------------------------------------------------------------

  private tx<T>(fn: (c: Query) => Promise<T>, begin = 'BEGIN'): Promise<T> {
    return inTransaction(this.pool, fn, begin);
  }

  private async nextRevision(c: Query): Promise<number> {
    const { rows } = await c.query<{ revision: number }>('UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision');
    return rows[0]!.revision;
  }

  private async lockedCurrent(c: Query, kind: string, namespace: string, name: string): Promise<Resource | undefined> {
    const { rows } = await c.query<{ doc: string }>(
      'SELECT doc FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3 FOR UPDATE',
      [kind, namespace, name],
    );
    return rows[0] ? parseResource(rows[0].doc) : undefined;
  }

  private async upsertLease(c: Query, namespace: string, name: string, expiresAt: number): Promise<void> {
    await c.query(
      `INSERT INTO leases (namespace, name, expires_at) VALUES ($1, $2, $3)
       ON CONFLICT (namespace, name) DO UPDATE SET expires_at = excluded.expires_at`,
      [namespace, name, expiresAt],
    );
  }

  private async recordChange(c: Query, type: string, r: Resource, doc: string, previousLabels: Record<string, string> | null): Promise<void> {
    await c.query('INSERT INTO changes (revision, type, kind, namespace, name, doc, previous_labels) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
      r.metadata.revision,
      type,
      r.kind,
      r.metadata.namespace,
      r.metadata.name,
      doc,
      previousLabels === null ? null : JSON.stringify(previousLabels),
    ]);
    // Delivered at commit, to every server listening on this schema (this one included).
    await c.query('SELECT pg_notify($1, $2)', [this.channel, String(r.metadata.revision)]);
  }

  /** Deletes a row locked by the caller; returns it stamped with the delete's revision. */
  private async deleteLocked(c: Query, current: Resource): Promise<Resource> {
    const revision = await this.nextRevision(c);
    const gone = deletedVersion(current, revision);
    const doc = JSON.stringify(gone);
    const { kind } = current;
    const { namespace, name } = current.metadata;
    await c.query('DELETE FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3', [kind, namespace, name]);
    await this.recordChange(c, 'DELETED', gone, doc, null);
    if (kind === 'Instance') await c.query('DELETE FROM leases WHERE namespace = $1 AND name = $2', [namespace, name]);
    return parseResource(doc);
  }

  // ---- resources ------------------------------------------------------------------------------------

  async get(kind: string, namespace: string, name: string): Promise<Resource | undefined> {
    const { rows } = await this.pool.query<{ doc: string }>('SELECT doc FROM resources WHERE kind = $1 AND namespace = $2 AND name = $3', [
      kind,
      namespace,
      name,
    ]);
    return rows[0] ? parseResource(rows[0].doc) : undefined;
  }

  async list(kind: string, options: ListOptions = {}): Promise<ListResult> {
    const { namespace, selector, limit, after } = options;
    const where = ['kind = $1'];
    const params: unknown[] = [kind];
    if (namespace !== undefined) {
      params.push(namespace);
      where.push(`namespace = $${params.length}`);
    }
    const equal = equalityLabels(selector);
    if (equal.length > 0) {
      // Conflicting equalities collapse to one value here; such a selector matches nothing, as the JS check says.
      params.push(JSON.stringify(Object.fromEntries(equal)));
      where.push(`labels @> $${params.length}::jsonb`);
    }
    const chunk = listChunkSize(limit);
    const n = params.length;
    const fromStart = `SELECT namespace, name, labels, doc FROM resources WHERE ${where.join(' AND ')} ORDER BY namespace, name LIMIT $${n + 1}`;
    const fromKey = `SELECT namespace, name, labels, doc FROM resources WHERE ${where.join(' AND ')}
      AND (namespace, name) > ($${n + 1}, $${n + 2}) ORDER BY namespace, name LIMIT $${n + 3}`;

    // One snapshot for the revision and every chunk: the page is exactly the state at `revision`.
    return this.tx(async (c) => {
      const { rows: meta } = await c.query<{ revision: number }>('SELECT revision FROM meta WHERE id = 1');
      const page = new PageCollector(limit, selector);
      let cursor = after;
      for (;;) {
        const { rows } = cursor
          ? await c.query<ListRow>(fromKey, [...params, cursor.namespace, cursor.name, chunk])
          : await c.query<ListRow>(fromStart, [...params, chunk]);
        const last = rows[rows.length - 1];
        if (page.add(rows) || rows.length < chunk || !last) break;
        cursor = { namespace: last.namespace, name: last.name };
      }
      return page.result(meta[0]!.revision);
    }, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  }

  async put(req: PutRequest): Promise<PutResult> {
    const content = contentOf(req.labels, req.annotations, specOf(req));
    const result = await this.tx(async (c): Promise<PutResult> => {
      const current = await this.lockedCurrent(c, req.kind, req.namespace, req.name);
      checkExpectation(req, req.expectRevision, current?.metadata.revision);
      if (current && contentOf(current.metadata.labels, current.metadata.annotations, current.spec) === content) {
        // Re-registering an unchanged Instance must still revive its lease.
        if (req.leaseExpiresAt !== undefined) await this.upsertLease(c, req.namespace, req.name, req.leaseExpiresAt);
        return { type: 'UNCHANGED', resource: current, previous: structuredClone(current) };
      }
      const revision = await this.nextRevision(c);
      const next = nextVersion(req, revision, current, new Date().toISOString());
      const doc = JSON.stringify(next);
      const labels = JSON.stringify(req.labels);
      if (current) {
        await c.query('UPDATE resources SET revision = $4, labels = $5::jsonb, doc = $6 WHERE kind = $1 AND namespace = $2 AND name = $3', [
          req.kind,
          req.namespace,
          req.name,
          revision,
          labels,
          doc,
        ]);
      } else {
        const ins = await c.query(
          `INSERT INTO resources (kind, namespace, name, revision, labels, doc) VALUES ($1, $2, $3, $4, $5::jsonb, $6)
           ON CONFLICT (kind, namespace, name) DO NOTHING`,
          [req.kind, req.namespace, req.name, revision, labels, doc],
        );
        // Another server created it between our read and our revision lock; the rerun locks the new row.
        if (ins.rowCount === 0) throw new RetryTransaction('concurrent create');
      }
      const type = current ? 'MODIFIED' : 'ADDED';
      await this.recordChange(c, type, next, doc, current ? current.metadata.labels : null);
      if (req.leaseExpiresAt !== undefined) await this.upsertLease(c, req.namespace, req.name, req.leaseExpiresAt);
      return { type, resource: parseResource(doc), previous: current };
    });
    if (result.type !== 'UNCHANGED') this.changed(result.resource.metadata.revision);
    return result;
  }

  async delete(kind: string, namespace: string, name: string, options: { expectRevision?: number } = {}): Promise<Resource | undefined> {
    const gone = await this.tx(async (c) => {
      const current = await this.lockedCurrent(c, kind, namespace, name);
      if (!current) return undefined;
      checkExpectation({ kind, namespace, name }, options.expectRevision, current.metadata.revision);
      return this.deleteLocked(c, current);
    });
    if (gone) this.changed(gone.metadata.revision);
    return gone;
  }

  async history(
    kind: string,
    namespace: string,
    name: string,
    options: { limit?: number; beforeRevision?: number } = {},
  ): Promise<WatchEvent[]> {
    // LIMIT NULL is no limit; a NULL bound drops the condition.
    const { rows } = await this.pool.query<{ revision: number; type: string; doc: string }>(
      `SELECT revision, type, doc FROM changes
       WHERE kind = $1 AND namespace = $2 AND name = $3 AND ($4::bigint IS NULL OR revision < $4)
       ORDER BY revision DESC LIMIT $5`,
      [kind, namespace, name, options.beforeRevision ?? null, options.limit ?? null],
    );
    return rows.map((r) => toEvent(r.revision, r.type, r.doc));
  }

  async atRevision(kind: string, namespace: string, name: string, revision: number): Promise<WatchEvent | undefined> {
    const { rows } = await this.pool.query<{ revision: number; type: string; doc: string }>(
      'SELECT revision, type, doc FROM changes WHERE revision = $1 AND kind = $2 AND namespace = $3 AND name = $4',
      [revision, kind, namespace, name],
    );
    return rows[0] ? toEvent(rows[0].revision, rows[0].type, rows[0].doc) : undefined;
  }

  async changesSince(revision: number, limit: number): Promise<StoredChange[]> {
    const { rows } = await this.pool.query<{ revision: number; type: string; doc: string; previous_labels: string | null }>(
      'SELECT revision, type, doc, previous_labels FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2',
      [revision, limit],
    );
    return rows.map((r) => toStoredChange(r.revision, r.type, r.doc, r.previous_labels));
  }

  async currentRevision(): Promise<number> {
    const { rows } = await this.pool.query<{ revision: number }>('SELECT revision FROM meta WHERE id = 1');
    return rows[0]!.revision;
  }

  async compactedRevision(): Promise<number> {
    const { rows } = await this.pool.query<{ revision: number }>('SELECT revision FROM compaction WHERE id = 1');
    return rows[0]!.revision;
  }

  async compact(revision: number): Promise<void> {
    await this.tx(async (c) => {
      // Every revision up to the committed one is final, so compaction needs no revision lock.
      const { rows } = await c.query<{ done: number; current: number }>(
        'SELECT c.revision AS done, (SELECT revision FROM meta WHERE id = 1) AS current FROM compaction c WHERE c.id = 1 FOR UPDATE',
      );
      const { done, current } = rows[0]!;
      const target = Math.min(revision, current);
      if (target <= done) return;
      await c.query('DELETE FROM changes WHERE revision <= $1', [target]);
      await c.query('UPDATE compaction SET revision = $1 WHERE id = 1', [target]);
    });
  }

  onChange(listener: (revision: number) => void): () => void {
    return this.listeners.add(listener);
  }

  // ---- leases ---------------------------------------------------------------------------------------

  async renewLease(namespace: string, name: string, expiresAt: number): Promise<boolean> {
    const r = await this.pool.query('UPDATE leases SET expires_at = $3 WHERE namespace = $1 AND name = $2', [namespace, name, expiresAt]);
    return (r.rowCount ?? 0) > 0;
  }

  async getLease(namespace: string, name: string): Promise<Lease | undefined> {
    const { rows } = await this.pool.query<{ namespace: string; name: string; expires_at: number }>(
      'SELECT namespace, name, expires_at FROM leases WHERE namespace = $1 AND name = $2',
      [namespace, name],
    );
    const r = rows[0];
    return r ? { namespace: r.namespace, name: r.name, expiresAt: r.expires_at } : undefined;
  }

  async expiredLeases(now: number, limit: number): Promise<Lease[]> {
    const { rows } = await this.pool.query<{ namespace: string; name: string; expires_at: number }>(
      'SELECT namespace, name, expires_at FROM leases WHERE expires_at < $1 ORDER BY expires_at, namespace, name LIMIT $2',
      [now, limit],
    );
    return rows.map((r) => ({ namespace: r.namespace, name: r.name, expiresAt: r.expires_at }));
  }

  async expireLease(namespace: string, name: string, now: number): Promise<Resource | undefined> {
    const gone = await this.tx(async (c) => {
      // Instance row before lease: the order put takes them in.
      const instance = await this.lockedCurrent(c, 'Instance', namespace, name);
      const { rows } = await c.query<{ expires_at: number }>('SELECT expires_at FROM leases WHERE namespace = $1 AND name = $2 FOR UPDATE', [
        namespace,
        name,
      ]);
      const lease = rows[0];
      if (!lease || lease.expires_at >= now) return undefined;
      if (!instance) {
        // A lease without its Instance protects nothing.
        await c.query('DELETE FROM leases WHERE namespace = $1 AND name = $2', [namespace, name]);
        return undefined;
      }
      return this.deleteLocked(c, instance);
    });
    if (gone) this.changed(gone.metadata.revision);
    return gone;
  }

  // ---- audit ----------------------------------------------------------------------------------------

  async appendAudit(body: AuditEntryBody): Promise<AuditEntry> {
    return this.tx(async (c) => {
      // The head row lock makes appends from every server one chain.
      const { rows } = await c.query<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE');
      const head = rows[0]!;
      const seq = head.seq + 1;
      const e = auditEntry(seq, head.hash, auditHash(head.hash, seq, body), body);
      await c.query(
        `INSERT INTO audit (seq, time, actor, action, kind, namespace, name, outcome, source, revision_before, revision_after, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
        [e.seq, e.time, e.actor, e.action, e.kind, e.namespace, e.name, e.outcome, e.source, e.revisionBefore, e.revisionAfter, e.detail, e.prevHash, e.hash],
      );
      await c.query('UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1', [seq, e.hash]);
      return e;
    });
  }

  async readAudit(afterSeq: number, limit: number): Promise<AuditEntry[]> {
    const { rows } = await this.pool.query<AuditRow>('SELECT * FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2', [afterSeq, limit]);
    return rows.map(auditFromRow);
  }

  async auditHead(): Promise<{ seq: number; hash: string }> {
    const { rows } = await this.pool.query<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_head WHERE id = 1');
    return { seq: rows[0]!.seq, hash: rows[0]!.hash };
  }
}
