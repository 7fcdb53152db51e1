/**
 * WebSockets over HTTP/2 (RFC 8441 extended CONNECT) at the edge, on loopback: node:http2 clients speaking
 * RFC 6455 frames on their streams, real `ws` servers (reached with an HTTP/1.1 handshake) as upstreams.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect as h2connect, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StaticGovernance } from '@plinth/sdk';
import type { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import { chatFixture, instance, route, selfSigned, sleep, staticGateway, until, wsSidecar, wsUpstream, type WsSidecar, type WsUpstream } from './testkit.test.helpers.js';

const anon = { auth: { mode: 'anonymous' } };

/** A masked client frame (RFC 6455 §5.2): text by default. */
function clientFrame(payload: Buffer | string, opcode = 1): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const mask = randomBytes(4);
  const n = data.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n]) : Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 255]);
  const body = Buffer.alloc(n);
  for (let i = 0; i < n; i++) body[i] = data[i]! ^ mask[i % 4]!;
  return Buffer.concat([head, mask, body]);
}

interface Frame {
  opcode: number;
  payload: Buffer;
}

/** A WebSocket on one HTTP/2 stream: frames written masked, the server's frames parsed as they come. */
class StreamSocket {
  private buf = Buffer.alloc(0);
  private readonly frames: Frame[] = [];
  private waiting: ((f: Frame) => void) | undefined;
  readonly ended: Promise<void>;

  constructor(readonly stream: ClientHttp2Stream) {
    stream.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.parse();
    });
    this.ended = new Promise((r) => stream.once('close', () => r()));
  }

  send(text: string): void {
    this.stream.write(clientFrame(text));
  }

  /** The next text message. */
  async message(): Promise<string> {
    const f = await this.next();
    assert.equal(f.opcode, 1, `a text frame, not opcode ${f.opcode}`);
    return f.payload.toString();
  }

  async roundTrip(text: string): Promise<string> {
    this.send(text);
    return this.message();
  }

  /** A close handshake: our close frame, the server's in return. */
  async close(): Promise<number> {
    this.stream.write(clientFrame(Buffer.from([0x03, 0xe8]), 8));
    const f = await this.next();
    assert.equal(f.opcode, 8);
    this.stream.end();
    return f.payload.readUInt16BE(0);
  }

  private next(): Promise<Frame> {
    const f = this.frames.shift();
    if (f !== undefined) return Promise.resolve(f);
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.stream.once('close', () => reject(new Error('the stream closed before a frame came')));
    });
  }

  private parse(): void {
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      assert.equal(b[1]! & 0x80, 0, 'server frames are never masked');
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (b.length < off + len) return;
      const frame = { opcode: b[0]! & 0x0f, payload: b.subarray(off, off + len) };
      this.buf = b.subarray(off + len);
      const w = this.waiting;
      this.waiting = undefined;
      if (w !== undefined) w(frame);
      else this.frames.push(frame);
    }
  }
}

interface Opened {
  status: number;
  headers: IncomingHttpHeaders;
  /** Set when the gateway answered 200: the WebSocket is open. */
  ws: StreamSocket | undefined;
  /** The answer's body otherwise. */
  body: string;
}

/** An extended CONNECT on `session` (RFC 8441 §4). */
function openOn(session: ClientHttp2Session, path: string, headers: Record<string, string> = {}, protocol = 'websocket'): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'CONNECT', ':protocol': protocol, ':path': path, ':scheme': session.encrypted === true ? 'https' : 'http', 'sec-websocket-version': '13', ...headers }, { endStream: false });
    stream.on('error', () => {});
    stream.once('response', (h) => {
      const status = Number(h[':status']);
      if (status === 200) return resolve({ status, headers: h, ws: new StreamSocket(stream), body: '' });
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => resolve({ status, headers: h, ws: undefined, body: Buffer.concat(chunks).toString() }));
    });
    stream.once('close', () => reject(new Error(`the stream closed unanswered (code ${stream.rstCode})`)));
  });
}

