import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startServer, type RunningServer, type ServerOptions } from '../server.js';

export type Backend = 'sqlite' | 'postgres';

/**
 * PostgreSQL for tests comes from PLINTH_TEST_POSTGRES_URL. Without it the PostgreSQL cases skip with a
 * reason — except under CI, where a missing database is a failure, never a silent skip.
 */
export function postgresUrl(): string | undefined {
  const url = process.env.PLINTH_TEST_POSTGRES_URL;
  if (!url && process.env.CI === 'true') throw new Error('CI=true but PLINTH_TEST_POSTGRES_URL is not set: PostgreSQL tests cannot run');
  return url;
}

export function backends(): { backend: Backend; skip: string | false }[] {
  const url = postgresUrl();
  return [
    { backend: 'sqlite', skip: false },
    { backend: 'postgres', skip: url ? false : 'PLINTH_TEST_POSTGRES_URL is not set' },
  ];
}

export interface TestServer extends RunningServer {
  token: string;
  dataDir: string;
  /** fetch with the admin token, JSON in and out. */
  api(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; headers: Headers; body: any }>;
  /** Stops the server; `restart` starts a new one on the same data dir, store and port. */
  restart(): Promise<TestServer>;
  destroy(): Promise<void>;
}

export async function dropSchema(schema: string): Promise<void> {
  const url = postgresUrl();
  if (!url) return;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    // The span store lives beside the resource store, in `<schema>_apm`.
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await c.query(`DROP SCHEMA IF EXISTS "${schema}_apm" CASCADE`);
  } finally {
    await c.end();
  }
}

export function newSchema(): string {
  return `t_${randomBytes(6).toString('hex')}`;
}

export async function startTestServer(
  backend: Backend,
  options: Partial<ServerOptions> & { schema?: string; keepData?: boolean } = {},
): Promise<TestServer> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'plinth-test-'));
  const schema = options.schema ?? newSchema();
  const store = backend === 'postgres' ? `${postgresUrl()}?schema=${schema}` : 'sqlite';
  const opts: ServerOptions = { listen: '127.0.0.1:0', logLevel: 'silent', heartbeatMs: 200, leaseSweepMs: 100, ...options, dataDir, store };
  const running = await startServer(opts);
  const tokenFile = running.adminTokenFile ?? join(dataDir, 'admin.token');
  const token = readFileSync(tokenFile, 'utf8').trim();
  const api: TestServer['api'] = async (method, path, body, headers = {}) => {
    const init: RequestInit = { method, headers: { authorization: `Bearer ${token}`, ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    let res: Response;
    try {
      res = await fetch(running.url + path, init);
    } catch {
      // A pooled keep-alive socket to a server instance that was just restarted on this port.
      res = await fetch(running.url + path, init);
    }
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON; keep the text
    }
    return { status: res.status, headers: res.headers, body: parsed };
  };
  const self: TestServer = {
    ...running,
    token,
    dataDir,
    api,
    restart: async () => {
      await running.close();
      return startTestServer(backend, { ...options, dataDir, schema, listen: `127.0.0.1:${running.port}` });
    },
    destroy: async () => {
      await running.close();
      if (!options.keepData) rmSync(dataDir, { recursive: true, force: true });
      if (backend === 'postgres') await dropSchema(schema);
    },
  };
  return self;
}

export function resource(kind: string, namespace: string, name: string, spec: unknown, labels: Record<string, string> = {}) {
  return { apiVersion: 'plinth.dev/v1', kind, metadata: { namespace, name, labels }, spec };
}
