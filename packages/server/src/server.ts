export interface ServerOptions {
  /** Data directory (created when missing): SQLite file, secret keys, admin token. */
  dataDir: string;
  /** host:port; port 0 picks a free one. Default 127.0.0.1:7070. */
  listen?: string;
  /** 'sqlite' (default: DATA/plinth.db) or a postgres:// URL. */
  store?: string;
  /** Value in the PLINTH_SECRET_KEYS format; default: the key file DATA/secret.keys (created on first start). */
  secretKeys?: string;
  /** Path of the secret key file, when not DATA/secret.keys. */
  secretKeyFile?: string;
  /** Token issuer (JWT iss). Default 'plinth'. */
  issuer?: string;
  /** Lifetime of issued JWTs. Default 900. */
  tokenTtlSeconds?: number;
  /** Watch heartbeat period. Default 15000. */
  heartbeatMs?: number;
  /** How many revisions of change log to keep before compacting. Default 100000. */
  retainRevisions?: number;
  /** pino level, or 'silent'. Default 'info'. */
  logLevel?: string;
}

export interface RunningServer {
  url: string;
  port: number;
  /** Set when this start created the admin credential. */
  adminTokenFile: string | undefined;
  close(): Promise<void>;
}

export async function startServer(_options: ServerOptions): Promise<RunningServer> {
  throw new Error('not yet');
}
