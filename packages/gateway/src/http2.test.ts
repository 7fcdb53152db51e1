/**
 * HTTP/2 at the edge on loopback: a TLS gateway with openssl-made certificates, node:http2 clients, real
 * node:http upstreams (reached over HTTP/1.1), HTTP/1.1 and WebSocket clients on the same port.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as h2connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import type { StaticGovernance } from '@plinth/sdk';
import { Agent, request } from 'undici';
import type { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import { instance, opened, roundTrip, route, selfSigned, sleep, staticGateway, until, upstream, wsUpstream, type Upstream, type WsUpstream } from './testkit.test.helpers.js';

const anon = { auth: { mode: 'anonymous' } };

interface H2Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request on `session`; `body` chunks are written with a pause between them (a streamed upload). */
function h2request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer[]): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, { endStream: body === undefined });
    let status = 0;
    let head: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      head = h;
      status = Number(h[':status']);
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status, headers: head, body: Buffer.concat(chunks).toString() }));
    req.on('error', reject);
    if (body !== undefined) {
      void (async () => {
        for (const c of body) {
          if (req.destroyed) return;
          req.write(c);
          await sleep(5);
        }
        req.end();
      })();
    }
  });
}

describe('gateway over HTTP/2', () => {
  let dir: string;
  let ca: string;
  let gw: Gateway;
  let log: Record<string, unknown>[];
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let echo: Upstream;
  let hop: Upstream;
  let slow: Upstream;
  let wsEcho: WsUpstream;
  let session: ClientHttp2Session;
  const slowClosed: { url: string; finished: boolean }[] = [];
  const warnings: Error[] = [];
  const onWarning = (w: Error): void => void warnings.push(w);

  before(async () => {
    process.on('warning', onWarning);
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-h2-'));
    const { cert, key, pem } = await selfSigned(dir, 'gw');
    ca = pem;
    echo = await upstream('echo');
    // Answers with every connection-specific header HTTP/1.1 allows, streamed (chunked).
    hop = await upstream('hop', (_req, res) => {
      res.writeHead(200, { connection: 'keep-alive, x-hop', 'keep-alive': 'timeout=5', 'x-hop': 'per-connection', 'proxy-connection': 'keep-alive', 'x-kept': 'yes', 'content-type': 'text/plain' });
      res.write('one,');
      setTimeout(() => res.end('two'), 10);
    });
    // Sends a first chunk, then the rest after 300 ms; records whether it got to finish.
    slow = await upstream('slow', (req, res) => {
      const entry = { url: req.url ?? '', finished: false };
      slowClosed.push(entry);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first;');
      const t = setTimeout(() => {
        entry.finished = true;
        res.end('rest');
      }, 300);
      res.on('close', () => clearTimeout(t));
    });
    wsEcho = await wsUpstream('ws');
    ({ gw, log, governance, routes } = await staticGateway({ tls: { cert, key }, drainTimeoutMs: 3000 }));
    governance.set({
      instances: [instance('echo-1', 'echo', echo.address), instance('hop-1', 'hop', hop.address), instance('slow-1', 'slow', slow.address), instance('ws-1', 'ws', wsEcho.address)],
    });
    routes.set([
      route('shop', { ...anon, hosts: ['shop.example'], match: { path: { prefix: '/' } }, service: 'echo', rewrite: { prefix: '/shop/' } }),
      route('api', { ...anon, match: { path: { prefix: '/api' } }, service: 'echo' }),
      route('small', { ...anon, match: { path: { prefix: '/small' } }, service: 'echo', maxBodyBytes: 1000 }),
      route('hop', { ...anon, match: { path: { prefix: '/hop' } }, service: 'hop' }),
      route('slow', { ...anon, match: { path: { prefix: '/slow' } }, service: 'slow' }),
      route('ws', { ...anon, match: { path: { prefix: '/ws' } }, service: 'ws' }),
      route('static', { ...anon, match: { path: { exact: '/static' } }, static: { status: 200, body: 'plain', headers: { Connection: 'close', 'Transfer-Encoding': 'chunked', 'x-static': '1' } } }),
    ]);
    session = h2connect(gw.url, { ca });
    session.on('error', () => {});
  });

  after(async () => {
    process.off('warning', onWarning);
    session?.destroy();
    await gw?.close();
    await Promise.all([echo?.close(), hop?.close(), slow?.close(), wsEcho?.close()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('proxies a GET over h2; the upstream sees https, the authority as forwarded host, and no pseudo-headers', async () => {
    const r = await h2request(session, { ':path': '/api/hello?x=1', 'x-custom': 'kept' });
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).url, '/api/hello?x=1');
    assert.equal(session.alpnProtocol, 'h2');
    const seen = echo.seen.at(-1)!;
    assert.equal(seen.method, 'GET');
    assert.equal(seen.headers['x-forwarded-proto'], 'https');
    assert.match(String(seen.headers['forwarded']), /;proto=https$/);
    assert.equal(seen.headers['x-forwarded-host'], new URL(gw.url).host);
    assert.equal(seen.headers['x-custom'], 'kept');
    assert.deepEqual(Object.keys(seen.headers).filter((k) => k.startsWith(':')), []);
    assert.equal(seen.headers['transfer-encoding'], undefined);
    const line = log.findLast((l) => l.path === '/api/hello')!;
    assert.equal(line.status, 200);
    assert.equal(line.host, '127.0.0.1');
  });

  it('matches routes by :authority', async () => {
    const r = await h2request(session, { ':path': '/cart', ':authority': 'shop.example:443' });
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).url, '/shop/cart');
    assert.equal(echo.seen.at(-1)!.headers['x-forwarded-host'], 'shop.example:443');
    const other = await h2request(session, { ':path': '/cart', ':authority': 'other.example' });
    assert.equal(other.status, 404);
    assert.equal(JSON.parse(other.body).code, 'route_not_found');
  });

  it('streams request bodies with and without a declared length, small and large', async () => {
    const small = [Buffer.from('hello '), Buffer.from('world')];
    const r1 = await h2request(session, { ':method': 'POST', ':path': '/api/small-chunked' }, small);
    assert.equal(r1.status, 200, r1.body);
    assert.equal(echo.seen.at(-1)!.body, 'hello world');
    assert.equal(echo.seen.at(-1)!.method, 'POST');

    const big = Array.from({ length: 40 }, (_, i) => Buffer.alloc(8192, 97 + (i % 26)));
    const whole = Buffer.concat(big).toString();
    const r2 = await h2request(session, { ':method': 'POST', ':path': '/api/big-chunked' }, big);
    assert.equal(r2.status, 200, r2.body);
    assert.equal(echo.seen.at(-1)!.body.length, whole.length);
    assert.equal(echo.seen.at(-1)!.body, whole);

    const r3 = await h2request(session, { ':method': 'PUT', ':path': '/api/big-length', 'content-length': String(whole.length) }, big);
    assert.equal(r3.status, 200, r3.body);
    assert.equal(echo.seen.at(-1)!.body, whole);
    assert.equal(echo.seen.at(-1)!.headers['content-length'], String(whole.length));
  });

  it('refuses bodies over the route limit with 413, by length or while streaming, and the session carries on', async () => {
    const before = echo.seen.length;
    const byLength = await h2request(session, { ':method': 'POST', ':path': '/small', 'content-length': '5000' }, [Buffer.alloc(5000)]);
    assert.equal(byLength.status, 413);
    assert.equal(JSON.parse(byLength.body).code, 'body_too_large');
    const streaming = await h2request(
      session,
      { ':method': 'POST', ':path': '/small' },
      Array.from({ length: 10 }, () => Buffer.alloc(500)),
    ).catch((e: Error) => e);
    // The 413 comes first; the rest of the upload is stopped with RST_STREAM(NO_ERROR).
    assert.ok(!(streaming instanceof Error), String(streaming));
    assert.equal(streaming.status, 413);
    assert.equal(echo.seen.length, before, 'nothing reached the upstream');
    assert.equal((await h2request(session, { ':path': '/api/after-413' })).status, 200);
  });

  it('drops connection-specific headers of the upstream answer and of its own answers', async () => {
    const r = await h2request(session, { ':path': '/hop' });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'one,two');
    assert.equal(r.headers['x-kept'], 'yes');
    for (const h of ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'x-hop']) assert.equal(r.headers[h], undefined, h);
    const s = await h2request(session, { ':path': '/static' });
    assert.equal(s.status, 200);
    assert.equal(s.body, 'plain');
    assert.equal(s.headers['x-static'], '1');
    assert.equal(s.headers['connection'], undefined);
    assert.deepEqual(
      warnings.filter((w) => w.name === 'UnsupportedWarning'),
      [],
    );
  });

  it('answers HEAD without a body', async () => {
    const r = await h2request(session, { ':method': 'HEAD', ':path': '/api/head' });
    assert.equal(r.status, 200);
    assert.equal(r.body, '');
    assert.equal(echo.seen.at(-1)!.method, 'HEAD');
  });

  it('serves many concurrent streams on one session, and advertises 100 as the limit', async () => {
    assert.equal(session.remoteSettings.maxConcurrentStreams, 100);
    assert.equal(session.remoteSettings.maxHeaderListSize, 16 * 1024);
    const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => h2request(session, { ':path': `/api/many/${i}` })));
    assert.deepEqual(
      answers.map((a) => a.status),
      answers.map(() => 200),
    );
    answers.forEach((a, i) => assert.equal(JSON.parse(a.body).url, `/api/many/${i}`));
  });

  it('a stream the client cancels mid-answer aborts the upstream try, is logged client_closed, and the gateway carries on', async () => {
    const req = session.request({ ':path': '/slow/cancel' });
    req.on('error', () => {});
    await new Promise<void>((resolve) => req.once('data', () => resolve()));
    req.close(constants.NGHTTP2_CANCEL);
    await until('the upstream to see the abort', () => slowClosed.some((e) => e.url === '/slow/cancel'));
    await until('the access-log line', () => log.some((l) => l.path === '/slow/cancel'));
    const line = log.find((l) => l.path === '/slow/cancel')!;
    assert.equal(line.status, 499);
    assert.equal(line.reason, 'client_closed');
    await sleep(400);
    assert.equal(slowClosed.find((e) => e.url === '/slow/cancel')!.finished, false, 'the upstream answer was cut off');
    assert.equal(gw.inFlight(), 0);
    assert.equal((await h2request(session, { ':path': '/api/after-cancel' })).status, 200);
  });

  it('an upload cut off by a dropped connection is not forwarded as a complete one', async () => {
    const before = echo.seen.length;
    // node's client ends the stream (END_STREAM) before a cancel's RST_STREAM: a dropped connection is a true cut.
    const s2 = h2connect(gw.url, { ca });
    s2.on('error', () => {});
    const req = s2.request({ ':method': 'POST', ':path': '/api/cut' }, { endStream: false });
    req.on('error', () => {});
    req.write(Buffer.alloc(1000, 120));
    await sleep(50);
    s2.destroy();
    await until('the access-log line', () => log.some((l) => l.path === '/api/cut'));
    await sleep(100);
    assert.equal(echo.seen.length, before, 'the upstream got no request');
    assert.equal(log.find((l) => l.path === '/api/cut')!.reason, 'client_closed');
  });

  it('refuses a header list over maxHeaderSize without reaching the upstream', async () => {
    const before = echo.seen.length;
    const s2 = h2connect(gw.url, { ca });
    s2.on('error', () => {});
    try {
      // Sent at once: before the client acknowledged the gateway's SETTINGS, so the gateway measures it itself.
      const first = await h2request(s2, { ':path': '/api/big-header', 'x-big': 'a'.repeat(20_000) });
      assert.equal(first.status, 431);
      assert.equal(JSON.parse(first.body).code, 'headers_too_large');
      // Once the setting is acknowledged, node resets such a stream itself.
      await sleep(100);
      const later = await h2request(s2, { ':path': '/api/big-header', 'x-big': 'a'.repeat(20_000) }).catch((e: Error) => e);
      if (later instanceof Error) assert.match(later.message, /ENHANCE_YOUR_CALM/);
      else assert.equal(later.status, 431);
      assert.equal((await h2request(s2, { ':path': '/api/small-header', 'x-small': 'a'.repeat(1000) })).status, 200);
      assert.equal(echo.seen.length, before + 1);
    } finally {
      s2.destroy();
    }
    assert.equal((await h2request(session, { ':path': '/api/after-big-header' })).status, 200);
  });

  it('survives garbage frames after the preface and garbage instead of one', async () => {
    const u = new URL(gw.url);
    const garbage = Buffer.alloc(2048);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 37 + 11) & 0xff;
    const send = (data: Buffer): Promise<void> =>
      new Promise((resolve) => {
        const s = tlsConnect({ host: u.hostname, port: Number(u.port), ca, ALPNProtocols: ['h2'] }, () => {
          assert.equal(s.alpnProtocol, 'h2');
          s.write(data);
        });
        s.on('data', () => {});
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        setTimeout(() => s.destroy(), 3000).unref();
      });
    const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    // A SETTINGS frame, then a HEADERS frame on stream 1 whose block is nonsense, then random bytes.
    const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    const headers = Buffer.concat([Buffer.from([0, 0, 16, 1, 5, 0, 0, 0, 1]), Buffer.alloc(16, 0xff)]);
    await Promise.all([send(Buffer.concat([preface, settings, headers])), send(Buffer.concat([preface, garbage])), send(garbage)]);
    assert.equal((await h2request(session, { ':path': '/api/after-garbage' })).status, 200);
  });

  it('serves HTTP/1.1 clients and WebSockets on the same port', async () => {
    const agent = new Agent({ connect: { ca } });
    try {
      const r = await request(`${gw.url}/api/http1`, { dispatcher: agent });
      assert.equal(r.statusCode, 200);
      await r.body.text();
      assert.equal(echo.seen.at(-1)!.headers['x-forwarded-proto'], 'https');
    } finally {
      await agent.close();
    }
    const ws = await opened(`${gw.url.replace('https:', 'wss:')}/ws/room`, {}, ca);
    try {
      assert.equal(await roundTrip(ws, 'hi'), 'ws:hi');
    } finally {
      ws.terminate();
    }
  });

  // Last: it closes the gateway.
  it('close() sends a GOAWAY and lets the stream in flight finish', async () => {
    const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
    const inFlight = h2request(session, { ':path': '/slow/drain' });
    await until('the request to reach the upstream', () => slowClosed.some((e) => e.url === '/slow/drain'));
    const closing = gw.close();
    assert.equal(await goaway, constants.NGHTTP2_NO_ERROR);
    const r = await inFlight;
    assert.equal(r.status, 200);
    assert.equal(r.body, 'first;rest');
    assert.equal(r.headers['connection'], undefined);
    await closing;
    assert.equal(log.find((l) => l.path === '/slow/drain')!.status, 200);
  });
});

