// Shared by this folder's tests only: a control plane with real identity, RBAC and audit (SQLite), serving
// just the OTLP route, the way server.ts wires its routes.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { AuthCache, createRequestHandler } from '../../app.js';
import { Router } from '../../http/router.js';
import { Auditor } from '../../identity/audit.js';
import { IdentityService } from '../../identity/identity-service.js';
import { createMetrics } from '../../metrics.js';
import { Keyring } from '../../secrets/keyring.js';
import { openStore } from '../../store/index.js';
import type { Store } from '../../store/types.js';
import { WatchHub } from '../../watch/hub.js';
import type { SpanRecord } from '../types.js';
import { registerOtlpRoutes, type OtlpIngest, type OtlpIngestDeps } from './ingest.js';
import type { SpanSink } from './queue.js';

const log = pino({ level: 'silent' });

/** The sink is Plinth's own interface; this one keeps spans in memory and can be held or made to fail. */
export class MemorySink implements SpanSink {
  readonly spans: SpanRecord[] = [];
  readonly calls: number[] = [];
  fail: Error | undefined;
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;

  /** Until `release`, inserts wait (a slow store). */
  hold(): void {
    this.gate = new Promise((r) => (this.open = r));
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }

  async insert(spans: readonly SpanRecord[]): Promise<void> {
    this.calls.push(spans.length);
    if (this.gate) await this.gate;
    if (this.fail) throw this.fail;
    this.spans.push(...spans);
  }
}

export interface OtlpTestServer {
  url: string;
  /** Bearer credential of ServiceAccount retail/collector: may create Span in `retail` and `shop` only. */
  token: string;
  /** Bearer credential of ServiceAccount retail/viewer: may create nothing. */
  viewerToken: string;
  otlp: OtlpIngest;
  store: Store;
  close(): Promise<void>;
}

export async function startOtlpTestServer(sink: SpanSink, options: Partial<Omit<OtlpIngestDeps, 'identity' | 'audit' | 'sink'>> = {}): Promise<OtlpTestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-otlp-'));
  const store = openStore('sqlite', dir);
  await store.init();
  const hub = new WatchHub(store, log, 60_000);
  await hub.start();
  const identity = await IdentityService.start({
    store,
    keyring: Keyring.fromEnv(randomBytes(32).toString('base64')),
    issuer: 'plinth',
    tokenTtlSeconds: 900,
    log,
    changes: hub,
  });
  const put = (kind: string, namespace: string, name: string, spec: unknown) => store.put({ kind, namespace, name, labels: {}, annotations: {}, spec });
  await put('ServiceAccount', 'retail', 'collector', {});
  await put('ServiceAccount', 'retail', 'viewer', {});
  await put('Role', 'retail', 'span-writer', { rules: [{ verbs: ['create'], kinds: ['Span'], namespaces: ['retail', 'shop'] }] });
  await put('RoleBinding', 'retail', 'collector-writes', { role: 'span-writer', subjects: [{ kind: 'ServiceAccount', namespace: 'retail', name: 'collector' }] });
  await hub.caughtUp(await store.currentRevision());
  const token = (await identity.issueCredential('retail', 'collector')).token;
  const viewerToken = (await identity.issueCredential('retail', 'viewer')).token;

  const router = new Router();
  const otlp = registerOtlpRoutes(router, { identity, audit: new Auditor(store, log), sink, log, ...options });
  const server: Server = createServer(createRequestHandler({ router, identity, authCache: new AuthCache(), metrics: createMetrics(), log }));
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    viewerToken,
    otlp,
    store,
    close: async () => {
      await new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      });
      await otlp.close();
      await hub.stop();
      await identity.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A span in OTLP/JSON, as the spec's examples write them. */
export function jsonSpan(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    traceId: '5B8EFFF798038103D269B633813FC60C',
    spanId: 'EEE19B7EC3C1B174',
    parentSpanId: 'EEE19B7EC3C1B173',
    name: "I'm a server span",
    startTimeUnixNano: '1544712660000000000',
    endTimeUnixNano: '1544712661000000000',
    kind: 2,
    attributes: [{ key: 'my.span.attr', value: { stringValue: 'some value' } }],
    ...over,
  };
}

export function jsonRequest(resource: Record<string, string>, spans: Record<string, unknown>[]): Record<string, unknown> {
  return {
    resourceSpans: [
      {
        resource: { attributes: Object.entries(resource).map(([key, v]) => ({ key, value: { stringValue: v } })) },
        scopeSpans: [{ scope: { name: 'my.library', version: '1.0.0' }, spans }],
      },
    ],
  };
}
