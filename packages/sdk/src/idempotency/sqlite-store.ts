import { randomUUID } from 'node:crypto';
import type BetterSqlite3 from 'better-sqlite3';
import { indexName, PURGE_BATCH, PURGE_EVERY, quoteTableName } from './sql.js';
import { systemClock, type BeginResult, type Clock, type IdempotencyStore, type StoredResponse } from './types.js';

export interface SqliteIdempotencyStoreOptions {
  /** Your open better-sqlite3 Database, or a file path this store opens (and closes) itself. */
  database: BetterSqlite3.Database | string;
  /** Created if missing. Default `plinth_idempotency`. */
  table?: string;
  /** Wall clock for expiry; processes sharing the file must agree on it, so the default is `Date.now`. */
  clock?: Clock;
}

interface Row {
  fingerprint: string;
  token: string | null;
  status: number | null;
  headers: string | null;
  body: Buffer | null;
  expires_at: number;
}

interface Statements {
  get: BetterSqlite3.Statement<[string], Row>;
  put: BetterSqlite3.Statement<[string, string, string, number]>;
  complete: BetterSqlite3.Statement<[number, string, Buffer, number, string, string]>;
  abandon: BetterSqlite3.Statement<[string, string]>;
  purge: BetterSqlite3.Statement<[number, number]>;
  begin: (key: string, fingerprint: string, token: string, now: number, leaseMs: number) => BeginResult;
}

/**
 * Keys in a SQLite file: for one host, shared by the processes on it. better-sqlite3 is an optional peer
 * dependency, loaded only when a path is given; pass your own Database to share its connection.
 */
export class SqliteIdempotencyStore implements IdempotencyStore {
  private readonly clock: Clock;
  private readonly table: string;
  private readonly ownsDatabase: boolean;
  private db: BetterSqlite3.Database | undefined;
  private statements: Statements | undefined;
  private opening: Promise<Statements> | undefined;
  private begins = 0;

  constructor(private readonly options: SqliteIdempotencyStoreOptions) {
    this.clock = options.clock ?? systemClock;
    this.table = options.table ?? 'plinth_idempotency';
    quoteTableName(this.table);
    this.ownsDatabase = typeof options.database === 'string';
    if (typeof options.database !== 'string') this.statements = this.prepare(options.database);
  }

  async begin(key: string, fingerprint: string, leaseMs: number): Promise<BeginResult> {
    const s = this.statements ?? (await this.open());
    const now = this.clock.now();
    const r = s.begin(key, fingerprint, randomUUID(), now, leaseMs);
    if (++this.begins % PURGE_EVERY === 0) s.purge.run(now, PURGE_BATCH);
    return r;
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<void> {
    const s = this.statements ?? (await this.open());
    s.complete.run(response.status, JSON.stringify(response.headers), response.body, this.clock.now() + ttlMs, key, token);
  }

  async abandon(key: string, token: string): Promise<void> {
    const s = this.statements ?? (await this.open());
    s.abandon.run(key, token);
  }

  /** Deletes up to `limit` expired rows; runs by itself every 1000 begins, callable from a maintenance job. */
  async purgeExpired(limit = PURGE_BATCH): Promise<number> {
    const s = this.statements ?? (await this.open());
    return s.purge.run(this.clock.now(), limit).changes;
  }

  async close(): Promise<void> {
    if (this.opening) await this.opening.catch(() => undefined);
    if (this.ownsDatabase) this.db?.close();
    this.statements = undefined;
  }

  private open(): Promise<Statements> {
    this.opening ??= (async () => {
      const { default: Database } = await import('better-sqlite3');
      const db = new Database(this.options.database as string);
      db.pragma('journal_mode = WAL');
      return this.prepare(db);
    })();
    this.opening.catch(() => (this.opening = undefined));
    return this.opening;
  }

  private prepare(db: BetterSqlite3.Database): Statements {
    const t = quoteTableName(this.table);
    db.exec(`CREATE TABLE IF NOT EXISTS ${t} (
      key TEXT PRIMARY KEY,
      fingerprint TEXT NOT NULL,
      token TEXT,
      status INTEGER,
      headers TEXT,
      body BLOB,
      expires_at INTEGER NOT NULL
    )`);
    db.exec(`CREATE INDEX IF NOT EXISTS ${indexName(this.table, 'expires_at')} ON ${t} (expires_at)`);
    const get = db.prepare<[string], Row>(`SELECT fingerprint, token, status, headers, body, expires_at FROM ${t} WHERE key = ?`);
    const put = db.prepare<[string, string, string, number]>(
      `INSERT OR REPLACE INTO ${t} (key, fingerprint, token, status, headers, body, expires_at) VALUES (?, ?, ?, NULL, NULL, NULL, ?)`,
    );
    const claim = (key: string, fingerprint: string, token: string, now: number, leaseMs: number): BeginResult => {
      const row = get.get(key);
      if (row !== undefined && row.expires_at > now) {
        if (row.fingerprint !== fingerprint) return { kind: 'mismatch' };
        if (row.token !== null) return { kind: 'inFlight' };
        return { kind: 'replay', response: { status: row.status!, headers: JSON.parse(row.headers!) as StoredResponse['headers'], body: row.body! } };
      }
      put.run(key, fingerprint, token, now + leaseMs);
      return { kind: 'execute', token };
    };
    // IMMEDIATE takes the write lock before the read, so two processes cannot both see the key free.
    const begin = db.transaction(claim);
    this.db = db;
    this.statements = {
      get,
      put,
      complete: db.prepare(`UPDATE ${t} SET token = NULL, status = ?, headers = ?, body = ?, expires_at = ? WHERE key = ? AND token = ?`),
      abandon: db.prepare(`DELETE FROM ${t} WHERE key = ? AND token = ?`),
      purge: db.prepare(`DELETE FROM ${t} WHERE rowid IN (SELECT rowid FROM ${t} WHERE expires_at <= ? LIMIT ?)`),
      begin: (...args) => begin.immediate(...args),
    };
    return this.statements;
  }
}
