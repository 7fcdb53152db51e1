import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { FaultToleranceSpec, type Resource } from '@plinth/core';
import { StaticGovernance } from '@plinth/sdk';
import type { OtlpSpan, OtlpTracesRequest, Tracing } from '@plinth/sdk/tracing';
import { Agent, request } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { StaticFeed } from './feed.js';
import { startGateway, type Gateway, type GatewayOptions } from './gateway.js';

export interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface Upstream {
  readonly url: string;
  readonly address: string;
  readonly seen: Seen[];
  readonly server: Server;
  close(): Promise<void>;
}

/** A real node:http upstream recording what it was sent; the handler answers (default: 200 with a JSON echo). */
export async function upstream(name: string, handler?: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<Upstream> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (handler) return handler(req, res, body);
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name });
      res.end(JSON.stringify({ name, url: req.url, method: req.method }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    seen,
    server,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export function instance(id: string, service: string, address: string, extra: { lane?: string; version?: string; metadata?: Record<string, string> } = {}) {
  return {
    metadata: { name: id },
    spec: { service, version: extra.version ?? '1.0.0', address, ...(extra.lane ? { lane: extra.lane } : {}), ...(extra.metadata ? { metadata: extra.metadata } : {}) },
  };
}

export function resource<S>(kind: string, name: string, spec: S, namespace = 'edge'): Resource<S> {
  return {
    apiVersion: 'plinth.dev/v1',
    kind,
    metadata: { namespace, name, labels: {}, annotations: {}, revision: 1, createRevision: 1, createdAt: '', updatedAt: '' },
    spec,
  } as unknown as Resource<S>;
}

export const route = (name: string, spec: Record<string, unknown>) => resource('Route', name, spec);

/** A gateway on static sources, with every line of its access log kept. */
export async function staticGateway(extra: Partial<GatewayOptions> = {}): Promise<{ gw: Gateway; governance: StaticGovernance; routes: StaticFeed; log: Record<string, unknown>[] }> {
  const governance = new StaticGovernance();
  const routes = new StaticFeed();
  const log: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') log.push(JSON.parse(line));
      cb();
    },
  });
  const gw = await startGateway({
    namespace: 'edge',
    governance,
    routes,
    listen: '127.0.0.1:0',
    adminListen: '127.0.0.1:0',
    accessLog: { destination: sink },
    ...extra,
  });
  return { gw, governance, routes, log };
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json(): Record<string, unknown>;
}

export async function call(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Answer> {
  const r = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers ?? {}, body: opts.body ?? null });
  const text = await r.body.text();
  return { status: r.statusCode, headers: r.headers, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

/** Writes raw bytes on a fresh connection and returns everything the gateway sent back before closing. */
export function raw(url: string, data: string | Buffer, waitMs = 2000): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve(Buffer.concat(chunks).toString());
    }, waitMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString());
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      if (chunks.length > 0) resolve(Buffer.concat(chunks).toString());
      else reject(e);
    });
    s.write(data);
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it holds, failing with `what` after `ms`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export interface Got {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** One HTTPS request on a fresh connection trusting `serverCa`, presenting `client` (or no certificate). */
export async function tlsGet(url: string, serverCa: string, client?: { pem: string; keyPem: string }, headers: Record<string, string> = {}): Promise<Got> {
  const agent = new Agent({ connect: { ca: serverCa, ...(client ? { cert: client.pem, key: client.keyPem } : {}) } });
  try {
    const r = await request(url, { dispatcher: agent, headers });
    return { status: r.statusCode, headers: r.headers, text: await r.body.text() };
  } finally {
    await agent.close();
  }
}

/** An app's outbound call (through a sidecar's egress, say) answered back as the app's own answer: status and text; 599 when it failed. */
export function relay(res: ServerResponse, target: string, headers: Record<string, string>): void {
  request(target, { headers }).then(
    async (r) => {
      const text = await r.body.text();
      res.writeHead(r.statusCode, { 'content-type': 'text/plain' });
      res.end(text);
    },
    (e: Error) => {
      res.writeHead(599);
      res.end(e.message);
    },
  );
}

export interface CertPair {
  cert: string;
  key: string;
  pem: string;
  fingerprint: string;
}

/** A throwaway self-signed certificate for localhost and 127.0.0.1 (P-256, one day), written to `dir/name.{crt,key}`. */
export async function selfSigned(dir: string, name: string): Promise<CertPair> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert]);
  const pem = await readFile(cert, 'utf8');
  return { cert, key, pem, fingerprint: new X509Certificate(pem).fingerprint256 };
}

