/**
 * Streaming answers under a route's streamIdleTimeoutMs, on loopback with real node:http upstreams: the
 * deadline bounds the wait for the answer's head, then the body may last as long as bytes keep passing,
 * either way.
 */
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type ClientRequest, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startGateway, type Gateway } from './gateway.js';
import { controlPlane, instance, route, staticGateway, until, type TestControlPlane } from './testkit.test.helpers.js';

const anon = { auth: { mode: 'anonymous' } };
const EVERY_MS = 100;
const IDLE_MS = 400;
const DEADLINE_MS = 300;

/** What a client read of a streamed answer: its status, the body it got, and whether the answer ended cleanly. */
interface Streamed {
  status: number;
  body: string;
  complete: boolean;
  ms: number;
}

/**
 * A request whose answer is read to its end or its cut, over node:http (which reports a cut answer as
 * `aborted`); `send` writes the request body and ends it.
 */
function exchange(url: string, method: string, send: (req: ClientRequest) => void): Promise<Streamed> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const headers = method === 'GET' ? {} : { 'transfer-encoding': 'chunked' };
    const req = httpRequest(url, { method, agent: false, headers }, (res) => {
      let body = '';
      let aborted = false;
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('aborted', () => (aborted = true));
      res.on('error', () => (aborted = true));
      res.on('close', () => resolve({ status: res.statusCode ?? 0, body, complete: !aborted && res.complete, ms: Date.now() - started }));
    });
    req.on('error', reject);
    send(req);
  });
}

const get = (url: string): Promise<Streamed> => exchange(url, 'GET', (req) => req.end());

/**
 * A chunked upload of `first` bytes at once (past what the gateway reads before its first try, so the
 * rest streams), then `parts` of 1 KiB every EVERY_MS; the answer tells how many bytes arrived.
 */
function trickleUpload(url: string, first: number, parts: number): Promise<Streamed> {
  return exchange(url, 'POST', (req) => {
    req.write(Buffer.alloc(first, 'a'));
    let sent = 0;
    const timer = setInterval(() => {
      if (req.destroyed) return clearInterval(timer);
      if (sent++ < parts) req.write(Buffer.alloc(1024, 'b'));
      else {
        clearInterval(timer);
        req.end();
      }
    }, EVERY_MS);
  });
}

/**
 * /events?n=N: N server-sent events, one every EVERY_MS, then the end; `hang=1` stays silent after the first.
 * /never: no answer at all. /upload: the head at once, then the number of body bytes once the body ended.
 */
const gate: (() => void)[] = [];

function eventServer(open: Set<ServerResponse>): Server {
  return createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/never') return void open.add(res);
    if (u.pathname === '/gated') {
      // An event stream whose first event waits until the client has its head.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.flushHeaders();
      gate.push(() => res.end('data: after the head\n\n'));
      return;
    }
    if (u.pathname === '/upload') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.flushHeaders();
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(`got ${n}`));
      return;
    }
    const n = Number(u.searchParams.get('n') ?? '1');
    const hang = u.searchParams.get('hang') === '1';
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    open.add(res);
    let i = 0;
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      if (i < n) res.write(`data: ${++i}\n\n`);
      if (hang) return clearInterval(timer);
      if (i >= n) {
        clearInterval(timer);
        res.end();
      }
    }, EVERY_MS);
  });
}