describe('gateway over HTTP/2: settings, stalled uploads and idle connections', () => {
  let dir: string;
  let ca: string;
  let gw: Gateway;
  let echo: Upstream;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-h2-idle-'));
    const { cert, key, pem } = await selfSigned(dir, 'gw');
    ca = pem;
    echo = await upstream('echo');
    let governance: StaticGovernance;
    let routes: StaticFeed;
    ({ gw, governance, routes } = await staticGateway({ tls: { cert, key }, accessLog: false, server: { keepAliveTimeoutMs: 200, requestTimeoutMs: 300, http2: { maxConcurrentStreams: 5 } } }));
    governance.set({ instances: [instance('echo-1', 'echo', echo.address)] });
    routes.set([route('api', { ...anon, match: { path: { prefix: '/api' } }, service: 'echo' })]);
  });

  after(async () => {
    await gw?.close();
    await echo?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('resets a stream whose upload is still arriving after requestTimeoutMs, and keeps serving', async () => {
    const s = h2connect(gw.url, { ca });
    s.on('error', () => {});
    try {
      const req = s.request({ ':path': '/api/stalled', ':method': 'POST' }, { endStream: false });
      req.on('error', () => {});
      req.write('part of a body, then nothing');
      const t0 = Date.now();
      await until('the stalled stream to be reset', () => req.closed, 5000);
      const ms = Date.now() - t0;
      assert.equal(req.rstCode, constants.NGHTTP2_CANCEL);
      assert.ok(ms >= 250 && ms < 3000, `reset after ${ms} ms`);
      // A complete upload on the same connection still goes through.
      const ok = await h2request(s, { ':path': '/api/after', ':method': 'POST' }, [Buffer.from('whole')]);
      assert.equal(ok.status, 200);
    } finally {
      s.destroy();
    }
  });

  it('takes maxConcurrentStreams from server.http2 and closes a connection idle for keepAliveTimeoutMs with a GOAWAY', async () => {
    const s = h2connect(gw.url, { ca });
    s.on('error', () => {});
    try {
      const goaway = new Promise<void>((resolve) => s.once('goaway', () => resolve()));
      const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
      const r = await h2request(s, { ':path': '/nowhere' });
      assert.equal(r.status, 404);
      assert.equal(s.remoteSettings.maxConcurrentStreams, 5);
      const t0 = Date.now();
      await goaway;
      await closed;
      const idleMs = Date.now() - t0;
      assert.ok(idleMs >= 150 && idleMs < 3000, `closed after ${idleMs} ms`);
    } finally {
      s.destroy();
    }
  });
});