function openssl(args: string[]): Promise<void> {
  return new Promise<void>((resolve, reject) => execFile('openssl', args, (err, _out, stderr) => (err ? reject(new Error(`openssl: ${stderr}`)) : resolve())));
}

export interface Ca {
  cert: string;
  key: string;
  pem: string;
}

/** A throwaway certificate authority (P-256, one day), written to `dir/name.{crt,key}`. */
export async function certAuthority(dir: string, name: string): Promise<Ca> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${name} CA`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-days', '1', '-keyout', key, '-out', cert]);
  return { cert, key, pem: await readFile(cert, 'utf8') };
}

export interface ClientCertFiles extends CertPair {
  keyPem: string;
  /** sha256 of the DER, lower-case hex: the `Hash` of x-forwarded-client-cert. */
  hash: string;
}

/**
 * A client certificate signed by `ca` (clientAuth), with these URI SANs (e.g. a SPIFFE ID) and subject;
 * `expired` makes one whose notAfter has passed. `server` makes a mesh workload's certificate, good for
 * both ends (serverAuth and clientAuth), naming `dns` and `ips` beside the URIs.
 */
export async function clientCertificate(
  dir: string,
  name: string,
  ca: Ca,
  o: { uris?: string[]; subject?: string; expired?: boolean; server?: boolean; dns?: string[]; ips?: string[] } = {},
): Promise<ClientCertFiles> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', o.subject ?? `/CN=${name}`, '-keyout', key, '-out', csr]);
  const lines = [o.server ? 'extendedKeyUsage=serverAuth,clientAuth' : 'extendedKeyUsage=clientAuth', 'basicConstraints=CA:FALSE'];
  const sans = [...(o.uris ?? []).map((u) => `URI:${u}`), ...(o.dns ?? []).map((d) => `DNS:${d}`), ...(o.ips ?? []).map((i) => `IP:${i}`)];
  if (sans.length > 0) lines.push(`subjectAltName=${sans.join(',')}`);
  await writeFile(ext, lines.join('\n') + '\n');
  // -days -1: notAfter a day before notBefore (now), so the certificate has expired.
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', String(Date.now() * 1000 + Math.floor(Math.random() * 1000)), '-days', o.expired ? '-1' : '1', '-extfile', ext, '-out', cert]);
  const pem = await readFile(cert, 'utf8');
  const x = new X509Certificate(pem);
  return { cert, key, pem, keyPem: await readFile(key, 'utf8'), fingerprint: x.fingerprint256, hash: x.fingerprint256.replace(/:/g, '').toLowerCase() };
}

// ---- WebSockets: `ws` servers as upstreams and `ws` clients ----

export interface WsUpstream {
  readonly address: string;
  readonly handshakes: { url: string; headers: IncomingHttpHeaders }[];
  readonly server: Server;
  close(): Promise<void>;
}

/** A WebSocket echo server that prefixes every answer with its name; `decline` answers the upgrade with 403 instead. */
export async function wsUpstream(name: string, decline = false): Promise<WsUpstream> {
  const handshakes: { url: string; headers: IncomingHttpHeaders }[] = [];
  const server = createServer((_req, res) => res.end('not a websocket'));
  const wss = new WebSocketServer({
    server,
    verifyClient: (info, done) => {
      handshakes.push({ url: info.req.url ?? '', headers: info.req.headers });
      if (decline) done(false, 403, 'no websockets for you', { 'x-why': 'declined' });
      else done(true);
    },
  });
  wss.on('connection', (ws) => ws.on('message', (data) => ws.send(`${name}:${String(data)}`)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    handshakes,
    server,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/**
 * The WebSocket tests' edge: `chat` (base and gray lanes, entered by `x-lane: gray`; one open connection at
 * a time on `/room`), `nope` (declines every upgrade), and routes to them, one needing a token, one static.
 */
export function chatFixture(base: WsUpstream, gray: WsUpstream, declining: WsUpstream) {
  const anon = { auth: { mode: 'anonymous' } };
  return {
    governance: {
      instances: [instance('chat-1', 'chat', base.address), instance('chat-gray', 'chat', gray.address, { lane: 'gray' }), instance('nope-1', 'nope', declining.address)],
      trafficPolicies: [resource<any>('TrafficPolicy', 'lanes', { lanes: [{ name: 'gray', services: ['chat'], mode: 'fallbackToBase', entry: [{ match: { headers: { 'x-lane': { exact: 'gray' } } } }] }], routing: [], loadBalancing: [], trustedIdentities: [] })],
      faultTolerance: [
        resource('FaultTolerance', 'rooms', FaultToleranceSpec.parse({
          rules: [{ name: 'one-room', targets: [{ service: 'chat', endpoints: ['/room'] }], strategies: [{ type: 'concurrencyLimit', maxConcurrency: 1 }] }],
        })),
      ],
    },
    routes: [
      route('chat', { ...anon, match: { path: { prefix: '/ws' } }, service: 'chat', rewrite: { prefix: '/socket' }, requestHeaders: { set: { 'x-room-tier': 'gold' }, remove: ['x-debug'] } }),
      route('room', { ...anon, match: { path: { exact: '/room' } }, service: 'chat' }),
      route('nope', { ...anon, match: { path: { exact: '/nope' } }, service: 'nope' }),
      route('private', { match: { path: { exact: '/private' } }, service: 'chat' }),
      route('static', { ...anon, match: { path: { exact: '/static' } }, static: { status: 200, body: 'ok' } }),
    ],
  };
}

/** A sidecar for the app `orders` (a WebSocket server) with an egress, and `payments` to reach through it. */
export interface WsSidecar {
  cp: TestControlPlane;
  gw: Gateway;
  app: WsUpstream;
  payments: WsUpstream;
  close(): Promise<void>;
}

/** Starts a WsSidecar on a real control plane in namespace `ns`; `resources` are put before the sidecar starts. */
export async function wsSidecar(ns: string, appProtocol: 'http' | 'h2c' = 'http', resources: readonly { kind: string; name: string; spec: unknown }[] = []): Promise<WsSidecar> {
  const cp = await controlPlane();
  const app = await wsUpstream('app');
  const payments = await wsUpstream('payments');
  const put = (kind: string, name: string, spec: unknown) => cp.api('PUT', `/v1/resources/${kind}/${ns}/${name}`, { spec });
  await put('Instance', 'payments-1', { service: 'payments', version: '1.0.0', address: payments.address, leaseTtlSeconds: 3600 });
  for (const r of resources) await put(r.kind, r.name, r.spec);
  const gw = await startGateway({
    namespace: ns,
    controlPlane: { url: cp.url, token: cp.token },
    listen: '127.0.0.1:0',
    accessLog: false,
    sidecar: { app: `http://${app.address}`, service: 'orders', version: '2.0.0', egress: '127.0.0.1:0', deregisterDelayMs: 0, appProtocol },
  });
  await sleep(100);
  return {
    cp,
    gw,
    app,
    payments,
    close: async () => {
      await gw.close();
      await Promise.all([app.close(), payments.close()]);
      await cp.destroy();
    },
  };
}

