import { join } from 'node:path';
import { PostgresStore } from './postgres.js';
import { SqliteStore } from './sqlite.js';
import type { StoreErrorHandler } from './common.js';
import type { Store } from './types.js';

export type { StoreErrorHandler } from './common.js';
export { PostgresStore, type PostgresStoreOptions } from './postgres.js';
export { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
export type * from './types.js';

export interface OpenStoreOptions {
  /** Where the store reports failures it survives (lost connections, throwing listeners). */
  onError?: StoreErrorHandler | undefined;
}

/**
 * The store a `--store` value names: `sqlite` (or nothing) for `DATA_DIR/plinth.db`, or a PostgreSQL URL,
 * whose `?schema=` picks the schema (default `plinth`). Nothing is opened until `init()`.
 */
export function openStore(spec: string | undefined, dataDir: string, options: OpenStoreOptions = {}): Store {
  if (spec === undefined || spec === 'sqlite') return new SqliteStore(join(dataDir, 'plinth.db'), options);
  if (/^postgres(ql)?:\/\//i.test(spec)) {
    let url: URL;
    try {
      url = new URL(spec);
    } catch {
      throw new Error('the store URL is not a valid postgres:// URL');
    }
    // `schema` is ours, not a libpq parameter: the server would reject it as an unknown startup option.
    const schema = url.searchParams.get('schema') ?? undefined;
    url.searchParams.delete('schema');
    return new PostgresStore({ url: url.toString(), schema, onError: options.onError });
  }
  // Only the scheme is echoed: the rest of a URL may hold a password.
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1];
  throw new Error(
    `unsupported store ${scheme ? `URL scheme "${scheme}:"` : JSON.stringify(spec)}: use "sqlite" or a postgres:// (postgresql://) URL`,
  );
}
