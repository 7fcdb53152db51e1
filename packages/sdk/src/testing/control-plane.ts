/**
 * Test harness: a REAL plinth server, loaded from the server package's build output by path. The SDK must
 * not depend on @plinth/server (a service would pull the whole control plane in), so the import is computed
 * at run time and typed here by the little the tests use. Tests only; never imported by the SDK itself.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Resource, WatchEvent } from '@plinth/core';
import type { ControlPlaneClient, ControlPlaneEvents } from '../control-plane-client.js';
import type { Logger } from '../logger.js';

interface RunningServer {
  url: string;
  port: number;
  adminTokenFile: string | undefined;
  close(): Promise<void>;
}

interface ServerModule {
  startServer(options: Record<string, unknown>): Promise<RunningServer>;
}

/** packages/sdk/dist/testing/ → packages/server/dist/index.js */
const SERVER_MODULE = new URL('../../../server/dist/index.js', import.meta.url).href;

export interface ServerOptions {
  retainRevisions?: number;
  tokenTtlSeconds?: number;
  heartbeatMs?: number;
}

export class TestControlPlane {
  private running: RunningServer | undefined;
  readonly dataDir = mkdtempSync(join(tmpdir(), 'plinth-sdk-test-'));
  token = '';
  url = '';
  port = 0;

  constructor(private readonly options: ServerOptions = {}) {}

  static async start(options: ServerOptions = {}): Promise<TestControlPlane> {
    const cp = new TestControlPlane(options);
    await cp.start();
    return cp;
  }

  /** Starts (again) on the same data dir and, after the first start, the same port. */
  async start(): Promise<void> {
    const mod = (await import(SERVER_MODULE)) as ServerModule;
    this.running = await mod.startServer({
      dataDir: this.dataDir,
      listen: `127.0.0.1:${this.port}`,
      logLevel: 'silent',
      heartbeatMs: this.options.heartbeatMs ?? 200,
      ...(this.options.retainRevisions !== undefined ? { retainRevisions: this.options.retainRevisions } : {}),
      ...(this.options.tokenTtlSeconds !== undefined ? { tokenTtlSeconds: this.options.tokenTtlSeconds } : {}),
    });
    this.url = this.running.url;
    this.port = this.running.port;
    // Only the first start creates the admin credential; later starts find it in the data dir.
    this.token = readFileSync(this.running.adminTokenFile ?? join(this.dataDir, 'admin.token'), 'utf8').trim();
  }

  async stop(): Promise<void> {
    const r = this.running;
    this.running = undefined;
    await r?.close();
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  async api(method: string, path: string, body?: unknown): Promise<any> {
    const res = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  }

  putConfig(namespace: string, name: string, content: string, labels: Record<string, string> = {}): Promise<Resource> {
    return this.api('PUT', `/v1/resources/Config/${namespace}/${name}`, { metadata: { labels }, spec: { format: 'text', content } });
  }

  delete(kind: string, namespace: string, name: string): Promise<Resource> {
    return this.api('DELETE', `/v1/resources/${kind}/${namespace}/${name}`);
  }

  async list(kind: string, namespace: string): Promise<{ revision: number; items: Resource[] }> {
    return this.api('GET', `/v1/resources/${kind}?namespace=${namespace}&limit=1000`);
  }
}

/** Resolves with the first event that passes `match`; rejects after `timeoutMs` (a test must not hang). */
export function nextEvent<K extends keyof ControlPlaneEvents>(
  client: ControlPlaneClient,
  event: K,
  match: (...args: ControlPlaneEvents[K]) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<ControlPlaneEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${String(event)}' event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = client.on(event, (...args) => {
      if (!match(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}

/** Waits until `cond()` holds, polling; rejects after `timeoutMs`. */
export async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** True if `p` is still pending after `ms`. */
export async function stillPending(p: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((r) => setTimeout(r, ms));
  return !settled;
}

/** A logger that keeps what it is told, for asserting on warnings. */
export function recordingLogger(): Logger & { warnings: string[]; debugs: string[] } {
  const warnings: string[] = [];
  const debugs: string[] = [];
  return {
    warnings,
    debugs,
    warn: (m) => void warnings.push(m),
    debug: (m) => void debugs.push(m),
  };
}

/** Collects every change event, for checking order and completeness. */
export function recordChanges(client: ControlPlaneClient): WatchEvent[] {
  const seen: WatchEvent[] = [];
  client.on('change', (ev) => seen.push(ev));
  return seen;
}