/** Opens a client; resolves once open, or with the status of a refused handshake. `ca` for wss://. */
export function open(url: string, headers: Record<string, string> = {}, ca?: string): Promise<{ ws: WebSocket } | { status: number; body: string; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ca === undefined ? { headers } : { headers, ca });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
    });
    ws.once('error', reject);
  });
}

export async function opened(url: string, headers: Record<string, string> = {}, ca?: string): Promise<WebSocket> {
  const r = await open(url, headers, ca);
  if (!('ws' in r)) throw new Error(`handshake refused: ${r.status} ${r.body}`);
  return r.ws;
}

export function refused(r: Awaited<ReturnType<typeof open>>): { status: number; body: string; headers: IncomingHttpHeaders } {
  if ('ws' in r) {
    r.ws.terminate();
    throw new Error('expected the handshake to be refused');
  }
  return r;
}

export function roundTrip(ws: WebSocket, text: string): Promise<string> {
  return new Promise((resolve) => {
    ws.once('message', (data) => resolve(String(data)));
    ws.send(text);
  });
}

export function closed(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve(1006);
    ws.once('close', (code) => resolve(code));
  });
}

export interface TestControlPlane {
  url: string;
  token: string;
  api(method: string, path: string, body?: unknown): Promise<unknown>;
  list(kind: string, namespace: string): Promise<{ items: { metadata: { name: string }; spec: Record<string, unknown> }[] }>;
  destroy(): Promise<void>;
}

