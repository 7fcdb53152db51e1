// Helpers for this folder's tests (excluded from the package by the `*.test.*` pattern, not run as a test).
import { API_VERSION, FaultToleranceSpec, TrafficPolicySpec, type Resource } from '@plinth/core';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { InstanceLike } from '../balancing/endpoints.js';
import { StaticGovernance } from '../governance/source.js';
import { TimerWheel, type TimerWheelOptions } from '../resilience/timer-wheel.js';

export interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

/** A real HTTP upstream on loopback that records what it receives. */
export class Upstream {
  readonly received: Received[] = [];
  private constructor(
    private readonly server: Server,
    readonly port: number,
    public handler: Handler,
  ) {}

  static async start(handler: Handler = (_q, s) => s.end('ok')): Promise<Upstream> {
    const holder: { u?: Upstream } = {};
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const u = holder.u as Upstream;
        u.received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
        u.handler(req, res, u.received.length);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    holder.u = new Upstream(server, (server.address() as AddressInfo).port, handler);
    return holder.u;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get count(): number {
    return this.received.length;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export const status =
  (code: number, headers: Record<string, string> = {}): Handler =>
  (_q, s) => {
    s.writeHead(code, headers);
    s.end(String(code));
  };

export function resource<S>(kind: string, name: string, spec: S): Resource<S> {
  return {
    apiVersion: API_VERSION,
    kind,
    metadata: { namespace: 'app', name, labels: {}, annotations: {}, revision: 1, createRevision: 1, createdAt: '', updatedAt: '' },
    spec,
  };
}

/** Specs go through the schemas, so defaults are filled in as the control plane would. */
export const ft = (name: string, spec: unknown) => resource('FaultTolerance', name, FaultToleranceSpec.parse(spec));
export const tp = (name: string, spec: unknown) => resource('TrafficPolicy', name, TrafficPolicySpec.parse(spec));

export function instance(name: string, up: Upstream, extra: Partial<InstanceLike> = {}) {
  return { metadata: { name }, spec: { service: 'orders', version: '1.0.0', address: up.address, ...extra } };
}

export function governance(state: Parameters<StaticGovernance['set']>[0]): StaticGovernance {
  const g = new StaticGovernance();
  g.set(state);
  return g;
}

/** A wheel whose sleeps resolve at once and are recorded; its own timer never fires. */
export class RecordingWheel extends TimerWheel {
  readonly delays: number[] = [];
  constructor(opts: TimerWheelOptions = {}) {
    super({ schedule: () => ({}), ...opts });
  }
  override delay(ms: number): Promise<void> {
    this.delays.push(ms);
    return Promise.resolve();
  }
}

export async function until(cond: () => boolean, what: string, tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}
