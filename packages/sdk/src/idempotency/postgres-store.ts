import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import { indexName, PURGE_BATCH, PURGE_EVERY, quoteTableName } from './sql.js';
import type { BeginResult, IdempotencyStore, StoredResponse } from './types.js';

export interface PostgresIdempotencyStoreOptions {
  /** Your pg Pool (anything with pg's `query`); the store never ends it. */
  pool: Pick<Pool, 'query'>;
  /** `table` or `schema.table`, created if missing. Default `plinth_idempotency`. */
  table?: string;
}

interface Row {
  fingerprint: string;
  token: string | null;
  status: number | null;
  headers: StoredResponse['headers'] | null;
  body: Buffer | null;
}

/** Rounds of claim-then-read before giving up on a key that keeps changing hands under us. */
const BEGIN_ATTEMPTS = 5;

/**
 * Keys in PostgreSQL, shared by every instance. Expiry uses the database's clock, so instances whose clocks
 * disagree still agree on when a lease lapsed. pg is an optional peer dependency: only its types are used.
 */
export class PostgresIdempotencyStore implements IdempotencyStore {
  private readonly pool: Pick<Pool, 'query'>;
  private readonly table: string;
  private readonly sql: { claim: string; read: string; complete: string; abandon: string; purge: string };
  private ready: Promise<void> | undefined;
  private begins = 0;

  constructor(options: PostgresIdempotencyStoreOptions) {
    this.pool = options.pool;
    this.table = options.table ?? 'plinth_idempotency';
    const t = quoteTableName(this.table);
    const expiry = (p: string) => `clock_timestamp() + ${p}::double precision * interval '1 millisecond'`;
    this.sql = {
      // One statement decides: a fresh key inserts, an expired one is taken over, a live one returns no row.
      // ON CONFLICT locks the row, so of N racing claims exactly one sees it free.
      claim: `INSERT INTO ${t} AS x (key, fingerprint, token, expires_at) VALUES ($1, $2, $3, ${expiry('$4')})
        ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token,
          status = NULL, headers = NULL, body = NULL, expires_at = EXCLUDED.expires_at
        WHERE x.expires_at <= clock_timestamp()
        RETURNING 1`,
      read: `SELECT fingerprint, token, status, headers, body FROM ${t} WHERE key = $1 AND expires_at > clock_timestamp()`,
      complete: `UPDATE ${t} SET token = NULL, status = $3, headers = $4, body = $5, expires_at = ${expiry('$6')} WHERE key = $1 AND token = $2`,
      abandon: `DELETE FROM ${t} WHERE key = $1 AND token = $2`,
      purge: `DELETE FROM ${t} WHERE key IN (SELECT key FROM ${t} WHERE expires_at <= clock_timestamp() LIMIT $1)`,
    };
  }

  /** Creates the table if missing; runs by itself before the first call, callable at startup to fail early. */
  init(): Promise<void> {
    this.ready ??= (async () => {
      const t = quoteTableName(this.table);
      await this.pool.query(`CREATE TABLE IF NOT EXISTS ${t} (
        key text PRIMARY KEY,
        fingerprint text NOT NULL,
        token text,
        status integer,
        headers jsonb,
        body bytea,
        expires_at timestamptz NOT NULL
      )`);
      await this.pool.query(`CREATE INDEX IF NOT EXISTS ${indexName(this.table, 'expires_at')} ON ${t} (expires_at)`);
    })().catch((err: unknown) => {
      // Instances starting together race on IF NOT EXISTS (it checks the catalog without a lock): losing is fine.
      const code = (err as { code?: unknown }).code;
      if (code !== '23505' && code !== '42P07') throw err;
    });
    this.ready.catch(() => (this.ready = undefined));
    return this.ready;
  }

  async begin(key: string, fingerprint: string, leaseMs: number): Promise<BeginResult> {
    await (this.ready ?? this.init());
    if (++this.begins % PURGE_EVERY === 0) void this.purgeExpired().catch(() => undefined);
    for (let i = 0; i < BEGIN_ATTEMPTS; i++) {
      const token = randomUUID();
      const claimed = await this.pool.query(this.sql.claim, [key, fingerprint, token, leaseMs]);
      if (claimed.rowCount === 1) return { kind: 'execute', token };
      const { rows } = await this.pool.query<Row>(this.sql.read, [key]);
      const row = rows[0];
      // Gone between the two statements (abandoned, or expired just now): claim again.
      if (row === undefined) continue;
      if (row.fingerprint !== fingerprint) return { kind: 'mismatch' };
      if (row.token !== null) return { kind: 'inFlight' };
      return { kind: 'replay', response: { status: row.status!, headers: row.headers ?? {}, body: row.body ?? Buffer.alloc(0) } };
    }
    return { kind: 'inFlight' };
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<void> {
    await (this.ready ?? this.init());
    await this.pool.query(this.sql.complete, [key, token, response.status, JSON.stringify(response.headers), response.body, ttlMs]);
  }

  async abandon(key: string, token: string): Promise<void> {
    await (this.ready ?? this.init());
    await this.pool.query(this.sql.abandon, [key, token]);
  }

  /** Deletes up to `limit` expired rows; runs by itself every 1000 begins, callable from a maintenance job. */
  async purgeExpired(limit = PURGE_BATCH): Promise<number> {
    await (this.ready ?? this.init());
    return (await this.pool.query(this.sql.purge, [limit])).rowCount ?? 0;
  }
}
