/**
 * Nothing an exchange leaves behind outlives it. Rounds of every kind of exchange the gateway handles (answers
 * passed through, with bodies both ways, over HTTP/1.1 and HTTP/2; refusals; every broken answer of a
 * misbehaving upstream; upstream resets; clients that leave mid-exchange or reset their stream; WebSockets
 * closed cleanly or dropped; malformed, oversized and unfinished requests), traced
 * and access-logged, then: nothing in flight, the heap after a full collection where it was after the warm-up
 * rounds, and the same open file descriptors. A leak of a few hundred bytes per exchange, or of one socket in
 * five hundred, fails it. `PLINTH_LEAK_ROUNDS` (default 5) runs a longer soak.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { connect, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { afterRound, assertNoLeak, LEAK_ROUNDS, type AfterRound } from '@plinth/core/testing';
import { createTracing, type Tracing } from '@plinth/sdk/tracing';
import { Agent, request } from 'undici';
import { BAD_ANSWERS, campaign, type FuzzEdge, fuzzEdge } from './fuzz.test.helpers.js';
import { closed, open, roundTrip, until } from './testkit.test.helpers.js';

const PER_ROUND = 2000;
/**
 * Heap growth allowed from the end of the warm-up to the end (6,000 exchanges at 350 bytes each). Runs of 14
 * rounds stay within 0.7 MiB; keeping alive the exchanges whose client left grows it by about 2 MiB a round.
 */
const HEAP_SLACK = 2 * 1024 * 1024;
/** The gateway's pooled upstream connections come and go by a few; one socket leaked per 500 exchanges adds 12. */
const FD_SLACK = 10;

/** One raw exchange: the status line's code, '' when the gateway closed without one. Ends by `waitMs` at the latest. */
function rawStatus(port: number, data: string, waitMs: number, leaveAfterMs?: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => sock.destroy(), leaveAfterMs ?? waitMs);
    sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(/^HTTP\/1\.1 (\d{3}) /.exec(got)?.[1] ?? '');
    });
    sock.on('connect', () => sock.write(data));
  });
}