async function opened(session: ClientHttp2Session, path: string, headers: Record<string, string> = {}): Promise<StreamSocket> {
  const o = await openOn(session, path, headers);
  assert.equal(o.status, 200, o.body);
  return o.ws!;
}

/** A session whose server's settings have arrived (a client may use `:protocol` only once they say so). */
function session(url: string, ca?: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = h2connect(url, ca === undefined ? {} : { ca });
    s.on('error', reject);
    s.once('remoteSettings', () => resolve(s));
  });
}

/** A request on the session, read to its end: a GET by default, to show ordinary requests share the connection. */
function get(s: ClientHttp2Session, path: string | OutgoingHttpHeaders): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const r = s.request(typeof path === 'string' ? { ':path': path } : path);
    let status = 0;
    let body = '';
    r.on('response', (h) => (status = Number(h[':status'])));
    r.setEncoding('utf8');
    r.on('data', (d: string) => (body += d));
    r.on('end', () => resolve({ status, body }));
    r.on('error', reject);
  });
}

/** An upstream that answers every handshake with 101 and a made-up Sec-WebSocket-Accept. */
async function forger(): Promise<{ address: string; close: () => Promise<void> }> {
  const server: Server = createServer((_req, res) => res.end());
  const sockets = new Set<Socket>();
  server.on('upgrade', (_req, socket: Socket) => {
    sockets.add(socket);
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

describe('gateway WebSockets over HTTP/2 (RFC 8441)', () => {
  let dir: string;
  let ca: string;
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let log: Record<string, unknown>[];
  let base: WsUpstream;
  let gray: WsUpstream;
  let declining: WsUpstream;
  let forged: Awaited<ReturnType<typeof forger>>;
  let s: ClientHttp2Session;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-wsh2-'));
    const { cert, key, pem } = await selfSigned(dir, 'gw');
    ca = pem;
    base = await wsUpstream('base');
    gray = await wsUpstream('gray');
    declining = await wsUpstream('declining', true);
    forged = await forger();
    ({ gw, governance, routes, log } = await staticGateway({ tls: { cert, key }, drainTimeoutMs: 300 }));
    const chat = chatFixture(base, gray, declining);
    governance.set({ ...chat.governance, instances: [...chat.governance.instances, instance('forged-1', 'forged', forged.address)] });
    routes.set([...chat.routes, route('forged', { ...anon, match: { path: { exact: '/forged' } }, service: 'forged' })]);
    await sleep(50);
    s = await session(gw.url, ca);
  });

  after(async () => {
    s?.destroy();
    await gw?.close();
    await Promise.all([base?.close(), gray?.close(), declining?.close(), forged?.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  it('advertises extended CONNECT in its settings, so browsers open WebSockets on the connection they have', () => {
    assert.equal(s.remoteSettings.enableConnectProtocol, true);
  });

  it('carries messages both ways on a stream, the upstream shaking hands over HTTP/1.1 as for any WebSocket', async () => {
    const o = await openOn(s, '/ws/lobby?user=7', { 'x-debug': 'on', 'sec-websocket-protocol': 'chat.v2, chat.v1' });
    assert.equal(o.status, 200, o.body);
    assert.equal(o.headers['sec-websocket-protocol'], 'chat.v2', "the upstream's choice of subprotocol reaches the client");
    assert.equal(o.headers['sec-websocket-accept'], undefined, 'no accept value over HTTP/2 (RFC 8441 §5)');
    assert.equal(o.headers.upgrade, undefined);
    const ws = o.ws!;
    assert.equal(await ws.roundTrip('hello'), 'base:hello');
    assert.equal(await ws.roundTrip('x'.repeat(5000)), `base:${'x'.repeat(5000)}`);
    const hs = base.handshakes.at(-1)!;
    assert.equal(hs.url, '/socket/lobby?user=7', 'routed and rewritten as a GET would be');
    assert.match(String(hs.headers['sec-websocket-key']), /^[A-Za-z0-9+/]{22}==$/, 'the gateway made the key the client had no need for');
    assert.equal(hs.headers['sec-websocket-version'], '13');
    assert.equal(hs.headers['x-room-tier'], 'gold');
    assert.equal(hs.headers['x-debug'], undefined);
    assert.equal(hs.headers['x-forwarded-proto'], 'https');
    assert.equal(hs.headers['transfer-encoding'], undefined, 'an open stream is not a chunked body upstream');
    assert.match(String(hs.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    // An ordinary request shares the connection while the WebSocket is open.
    const plain = await get(s, '/ws/plain');
    assert.equal(plain.status, 200);
    assert.equal(plain.body, 'not a websocket');
    assert.equal(await ws.close(), 1000, 'the close handshake passes through');
    await ws.ended;
    await until('the access-log line', () => log.some((l) => l.route === 'edge/chat' && l.status === 200 && l.method === 'CONNECT'));
    const line = log.find((l) => l.route === 'edge/chat' && l.status === 200 && l.method === 'CONNECT')!;
    assert.equal(line.upstream, base.address);
    assert.ok(Number(line.bytesIn) > 5000 && Number(line.bytesOut) > 5000, JSON.stringify(line));
  });

  it('keeps several WebSockets apart on one connection, each in its own lane', async () => {
    const [a, b] = await Promise.all([opened(s, '/ws/a'), opened(s, '/ws/b', { 'x-lane': 'gray' })]);
    const [ra, rb] = await Promise.all([a.roundTrip('one'), b.roundTrip('two')]);
    assert.equal(ra, 'base:one');
    assert.equal(rb, 'gray:two');
    a.stream.close();
    b.stream.close();
    await Promise.all([a.ended, b.ended]);
  });

  it('holds the admission slot while the stream is open, and frees it when the client resets the stream', async () => {
    const first = await opened(s, '/room');
    const scrape = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(scrape, /^plinth_gateway_websockets_open 1$/m);
    const second = await openOn(s, '/room');
    assert.equal(second.status, 429);
    assert.equal(JSON.parse(second.body).code, 'concurrency_limited');
    first.stream.close(0x8 /* CANCEL */);
    await first.ended;
    await until('the slot freed', async () => /^plinth_gateway_websockets_open 0$/m.test(await (await fetch(`${gw.adminUrl}/metrics`)).text()));
    const third = await opened(s, '/room');
    assert.equal(await third.roundTrip('x'), 'base:x');
    third.stream.close();
    await third.ended;
  });

  it('passes on a declined upgrade and answers refusals as problem documents on the stream', async () => {
    const declined = await openOn(s, '/nope');
    assert.equal(declined.status, 403);
    assert.equal(declined.headers['x-why'], 'declined');
    assert.equal(declined.headers.connection, undefined, 'no connection-specific header on an HTTP/2 answer');
    const missing = await openOn(s, '/elsewhere');
    assert.equal(missing.status, 404);
    assert.equal(missing.headers['content-type'], 'application/problem+json');
    assert.equal(JSON.parse(missing.body).code, 'route_not_found');
    const anonymous = await openOn(s, '/private');
    assert.equal(anonymous.status, 503, 'no identity provider on this gateway: auth routes are unavailable, never open');
    const st = await openOn(s, '/static');
    assert.equal(st.status, 400);
    // The connection is still good for more.
    const ws = await opened(s, '/ws/after');
    assert.equal(await ws.roundTrip('still'), 'base:still');
    ws.stream.close();
  });

  it("refuses an upstream whose accept value does not prove the gateway's key (no client is left to check it)", async () => {
    const o = await openOn(s, '/forged');
    assert.equal(o.status, 502);
    assert.equal(JSON.parse(o.body).code, 'upstream_error');
    assert.match(JSON.parse(o.body).detail, /sec-websocket-accept/);
  });

  it('answers CONNECT tunnels with 405 and other extended CONNECT protocols with 501, and stays up', async () => {
    const tunnel = await get(s, { ':method': 'CONNECT', ':authority': 'db.internal:5432' });
    assert.equal(tunnel.status, 405);
    assert.equal(JSON.parse(tunnel.body).code, 'method_not_allowed');
    const udp = await openOn(s, '/ws/udp', {}, 'connect-udp');
    assert.equal(udp.status, 501);
    assert.equal(JSON.parse(udp.body).code, 'not_implemented');
    assert.equal((await get(s, '/ws/plain')).status, 200);
  });

  it('closes the stream when the upstream goes away mid-connection', async () => {
    const local = await wsUpstream('short');
    governance.set({
      instances: [instance('chat-1', 'chat', base.address), instance('short-1', 'short', local.address)],
    });
    routes.set([route('short', { ...anon, match: { path: { exact: '/short' } }, service: 'short' })]);
    await sleep(50);
    const ws = await opened(s, '/short');
    assert.equal(await ws.roundTrip('a'), 'short:a');
    await local.close();
    await ws.ended;
    assert.equal(s.destroyed, false, 'the connection stays, only the stream ends');
  });
});

describe('gateway WebSockets over h2c, idle timeout and shutdown', () => {
  it('serves them on the cleartext listener, closes a quiet one and says why, and closes open ones at shutdown', async () => {
    const up = await wsUpstream('up');
    const { gw, governance, routes, log } = await staticGateway({ h2c: true, websocketIdleTimeoutMs: 400, drainTimeoutMs: 200 });
    try {
      governance.set({ instances: [instance('up-1', 'up', up.address)] });
      routes.set([route('up', { ...anon, match: { path: { prefix: '/live' } }, service: 'up' })]);
      await sleep(50);
      const s = await session(gw.url);
      assert.equal(s.remoteSettings.enableConnectProtocol, true);
      const busy = await opened(s, '/live/busy');
      // Busy for well over the timeout: a message every 100 ms keeps it open.
      for (let i = 0; i < 8; i++) {
        assert.equal(await busy.roundTrip(`m${i}`), `up:m${i}`);
        await sleep(100);
      }
      assert.equal(busy.stream.closed, false);
      // Then quiet: cut under the client.
      await busy.ended;
      await until('the log line', () => log.some((l) => l.path === '/live/busy' && l.status === 200 && l.reason === 'idle_timeout'));
      const held = await opened(s, '/live/held');
      assert.equal(await held.roundTrip('x'), 'up:x');
      await gw.close();
      await held.ended;
      s.destroy();
    } finally {
      await gw.close();
      await up.close();
    }
  });
});

describe('sidecar WebSockets over HTTP/2 (real control plane)', () => {
  let side: WsSidecar;
  before(async () => void (side = await wsSidecar('side-wsh2', 'h2c')));
  after(() => side?.close());

  it('gives an app speaking HTTP/2 to its egress WebSockets to other services, by name, as the app', async () => {
    const s = await session(side.gw.egressUrl!);
    try {
      const ws = await opened(s, '/payments/stream?x=1');
      assert.equal(await ws.roundTrip('pay'), 'payments:pay');
      assert.equal(side.payments.handshakes.at(-1)!.url, '/stream?x=1');
      assert.equal(side.payments.handshakes.at(-1)!.headers['plinth-caller'], 'orders');
      assert.equal(await ws.close(), 1000);
      const unnamed = await openOn(s, '/');
      assert.equal(unnamed.status, 404);
    } finally {
      s.destroy();
    }
  });

  it('takes WebSockets on the ingress streams of an HTTP/2 app to the app', async () => {
    const s = await session(side.gw.url);
    try {
      const ws = await opened(s, '/chat', { 'plinth-caller': 'web' });
      assert.equal(await ws.roundTrip('hi'), 'app:hi');
      assert.equal(side.app.handshakes.at(-1)!.url, '/chat');
      assert.equal(side.app.handshakes.at(-1)!.headers['plinth-caller'], 'web');
    } finally {
      s.destroy();
    }
  });
});