describe('streamIdleTimeoutMs: streaming answers bounded by silence, not by the deadline', () => {
  let gw: Gateway;
  let log: Record<string, unknown>[];
  let server: Server;
  const open = new Set<ServerResponse>();

  before(async () => {
    server = eventServer(open);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const started = await staticGateway();
    gw = started.gw;
    log = started.log;
    started.governance.set({ instances: [instance('events-1', 'events', address)] });
    started.routes.set([
      route('streams', { ...anon, match: { path: { prefix: '/s/' } }, service: 'events', rewrite: { prefix: '/' }, timeoutMs: DEADLINE_MS, streamIdleTimeoutMs: IDLE_MS }),
      route('bounded', { ...anon, match: { path: { prefix: '/b/' } }, service: 'events', rewrite: { prefix: '/' }, timeoutMs: DEADLINE_MS }),
      route('plain', { ...anon, match: { path: { prefix: '/p/' } }, service: 'events', rewrite: { prefix: '/' } }),
    ]);
  });

  after(async () => {
    await gw?.close();
    for (const res of open) res.destroy();
    server?.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('lets an event stream run past the deadline while events keep coming, to its end', async () => {
    const r = await get(`${gw.url}/s/events?n=8`);
    assert.equal(r.status, 200);
    assert.ok(r.complete, 'ended cleanly');
    assert.equal(r.body, Array.from({ length: 8 }, (_, i) => `data: ${i + 1}\n\n`).join(''));
    assert.ok(r.ms > DEADLINE_MS, `ran ${r.ms} ms, past the ${DEADLINE_MS} ms deadline`);
  });

  it("passes an event stream's head on at once, before its first event, on any route", async () => {
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${gw.url}/p/gated`, { agent: false }, (res) => {
        assert.equal(res.headers['content-type'], 'text/event-stream');
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve(text));
        // Only now does the upstream send its event: a head held back for it would never come.
        gate.shift()!();
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(body, 'data: after the head\n\n');
  });

  it('cuts the same stream at the deadline on a route without it', async () => {
    const r = await get(`${gw.url}/b/events?n=8`);
    assert.equal(r.status, 200, 'the head came in time');
    assert.equal(r.complete, false, 'the body was cut');
    assert.ok(r.body.length < 8 * 'data: 1\n\n'.length);
  });

  it('cuts a stream that went silent after idle time, logged as stream_idle_timeout', async () => {
    const from = log.length;
    const r = await get(`${gw.url}/s/events?n=5&hang=1`);
    assert.equal(r.status, 200);
    assert.equal(r.complete, false);
    assert.equal(r.body, 'data: 1\n\n');
    // The first event came after EVERY_MS; the cut between one and two idle periods after the last byte.
    assert.ok(r.ms >= EVERY_MS + IDLE_MS - 20 && r.ms < EVERY_MS + 2 * IDLE_MS + 400, `cut after ${r.ms} ms`);
    let line: Record<string, unknown> | undefined;
    await until('the log line', () => (line = log.slice(from).find((l) => l.path === '/s/events')) !== undefined);
    assert.equal(line!.reason, 'stream_idle_timeout');
  });

  it('still answers 504 when the head does not come within the deadline', async () => {
    const r = await get(`${gw.url}/s/never`);
    assert.equal(r.status, 504);
    assert.ok(r.ms < DEADLINE_MS + 400, `answered after ${r.ms} ms`);
  });

  it("counts the request body's bytes as activity: an upload trickling after the head is not cut", async () => {
    const r = await trickleUpload(`${gw.url}/s/upload`, 70 * 1024, 8);
    assert.equal(r.status, 200);
    assert.ok(r.complete, 'ended cleanly');
    assert.equal(r.body, `got ${70 * 1024 + 8 * 1024}`);
    assert.ok(r.ms > IDLE_MS, `ran ${r.ms} ms, past one idle period with no answer byte`);
  });
});

describe('streamIdleTimeoutMs for the whole gateway: routes without their own, and the sidecar (real control plane)', () => {
  let server: Server;
  let address = '';
  const open = new Set<ServerResponse>();
  let cp: TestControlPlane;

  before(async () => {
    server = eventServer(open);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    cp = await controlPlane();
  });

  after(async () => {
    for (const res of open) res.destroy();
    server?.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await cp?.destroy();
  });

  it('lets event streams through an edge route without its own setting run past the deadline, and cuts a silent one', async () => {
    const { gw, governance, routes } = await staticGateway({ accessLog: false, streamIdleTimeoutMs: IDLE_MS });
    try {
      governance.set({ instances: [instance('events-1', 'events', address)] });
      routes.set([route('plain', { ...anon, match: { path: { prefix: '/' } }, service: 'events', timeoutMs: DEADLINE_MS })]);
      const r = await get(`${gw.url}/events?n=6`);
      assert.ok(r.complete && r.body.endsWith('data: 6\n\n'), `all six events, ended cleanly (got ${JSON.stringify(r.body)})`);
      const silent = await get(`${gw.url}/events?n=3&hang=1`);
      assert.equal(silent.complete, false);
      assert.equal(silent.body, 'data: 1\n\n');
    } finally {
      await gw.close();
    }
  });

  it("applies to a sidecar's app, which has no routes", async () => {
    const gw = await startGateway({
      namespace: 'idle',
      controlPlane: { url: cp.url, token: cp.token },
      listen: '127.0.0.1:0',
      accessLog: false,
      defaultTimeoutMs: DEADLINE_MS,
      streamIdleTimeoutMs: IDLE_MS,
      sidecar: { app: `http://${address}`, service: 'events', version: '1.0.0', deregisterDelayMs: 0 },
    });
    try {
      const r = await get(`${gw.url}/events?n=6`);
      assert.ok(r.complete && r.body.endsWith('data: 6\n\n'), `all six events past the ${DEADLINE_MS} ms default deadline (got ${JSON.stringify(r.body)})`);
      assert.ok(r.ms > DEADLINE_MS);
      const silent = await get(`${gw.url}/events?n=3&hang=1`);
      assert.equal(silent.complete, false);
    } finally {
      await gw.close();
    }
  });
});