/** A real plinth server in process (the SDK's test control plane). */
export async function controlPlane(): Promise<TestControlPlane> {
  const mod = (await import(new URL('../../sdk/dist/testing/control-plane.js', import.meta.url).href)) as { TestControlPlane: { start(): Promise<TestControlPlane> } };
  return mod.TestControlPlane.start();
}

/** Milliseconds until the gateway at `url` closes a connection that sent `data` (or nothing) and then went quiet. */
export function closedAfter(url: string, data?: Buffer | string): Promise<number> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = connect(Number(u.port), u.hostname, () => {
      if (data !== undefined) s.write(data);
    });
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => resolve(Date.now() - t0));
  });
}

/** A span as a collector received it, with the `service.name` of its resource. */
export interface CollectedSpan {
  span: OtlpSpan;
  service: string;
}

/** An OTLP/HTTP JSON collector on loopback that keeps every span it is sent. */
export interface SpanCollector {
  readonly url: string;
  readonly spans: CollectedSpan[];
  /** The spans of `traceId` once `n` of them arrived, flushing `tracing` while waiting (spans end as exchanges close). */
  spansOf(tracing: Tracing, traceId: string, n: number): Promise<CollectedSpan[]>;
  close(): Promise<void>;
}

export async function spanCollector(): Promise<SpanCollector> {
  const spans: CollectedSpan[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const body = JSON.parse((req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString()) as OtlpTracesRequest;
      for (const rs of body.resourceSpans) {
        const service = String((rs.resource.attributes.find((a) => a.key === 'service.name')?.value as { stringValue?: string } | undefined)?.stringValue);
        for (const ss of rs.scopeSpans) for (const span of ss.spans) spans.push({ span, service });
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    async spansOf(tracing, traceId, n) {
      for (let i = 0; i < 200; i++) {
        await tracing.forceFlush();
        const got = spans.filter((e) => e.span.traceId === traceId);
        if (got.length >= n) return got;
        await sleep(10);
      }
      throw new Error(`fewer than ${n} spans of trace ${traceId} exported: ${spans.length} in all`);
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** An attribute of an exported span: its string, or its integer as a number. */
export function spanAttribute(s: OtlpSpan, key: string): unknown {
  const v = s.attributes.find((a) => a.key === key)?.value as Record<string, unknown> | undefined;
  if (v === undefined) return undefined;
  return v['stringValue'] ?? (v['intValue'] !== undefined ? Number(v['intValue']) : undefined);
}
