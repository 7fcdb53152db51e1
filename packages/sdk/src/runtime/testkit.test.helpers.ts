/** Shared by the runtime's tests: a watcher of Instances, plain HTTP probes, and a child process running a service. */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { WatchEvent } from '@plinth/core';
import { request } from 'undici';
import { createControlPlaneClient, type ControlPlaneClient } from '../control-plane-client.js';
import { recordChanges, recordingLogger, until, type TestControlPlane } from '../testing/control-plane.js';
import { createService, type Service, type ServiceOptions } from './service.js';

export const NS = 'retail';
export const FAST_BACKOFF = { initialMs: 20, maxMs: 200 } as const;

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A control-plane client holding the namespace's Instances, with every change it saw. */
export async function watchInstances(cp: TestControlPlane): Promise<{ client: ControlPlaneClient; seen: WatchEvent[]; close(): Promise<void> }> {
  const client = createControlPlaneClient({ url: cp.url, token: cp.token, kinds: ['Instance'], namespace: NS, backoff: FAST_BACKOFF, logger: recordingLogger() });
  const seen = recordChanges(client);
  await client.ready;
  return { client, seen, close: () => client.close() };
}

export function eventsOf(seen: WatchEvent[], name: string): { type: string; draining: boolean }[] {
  return seen
    .filter((e) => e.resource.metadata.name === name)
    .map((e) => ({ type: e.type, draining: (e.resource.spec as { draining?: boolean }).draining === true }));
}

export async function get(port: number, path: string): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  const res = await request(`http://127.0.0.1:${port}${path}`);
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

/** True when a new TCP connection to the port is refused. */
export function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

export async function untilAsync(cond: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A service against `cp` with quick retries, no signal handlers (the test runner owns the process) and a quiet logger. */
export function serviceOn(cp: TestControlPlane, o: Partial<ServiceOptions> = {}): Service & { logger: ReturnType<typeof recordingLogger> } {
  const logger = recordingLogger();
  const s = createService({
    name: 'orders',
    version: '1.4.2',
    namespace: NS,
    controlPlane: { url: cp.url, token: cp.token },
    handleSignals: false,
    backoff: FAST_BACKOFF,
    deregisterDelayMs: 50,
    logger,
    ...o,
  });
  return Object.assign(s, { logger });
}

export interface ChildLine {
  event: string;
  port?: number;
  instanceId?: string;
}

export interface Child {
  proc: ChildProcess;
  lines: ChildLine[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitFor(event: string): Promise<Required<ChildLine>>;
}

/** Runs service-child.test.helpers.js: a process using createService with its signal handling. */
export function spawnChild(env: Record<string, string>): Child {
  const script = new URL('./service-child.test.helpers.js', import.meta.url);
  const proc = spawn(process.execPath, [script.pathname], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: ChildLine[] = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => lines.push(JSON.parse(l) as ChildLine));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  return {
    proc,
    lines,
    exited,
    waitFor: async (event) => {
      await until(() => lines.some((l) => l.event === event) || proc.exitCode !== null, `child event ${event}`);
      const line = lines.find((l) => l.event === event);
      if (!line) throw new Error(`the child exited (${proc.exitCode}) before '${event}'`);
      return line as Required<ChildLine>;
    },
  };
}

/** Everything a raw socket receives until the other side closes it. */
export function readUntilClose(s: Socket): Promise<string> {
  return new Promise<string>((resolve) => {
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.once('close', () => resolve(text));
  });
}
