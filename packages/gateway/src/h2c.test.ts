/**
 * Cleartext HTTP/2 with prior knowledge (h2c) on the plain listener: node:http2 clients and undici HTTP/1.1
 * clients on the same port of a real gateway, a real node:http upstream.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect as http2Connect, type ClientHttp2Session, type IncomingHttpHeaders as Http2Headers } from 'node:http2';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { StaticGovernance } from '@plinth/sdk';
import { Client } from 'undici';
import type { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import { enableH2c } from './http2.js';
import { hardenedServer, http1Settings, listenOn } from './listen.js';
import { END_HEADERS, END_STREAM, frame, HEADERS, hpackField, PING, settings } from './h2-frames.test.helpers.js';
import { call, closedAfter, instance, raw, route, staticGateway, until, upstream, type Upstream } from './testkit.test.helpers.js';

const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

function h2(session: ClientHttp2Session, path: string, o: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Http2Headers; text: string }> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':path': path, ':method': o.method ?? 'GET', ...o.headers }, { endStream: o.body === undefined });
    let text = '';
    let status = 0;
    let headers: Http2Headers = {};
    s.on('response', (h) => {
      status = Number(h[':status']);
      headers = h;
    });
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('end', () => resolve({ status, headers, text }));
    s.on('error', reject);
    if (o.body !== undefined) s.end(o.body);
  });
}

function connected(url: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const c = http2Connect(url);
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}


describe('gateway with h2c', () => {
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let echo: Upstream;

  before(async () => {
    echo = await upstream('echo');
    ({ gw, governance, routes } = await staticGateway({ h2c: true, server: { headersTimeoutMs: 300, connectionsCheckingIntervalMs: 50, maxHeaderSize: 4096 }, accessLog: false }));
    governance.set({ instances: [instance('echo-1', 'echo', echo.address)] });
    routes.set([route('api', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/api' } }, service: 'echo' })]);
  });

  after(async () => {
    await gw?.close();
    await echo?.close();
  });

  it('serves HTTP/2 with prior knowledge through the same routes, streams concurrent, bodies both ways', async () => {
    assert.match(gw.url, /^http:\/\//);
    const session = await connected(gw.url);
    try {
      const [a, b, post] = await Promise.all([
        h2(session, '/api/a?x=1', { headers: { 'x-tenant': 'acme' } }),
        h2(session, '/api/b'),
        h2(session, '/api/upload', { method: 'POST', body: 'hello h2c', headers: { 'content-type': 'text/plain' } }),
      ]);
      assert.equal(a.status, 200, a.text);
      assert.equal(b.status, 200, b.text);
      assert.equal(post.status, 200, post.text);
      assert.equal(a.headers['x-upstream'], 'echo');
      const seen = (path: string) => echo.seen.find((s) => s.url === path)!;
      assert.equal(seen('/api/a?x=1').headers['x-tenant'], 'acme');
      assert.equal(seen('/api/a?x=1').headers['x-forwarded-proto'], 'http');
      assert.equal(seen('/api/a?x=1').headers['x-forwarded-host'], new URL(gw.url).host);
      assert.equal(seen('/api/upload').body, 'hello h2c');
      assert.equal(seen('/api/upload').method, 'POST');
      const none = await h2(session, '/nowhere');
      assert.equal(none.status, 404);
      assert.match(String(none.headers['content-type']), /application\/problem\+json/);
      // The limits of HTTP/2 over TLS hold here too: this client has the header-list setting, so node resets.
      await assert.rejects(h2(session, '/api/big', { headers: { 'x-big': 'x'.repeat(5000) } }), /NGHTTP2_ENHANCE_YOUR_CALM/);
      assert.equal(echo.seen.find((s) => s.url === '/api/big'), undefined);
    } finally {
      session.close();
    }
  });

  it('keeps serving HTTP/1.1 on the same port, kept alive across requests', async () => {
    const client = new Client(gw.url, { keepAliveTimeout: 10_000 });
    let connections = 0;
    client.on('connect', () => connections++);
    try {
      for (const p of ['/api/one', '/api/two', '/api/three']) {
        const r = await client.request({ path: p, method: p === '/api/two' ? 'POST' : 'GET', body: p === '/api/two' ? 'posted' : null });
        assert.equal(r.statusCode, 200);
        await r.body.text();
      }
      assert.equal(connections, 1);
      assert.equal(echo.seen.find((s) => s.url === '/api/two')!.body, 'posted');
      // PUT, PATCH and a PRI of HTTP/1.1 part from the preface early and are read as HTTP/1.1.
      assert.equal((await call(`${gw.url}/api/put`, { method: 'PUT', body: 'x' })).status, 200);
      assert.equal((await call(`${gw.url}/api/patch`, { method: 'PATCH', body: 'x' })).status, 200);
      assert.match(await raw(gw.url, 'PRI /api/x HTTP/1.1\r\nhost: a\r\n\r\n', 1000), /^HTTP\/1\.1 \d{3} /);
    } finally {
      await client.close();
    }
  });

  it('drops silent and stalled connections after the headers timeout, and survives garbage after the preface', async () => {
    const [silent, halfPreface] = await Promise.all([closedAfter(gw.url, undefined), closedAfter(gw.url, PREFACE.slice(0, 10))]);
    assert.ok(silent < 3000 && silent >= 250, `a silent client was held ${silent} ms`);
    assert.ok(halfPreface < 3000 && halfPreface >= 250, `a client that stopped in the preface was held ${halfPreface} ms`);
    const answer = await raw(gw.url, PREFACE + 'garbage that is no frame at all, not even close', 1000);
    assert.ok(!answer.startsWith('HTTP/1.1'), 'an HTTP/2 connection is never answered in HTTP/1.1');
    const session = await connected(gw.url);
    try {
      assert.equal((await h2(session, '/api/after-garbage')).status, 200);
    } finally {
      session.close();
    }
  });

  it('sends a GOAWAY on close: the open stream finishes, then the connection closes', async () => {
    const slow = await upstream('slow', (_req: IncomingMessage, res: ServerResponse) => setTimeout(() => res.end('late'), 200));
    const { gw: g, governance: gv, routes: rt } = await staticGateway({ h2c: true, accessLog: false });
    gv.set({ instances: [instance('slow-1', 'slow', slow.address)] });
    rt.set([route('slow', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/' } }, service: 'slow' })]);
    const session = await connected(g.url);
    try {
      const goaway = new Promise<void>((r) => session.once('goaway', () => r()));
      const pending = h2(session, '/slow');
      await new Promise((r) => setTimeout(r, 50));
      const closing = g.close();
      await goaway;
      const r = await pending;
      assert.equal(r.status, 200);
      assert.equal(r.text, 'late');
      await closing;
    } finally {
      session.destroy();
      await slow.close();
    }
  });
});

describe('h2c off, and the HTTP/1.1 path with it on', () => {
  it('is off by default: the preface is an HTTP/1.1 parse error there', async () => {
    const { gw } = await staticGateway({ accessLog: false });
    try {
      assert.match(await raw(gw.url, PREFACE, 1000), /^HTTP\/1\.1 400 /);
    } finally {
      await gw.close();
    }
  });

  it('leaves an HTTP/1.1 connection exactly as node:http sets it up: the same listeners, nothing of the sniffing left', async () => {
    const shape = (req: IncomingMessage): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const e of ['readable', 'data', 'end', 'close', 'error', 'timeout', 'drain']) out[e] = req.socket.listenerCount(e);
      return out;
    };
    const seen: Record<string, number>[] = [];
    const listener = (req: IncomingMessage, res: ServerResponse) => {
      seen.push(shape(req));
      res.end('ok');
    };
    const plain = hardenedServer(listener);
    const sniffing = hardenedServer(listener);
    enableH2c(sniffing, listener, http1Settings());
    const ports = (await Promise.all([listenOn(plain, { host: '127.0.0.1', port: 0 }), listenOn(sniffing, { host: '127.0.0.1', port: 0 })])).map((a) => a.port);
    try {
      for (const port of ports) {
        const client = new Client(`http://127.0.0.1:${port}`);
        for (let i = 0; i < 2; i++) {
          const r = await client.request({ path: '/', method: 'GET' });
          assert.equal(await r.body.text(), 'ok');
        }
        await client.close();
      }
      assert.equal(seen.length, 4);
      assert.deepEqual(seen[2], seen[0], 'first request: same socket listeners with and without h2c');
      assert.deepEqual(seen[3], seen[1], 'kept-alive request: same socket listeners with and without h2c');
    } finally {
      for (const s of [plain, sniffing]) {
        s.closeAllConnections();
        s.close();
      }
    }
  });

  it('refuses h2c with TLS or in sidecar mode', async () => {
    await assert.rejects(staticGateway({ h2c: true, tls: { cert: '/nonexistent', key: '/nonexistent' } }), /h2c is cleartext HTTP\/2; with tls, HTTP\/2 is offered through ALPN/);
    await assert.rejects(staticGateway({ h2c: true, sidecar: { app: 'http://127.0.0.1:1', service: 's', version: '1.0.0' } }), /h2c is for the edge listener/);
  });
});

describe('h2c keepalive: connections node leaves stuck, and quiet live ones', () => {
  let gw: Gateway;
  let slow: Upstream;

  before(async () => {
    slow = await upstream('slow', (_req, res) => setTimeout(() => res.end('late'), 900));
    let governance: StaticGovernance;
    let routes: StaticFeed;
    ({ gw, governance, routes } = await staticGateway({ h2c: true, server: { http2: { pingIdleMs: 200, pingTimeoutMs: 200 } }, accessLog: false }));
    governance.set({ instances: [instance('slow-1', 'slow', slow.address)] });
    routes.set([route('slow', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/' } }, service: 'slow' })]);
  });

  after(async () => {
    await gw?.close();
    await slow?.close();
  });

  it('closes a connection whose own GOAWAY node never followed through, ending the streams it held', async () => {
    const headers = Buffer.concat([hpackField(':method', 'GET'), hpackField(':scheme', 'http'), hpackField(':authority', 'a'), hpackField(':path', '/x')]);
    // A complete GET, then a PING of 7 bytes: node answers GOAWAY(FRAME_SIZE_ERROR) and stops there.
    const sock = connect(Number(new URL(gw.url).port), '127.0.0.1');
    sock.on('error', () => {});
    sock.resume();
    sock.write(Buffer.concat([Buffer.from(PREFACE), settings([]), frame(HEADERS, END_STREAM | END_HEADERS, 1, headers), frame(PING, 0, 0, Buffer.alloc(7))]));
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    await until('the exchange started', () => gw.inFlight() === 1, 2000);
    await until('the stuck connection closed by the keepalive, and its exchange ended', () => gw.inFlight() === 0, 3000);
    await closed;
  });

  it('keeps a quiet connection whose peer answers the PINGs', async () => {
    const session = await connected(gw.url);
    try {
      // The answer takes 900 ms: four idle periods of PINGs, each answered by node's client.
      const r = await h2(session, '/slow');
      assert.equal(r.status, 200);
      assert.equal(r.text, 'late');
    } finally {
      session.close();
    }
  });
});