describe('what an exchange leaves behind', () => {
  let edge: FuzzEdge;
  let port = 0;
  let tracing: Tracing;
  let sink: Server;
  let agent: Agent;
  let h2: ClientHttp2Session;
  let token = '';

  before(async () => {
    // A collector that keeps nothing, so that only the gateway's own memory is measured.
    sink = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.end('{}'));
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    tracing = createTracing({
      service: 'edge',
      namespace: 'edge',
      sampleRatio: 1,
      useGlobalProvider: 'never',
      exporter: { url: `http://127.0.0.1:${(sink.address() as AddressInfo).port}`, flushMs: 20 },
    });
    edge = await fuzzEdge({ accessLog: { destination: '/dev/null' }, tracing, h2c: true });
    port = edge.port;
    token = await edge.sign({ iss: 'https://idp.fuzz.example', aud: 'web', sub: 'u1', scope: 'shop', exp: Math.floor(Date.now() / 1000) + 3600 });
  });

  after(async () => {
    await edge?.close();
    await tracing?.shutdown();
    sink?.close();
  });

  /** One stream on the round's HTTP/2 connection: its status, or 'left' when the client reset it first. */
  function viaH2(path: string, o: { method?: string; body?: string; resetAfterMs?: number } = {}): Promise<string> {
    return new Promise((resolve) => {
      const stream = h2.request({ ':method': o.method ?? 'GET', ':path': path, ':authority': 'shop.example' }, { endStream: o.body === undefined });
      let status = '';
      const timer = o.resetAfterMs !== undefined ? setTimeout(() => stream.close(0x8), o.resetAfterMs) : undefined;
      stream.on('response', (h) => (status = String(h[':status'])));
      stream.on('error', () => {});
      stream.resume();
      stream.on('close', () => {
        clearTimeout(timer);
        resolve(status === '' && o.resetAfterMs !== undefined ? 'left' : status || `error h2 ${stream.rstCode}`);
      });
      if (o.body !== undefined) stream.end(o.body);
    });
  }

  /** Exchange `i` of a round: each kind in turn, the same mix every round. */
  async function exchange(i: number): Promise<string> {
    const base = `http://127.0.0.1:${port}`;
    const kind = i % 21;
    const headers = { host: 'shop.example' };
    const via = async (path: string, o: { method?: 'GET' | 'POST'; body?: string; headers?: Record<string, string>; abortAfterMs?: number } = {}): Promise<string> => {
      const signal = o.abortAfterMs !== undefined ? AbortSignal.timeout(o.abortAfterMs) : undefined;
      try {
        const r = await request(base + path, { dispatcher: agent, method: o.method ?? 'GET', headers: { ...headers, ...o.headers }, body: o.body ?? null, ...(signal ? { signal } : {}) });
        await r.body.dump({ limit: 1 << 20 });
        return String(r.statusCode);
      } catch (e) {
        return o.abortAfterMs !== undefined ? 'left' : `error ${(e as Error).message}`;
      }
    };
    switch (kind) {
      case 0:
        return via(`/api/items/${i}`);
      case 1:
        return via('/api/orders', { method: 'POST', body: 'x'.repeat(2048), headers: { 'content-type': 'text/plain' } });
      case 2:
        return via(`/me/${i}`, { headers: { authorization: `Bearer ${token}` } });
      case 3:
        return via('/me', { headers: { authorization: 'Bearer not.a.token' } });
      case 4:
        return via(`/nowhere/${i}`);
      case 5:
        return via(`/bad/${(i >> 4) % BAD_ANSWERS.length}`);
      case 6:
        return via('/small', { method: 'POST', body: 'y'.repeat(1000) });
      case 7:
        // The upstream resets after 80 ms; the client leaves after 20.
        return via('/bad/21', { abortAfterMs: 20 });
      case 8:
        return via(`/gz/${19}`, { headers: { 'accept-encoding': 'br, gzip' } });
      case 9:
        return via('/robots.txt');
      case 10:
        return rawStatus(port, 'GET /api/x HTTP/1.1\r\nhost: shop.example\r\nno colon here\r\n\r\n', 2000);
      case 11:
        return rawStatus(port, `GET /api/x HTTP/1.1\r\nhost: shop.example\r\nx-huge: ${'h'.repeat(20_000)}\r\n\r\n`, 2000);
      case 12:
        // A client that sends half a head and leaves.
        return rawStatus(port, 'GET /api/x HTTP/1.1\r\nhost: shop.exa', 2000, 30);
      case 14:
        return viaH2(`/api/items/${i}`);
      case 15:
        return viaH2('/api/orders', { method: 'POST', body: 'z'.repeat(2048) });
      case 16:
        return viaH2(`/nowhere/${i}`);
      case 17:
        return viaH2('/bad/21', { resetAfterMs: 20 });
      case 18:
      case 19: {
        // A WebSocket through the gateway: a message each way, then closed cleanly or dropped outright.
        const r = await open(`ws://127.0.0.1:${port}/ws/${i}`);
        if (!('ws' in r)) return `ws refused ${r.status}`;
        if ((await roundTrip(r.ws, 'hi')) !== 'ws:hi') return 'ws garbled';
        if (kind === 18) {
          r.ws.close(1000);
          return `ws ${await closed(r.ws)}`;
        }
        r.ws.terminate();
        return 'ws dropped';
      }
      case 20:
        // An upgrade the gateway must refuse: no key.
        return rawStatus(port, 'GET /ws/x HTTP/1.1\r\nhost: shop.example\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\r\n', 2000);
      default:
        // A body announced and never finished, the client gone mid-upload.
        return rawStatus(port, 'POST /api/x HTTP/1.1\r\nhost: shop.example\r\ncontent-length: 5000\r\n\r\npartial', 2000, 30);
    }
  }

  it('leaves no memory, socket or exchange behind, round after round', async () => {
    const rounds: AfterRound[] = [];
    const statuses = new Map<string, number>();
    for (let round = 0; round < LEAK_ROUNDS; round++) {
      // The clients' kept-alive connections (and the gateway's ends of them) close with each round.
      agent = new Agent({ connections: 16 });
      h2 = http2Connect(`http://127.0.0.1:${port}`);
      h2.on('error', () => {});
      await campaign(round, PER_ROUND, 16, async (i) => {
        const s = await exchange(i);
        statuses.set(s, (statuses.get(s) ?? 0) + 1);
      });
      await agent.close();
      await new Promise<void>((r) => h2.close(() => r()));
      await until('nothing left in flight', () => edge.gw.inFlight() === 0, 8000);
      await tracing.forceFlush();
      // What the test's own upstream keeps is not the gateway's.
      edge.echo.seen.length = 0;
      edge.ws.handshakes.length = 0;
      rounds.push(await afterRound());
    }
    const seen = JSON.stringify([...statuses].sort());
    // The mix did what it is for: passed, refused, failed upstream, left by the client.
    for (const s of ['200', '401', '404', '413', '400', '431', '502', 'left', 'ws 1000', 'ws dropped']) assert.ok(statuses.has(s), `${s} in ${seen}`);
    assert.ok(![...statuses.keys()].some((s) => s === '500' || s.startsWith('error') || s === 'ws garbled' || s.startsWith('ws refused')), seen);
    assertNoLeak(rounds, { unit: 'exchanges', perRound: PER_ROUND, heapSlackBytes: HEAP_SLACK, fdSlack: FD_SLACK });
  });
});
