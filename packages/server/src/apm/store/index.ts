import { join } from 'node:path';
import type { SpanStore } from '../types.js';
import type { StoreErrorHandler } from './common.js';
import { DEFAULT_APM_SCHEMA, PostgresSpanStore } from './postgres.js';
import { SqliteSpanStore } from './sqlite.js';

export type { StoreErrorHandler } from './common.js';
export { BOUNDS as LATENCY_BUCKET_BOUNDS_MS } from './histogram.js';
export { DEFAULT_APM_SCHEMA, PostgresSpanStore, type PostgresSpanStoreOptions } from './postgres.js';
export { SqliteSpanStore, type SqliteSpanStoreOptions } from './sqlite.js';

export const APM_DB_FILE = 'apm.db';

export interface OpenSpanStoreOptions {
  /** Where the store reports failures it survives (PostgreSQL: idle connections lost; SQLite: its checkpoint thread lost). */
  onError?: StoreErrorHandler | undefined;
}

/**
 * The span store for a `--store` value, beside the resource store it names: `sqlite` (or nothing) for
 * `DATA_DIR/apm.db`, or a PostgreSQL URL. Its schema: `?apmSchema=` when given, else the resource schema
 * (`?schema=`) with `_apm` appended, else `plinth_apm` — so one URL serves both stores without their tables
 * meeting. Nothing is opened until `init()`.
 */
export function openSpanStore(spec: string | undefined, dataDir: string, options: OpenSpanStoreOptions = {}): SpanStore {
  if (spec === undefined || spec === 'sqlite') return new SqliteSpanStore(join(dataDir, APM_DB_FILE), { onError: options.onError });
  if (/^postgres(ql)?:\/\//i.test(spec)) {
    let url: URL;
    try {
      url = new URL(spec);
    } catch {
      throw new Error('the store URL is not a valid postgres:// URL');
    }
    const resourceSchema = url.searchParams.get('schema');
    const schema = url.searchParams.get('apmSchema') ?? (resourceSchema ? `${resourceSchema}_apm` : DEFAULT_APM_SCHEMA);
    url.searchParams.delete('schema');
    url.searchParams.delete('apmSchema');
    return new PostgresSpanStore({ url: url.toString(), schema, onError: options.onError });
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1];
  throw new Error(
    `unsupported span store ${scheme ? `URL scheme "${scheme}:"` : JSON.stringify(spec)}: use "sqlite" or a postgres:// (postgresql://) URL`,
  );
}
