// Shared by this folder's tests only.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { validateResource } from '@plinth/core';
import { openStore } from '../../store/index.js';
import type { Store } from '../../store/types.js';
import { dropSchema, newSchema, postgresUrl, type Backend } from '../../testing/harness.js';
import { PostgresSpanStore, SqliteSpanStore } from '../store/index.js';
import type { SpanRecord, SpanStore } from '../types.js';
import { AlertResourceCache } from './resources.js';

export const silentLog: Logger = pino({ level: 'silent' });
export const MINUTE = 60_000;
/** A minute boundary, so windows cover whole rollup minutes. */
export const T0 = Date.UTC(2030, 0, 7, 12, 0, 0);

export class TestClock {
  constructor(public t: number) {}
  now = (): number => this.t;
}

/** Span store backends to run against: PostgreSQL skips without PLINTH_TEST_POSTGRES_URL (fails under CI). */
export function spanBackends(): { backend: Backend; skip: string | false }[] {
  return [
    { backend: 'sqlite', skip: false },
    { backend: 'postgres', skip: postgresUrl() ? false : 'PLINTH_TEST_POSTGRES_URL is not set' },
  ];
}

/** A real resource store (SQLite) and a real span store (SQLite file, or a fresh PostgreSQL schema). */
export interface Stores {
  dir: string;
  store: Store;
  spans: SpanStore;
  /** Another connection to the same span data, as a second server holds it. */
  openSpans(): Promise<SpanStore>;
  resources: AlertResourceCache;
  /** Validates (as PUT does) and stores a resource, then refreshes the cache. */
  put(kind: string, namespace: string, name: string, spec: unknown): Promise<void>;
  /** Closes and reopens the span store, as a server restart does. */
  reopenSpans(): Promise<SpanStore>;
  close(): Promise<void>;
}

export async function openStores(backend: Backend = 'sqlite'): Promise<Stores> {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-alerting-'));
  const store = openStore('sqlite', dir);
  await store.init();
  const schema = newSchema();
  const connect = (): SpanStore =>
    backend === 'postgres' ? new PostgresSpanStore({ url: postgresUrl()!, schema }) : new SqliteSpanStore(join(dir, 'apm.db'));
  const opened: SpanStore[] = [];
  const s: Stores = {
    dir,
    store,
    spans: connect(),
    openSpans: async () => {
      const o = connect();
      await o.init();
      opened.push(o);
      return o;
    },
    resources: new AlertResourceCache(silentLog),
    put: async (kind, namespace, name, spec) => {
      const v = validateResource({ apiVersion: 'plinth.dev/v1', kind, metadata: { namespace, name }, spec }, { kind, namespace, name });
      const r = await store.put({ kind, namespace, name, labels: {}, annotations: {}, spec: v.spec });
      s.resources.onChange({ type: r.type === 'ADDED' ? 'ADDED' : 'MODIFIED', revision: r.resource.metadata.revision, resource: r.resource });
    },
    reopenSpans: async () => {
      await s.spans.close();
      s.spans = connect();
      await s.spans.init();
      return s.spans;
    },
    close: async () => {
      for (const o of opened) await o.close();
      await s.spans.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
      if (backend === 'postgres') await dropSchema(schema);
    },
  };
  await s.spans.init();
  return s;
}

const hex = (bytes: number): string => randomBytes(bytes).toString('hex');

/** A server span of `service` (an endpoint call), as ingest would normalize it. */
export function serverSpan(over: Partial<SpanRecord> & { service: string; startMs: number }): SpanRecord {
  const error = over.status === 'error';
  return {
    namespace: 'shop',
    traceId: hex(16),
    spanId: hex(8),
    parentSpanId: undefined,
    version: '1.0.0',
    name: over.endpoint ?? 'POST /checkout',
    kind: 'server',
    durationMs: 20,
    status: 'ok',
    statusMessage: undefined,
    endpoint: 'POST /checkout',
    peer: undefined,
    httpStatus: error ? 500 : 200,
    grpcStatus: undefined,
    lane: undefined,
    stress: false,
    region: undefined,
    caller: undefined,
    attributes: {},
    resource: {},
    events: [],
    ...over,
  };
}

/** A client span: `service` calling `peer`. */
export function clientSpan(over: Partial<SpanRecord> & { service: string; peer: string; startMs: number }): SpanRecord {
  return serverSpan({ kind: 'client', endpoint: undefined, name: `call ${over.peer}`, ...over });
}

/**
 * `perMinute` spans in each minute of [fromMs, toMs), `badPerMinute` of them errors (status error, HTTP 500)
 * or, with `slowMs`, slow instead.
 */
export function traffic(o: {
  service?: string;
  endpoint?: string;
  fromMs: number;
  toMs: number;
  perMinute: number;
  badPerMinute?: number;
  stress?: boolean;
  durationMs?: number;
}): SpanRecord[] {
  const out: SpanRecord[] = [];
  for (let m = o.fromMs; m < o.toMs; m += MINUTE) {
    for (let i = 0; i < o.perMinute; i++) {
      const bad = i < (o.badPerMinute ?? 0);
      out.push(
        serverSpan({
          service: o.service ?? 'checkout',
          endpoint: o.endpoint ?? 'POST /checkout',
          startMs: m + 1000 + i * 100,
          status: bad ? 'error' : 'ok',
          httpStatus: bad ? 500 : 200,
          stress: o.stress ?? false,
          durationMs: o.durationMs ?? 20,
        }),
      );
    }
  }
  return out;
}

export interface Received {
  headers: IncomingHttpHeaders;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON, indexed freely by tests
  body: any;
  raw: string;
}

/** A real HTTP receiver; `answer` picks the status (and headers) of each request in turn. */
export interface Receiver {
  url: string;
  received: Received[];
  answer: (n: number) => { status: number; headers?: Record<string, string> } | 'hang';
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const r: Receiver = { url: '', received: [], answer: () => ({ status: 200 }), close: async () => {} };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      r.received.push({ headers: req.headers, body: JSON.parse(raw), raw });
      const a = r.answer(r.received.length);
      if (a === 'hang') return;
      res.writeHead(a.status, a.headers ?? {});
      res.end();
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  r.close = () =>
    new Promise<void>((ok) => {
      server.closeAllConnections();
      server.close(() => ok());
    });
  return r;
}
