/**
 * Whatever an outsider sends, and whatever an upstream or an authorization service answers, the gateway
 * answers cleanly and goes on: no 500 (an exception in the gateway's own code), no crash, nothing left in
 * flight. Requests are generated from a seeded grammar of the inputs routes read (paths, queries, hosts,
 * tokens, context headers, bodies, upgrades) and then mutated byte by byte; upstreams misbehave on purpose
 * (odd header bytes, broken framing, resets). A failing case prints its seed and index so it replays.
 *
 * `PLINTH_FUZZ_CASES` (default 1,500) and `PLINTH_FUZZ_SEED` run a longer campaign; `PLINTH_FUZZ_DEBUG=summary`
 * prints the statuses seen, `PLINTH_FUZZ_DEBUG=<status>` (`400`, `closed`) each well-formed case that got it.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { Gateway } from './gateway.js';
import { call, instance, route, staticGateway, until, upstream, type Upstream } from './testkit.test.helpers.js';

/** mulberry32: a failing case replays from its seed; neighbouring seeds give unrelated streams. */
function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (x + 0x6d2b79f5) >>> 0;
    let t = Math.imul(x ^ (x >>> 15), 1 | x);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 0x100000000;
  };
}

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: Rand, n: number): number => Math.floor(r() * n);
const bytes = (r: Rand, n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(r, 256)));

const ISSUER = 'https://idp.fuzz.example';

/** Answers an upstream (or the authorization service) gives on purpose, by number; each is one connection's reply. */
const BAD_ANSWERS: readonly ((s: Socket) => void)[] = [
  (s) => s.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok'),
  (s) => s.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nx-latin: caf'), Buffer.from([0xe9, 0xff, 0x80]), Buffer.from('\r\ncontent-length: 0\r\n\r\n')])),
  (s) => s.end(Buffer.from('HTTP/1.1 200 OK\r\nx-utf8: 日本語 ✓\r\nlocation: /ünï\r\nset-cookie: a=ü\r\ncontent-length: 0\r\n\r\n', 'utf8')),
  (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort'),
  (s) => s.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nbad\r\n'),
  (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab'),
  (s) => s.end('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'),
  (s) => s.end(`HTTP/1.1 200 OK\r\nx-big: ${'b'.repeat(70_000)}\r\n\r\n`),
  (s) => s.end('HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"close":"delimited"}'),
  (s) => s.end('HTTP/1.1 999 Whatever\r\ncontent-length: 0\r\n\r\n'),
  (s) => s.end('NOT HTTP AT ALL\r\n\r\n'),
  (s) => s.destroy(),
  (s) => s.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n'),
  (s) => s.end('HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello'),
  (s) => s.end(`HTTP/1.1 302 Found\r\n${'set-cookie: c=1\r\n'.repeat(60)}location: http://[::1\r\ncontent-length: 0\r\n\r\n`),
  (s) => s.end('HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: x\r\ngrpc-message: %zz%\r\ncontent-length: 3\r\n\r\n\x00\x00\x00'),
  (s) => s.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n2\r\nok\r\n0\r\nx-t: \x01\x02\r\nbad trailer\r\n\r\n'),
  (s) => s.end('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: nope\r\n\r\n\x81\x05hello'),
  (s) => s.end('HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-encoding: br\r\ncontent-length: 4\r\n\r\n\xff\xfe\xfd\xfc'),
  (s) => s.end(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5000\r\n\r\n${'z'.repeat(5000)}`),
  (s) => s.end('HTTP/1.1 200 OK\r\nx-authz-user: \r\nx-authz-team: a\r\n\tfolded\r\ncontent-length: 0\r\n\r\n'),
  (s) => void setTimeout(() => s.destroy(), 80),
  (s) => s.end('HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'),
];

/** A raw TCP server that reads a request head and answers with `BAD_ANSWERS[n]`, n from `x-answer` or the path's last segment. */
async function misbehaving(): Promise<{ server: TcpServer; address: string }> {
  const server = createTcpServer((s) => {
    let head = '';
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      if (head.includes('\r\n\r\n')) return;
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const byHeader = /\r\nx-answer: *(\d+)/i.exec(head)?.[1];
      const byPath = /^\S+ \S*?\/(\d+)(?:[?# ]|$)/.exec(head)?.[1];
      const n = Number(byHeader ?? byPath ?? 0) % BAD_ANSWERS.length;
      BAD_ANSWERS[n]!(s);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, address: `127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/**
 * One raw exchange: what came back (latin1), or '' when the gateway closed without a word. `halfClose`
 * ends the client's side after the request, which the gateway takes as the client leaving (as nginx does).
 */
function exchange(port: number, data: Buffer, waitMs: number, halfClose: boolean): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => sock.destroy(), waitMs);
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    sock.on('connect', () => (halfClose ? sock.end(data) : sock.write(data)));
  });
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

describe('fuzzing the edge: hostile requests and misbehaving upstreams', () => {
  let gw: Gateway;
  let port = 0;
  let echo: Upstream;
  let bad: { server: TcpServer; address: string };
  let idp: Server;
  let sign: (claims: Record<string, unknown>) => Promise<string>;

  before(async () => {
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    idp = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
    const jwksUri = `http://127.0.0.1:${(idp.address() as AddressInfo).port}/certs`;
    sign = (claims) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).sign(privateKey);

    echo = await upstream('echo');
    bad = await misbehaving();
    const started = await staticGateway({ accessLog: false, oidc: { jwksCooldownMs: 0 }, server: { headersTimeoutMs: 1000, requestTimeoutMs: 3000, connectionsCheckingIntervalMs: 100 } });
    gw = started.gw;
    port = Number(new URL(gw.url).port);
    started.governance.set({
      instances: [instance('echo-1', 'echo', echo.address), instance('bad-1', 'bad', bad.address), instance('authz-1', 'authz', bad.address), instance('alt-1', 'alt', echo.address)],
      trafficPolicies: [],
      faultTolerance: [],
    });
    const anon = { auth: { mode: 'anonymous' } };
    const oidc = { issuer: ISSUER, jwksUri, audiences: ['web'], claimHeaders: { email: 'x-email', tenant: 'x-tenant' }, requiredScopes: ['shop'] };
    started.routes.set([
      route('api', { ...anon, match: { path: { prefix: '/api' } }, service: 'echo', rewrite: { prefix: '/' }, retries: { attempts: 2 }, mirror: { service: 'bad', percent: 50 } }),
      route('orders', { ...anon, match: { path: { template: '/orders/:id/items/:item' } }, service: 'echo', rewrite: { path: '/o/:item/:id' } }),
      route('regex', { ...anon, match: { path: { regex: '^/re/[a-z%0-9]+$' }, headers: { 'x-tenant': { regex: '^a' } } }, service: 'echo' }),
      route('query', { ...anon, match: { path: { prefix: '/q' }, query: { variant: { regex: '^[ab]$' }, 'x y': { prefix: 'z' } } }, service: 'echo' }),
      route('split', { ...anon, match: { path: { prefix: '/split' } }, split: { backends: [{ service: 'echo', weight: 50 }, { service: 'alt', weight: 50 }], stickyBy: 'clientIp' } }),
      route('redirect', { ...anon, match: { path: { prefix: '/old' } }, redirect: { prefix: '/new', status: 308 } }),
      route('https', { ...anon, hosts: ['plain.example'], match: { path: { prefix: '/' } }, redirect: { scheme: 'https' } }),
      route('static', { ...anon, match: { path: { exact: '/robots.txt' } }, static: { status: 200, body: 'User-agent: *' } }),
      route('cors', { ...anon, match: { path: { prefix: '/cors' } }, service: 'echo', cors: { allowOrigins: ['https://shop.example'], allowMethods: ['GET', 'PUT'], allowHeaders: ['content-type'], allowCredentials: true } }),
      route('gz', { ...anon, match: { path: { prefix: '/gz' } }, service: 'bad', compression: { minBytes: 10 }, streamIdleTimeoutMs: 500 }),
      route('bad', { ...anon, match: { path: { prefix: '/bad' } }, service: 'bad', timeoutMs: 1000, responseHeaders: { set: { 'x-edge': '1' }, remove: ['x-big'] } }),
      route('small', { ...anon, match: { path: { prefix: '/small' } }, service: 'echo', maxBodyBytes: 64 }),
      route('grpc', { ...anon, match: { path: { prefix: '/pkg.Svc' } }, service: 'bad' }),
      route('oidc', { match: { path: { prefix: '/me' } }, service: 'echo', auth: { mode: 'oidc', oidc } }),
      route('ext', { match: { path: { prefix: '/ext' } }, service: 'echo', auth: { mode: 'external', external: { service: 'authz', path: '/check', requestHeaders: ['authorization', 'x-answer'], upstreamHeaders: ['x-authz-team'], userHeader: 'x-authz-user', timeoutMs: 300 } } }),
      route('jwt', { match: { path: { prefix: '/jwt' } }, service: 'echo' }),
    ]);
  });

  after(async () => {
    await gw?.close();
    await echo?.close();
    bad?.server.close();
    idp?.close();
  });

  const PATHS = [
    '/api/x', '/api', '/apix', '/orders/7/items/9', '/orders//items/9', '/orders/%zz/items/%00', '/re/abc', '/re/a%2Fb', '/q', '/q/x', '/split/a',
    '/old/a/b', '/robots.txt', '/cors/x', '/gz/1', '/bad/', '/small', '/pkg.Svc/Method', '/me', '/ext/x', '/jwt/x', '/a/../../api/x',
    '/%2e%2e/%2E%2e/api', '/api/./x/../y', '//api', '/api/%', '/api/%ff%fe', '/api/\u00e9', '/', '*', 'http://evil.example/api', '/nowhere',
  ];
  const METHODS = ['GET', 'GET', 'GET', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'DELETE', 'PATCH', 'CONNECT', 'TRACE', 'BREW', 'get', 'PRI'];
  const WEIRD = ['', ' ', '\t', 'x'.repeat(9000), '%', '%zz', '\u00ff', '-1', '0', '1e999', 'NaN', '18446744073709551616', 'null', '{}', '"', ',,,', ';;', '=', 'a=b=c', '../..'];

  function jwtish(r: Rand): string {
    const part = () => (r() < 0.5 ? b64url(JSON.stringify({ alg: pick(r, ['RS256', 'none', 'HS256', 'ES512', '']), kid: pick(r, ['k1', 'k2', '', '../']), typ: 'JWT', crit: r() < 0.1 ? ['x'] : undefined })) : b64url(bytes(r, int(r, 40))));
    return [part(), part(), part(), ...(r() < 0.1 ? [part()] : [])].join('.');
  }

  async function claimsToken(r: Rand): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const claims: Record<string, unknown> = {
      iss: r() < 0.9 ? ISSUER : pick(r, [ISSUER + '/', 42, null]),
      aud: pick(r, ['web', ['web', 'x'], 'other', 7, [], ['web', { a: 1 }]]),
      sub: pick(r, ['u1', '', 'x'.repeat(5000), 42, 'User:admin', 'u\r\nx-injected: 1', 'ü日本', null, ['a']]),
      exp: pick(r, [now + 300, now - 10, 'soon', 1e20, -1, now + 300]),
      scope: pick(r, ['shop', 'shop other', '', 7, ['shop'], 'shop\u0000']),
      email: pick(r, ['a@b.example', 'ünicode@例え.jp', 'a\r\nb', 42, { x: 1 }, '', undefined]),
      tenant: pick(r, ['acme', ['a', 'b'], '\u007f', 'x'.repeat(8000), true]),
    };
    if (r() < 0.3) claims.nbf = pick(r, [now + 1000, 'x', now - 1]);
    return sign(claims);
  }

  function header(r: Rand, token: string): [string, string] {
    const name = pick(r, [
      'host', 'content-length', 'transfer-encoding', 'expect', 'connection', 'upgrade', 'sec-websocket-key', 'sec-websocket-version', 'origin',
      'access-control-request-method', 'accept-encoding', 'authorization', 'cookie', 'traceparent', 'tracestate', 'baggage', 'plinth-timeout-ms',
      'grpc-timeout', 'content-type', 'x-forwarded-for', 'x-forwarded-proto', 'forwarded', 'idempotency-key', 'range', 'if-none-match', 'te',
      'x-tenant', 'x-answer', 'plinth-identity', 'plinth-caller', 'x-email', 'x-authz-user', 'x-lane', 'accept', ':path', 'x-http-method-override',
    ]);
    const value = (() => {
      switch (name) {
        case 'host':
          return pick(r, ['shop.example', 'plain.example', 'plain.example:8080', '[::1]:99999', 'a@evil.example', 'evil.example/x', '', '[', 'x'.repeat(300), 'ÿ.example']);
        case 'content-length':
          return pick(r, ['0', '5', '-1', '1e3', '99999999999999999999', '5, 6', ' 5 ', 'abc']);
        case 'transfer-encoding':
          return pick(r, ['chunked', 'gzip, chunked', 'chunked, chunked', 'identity', 'Chunked', 'x']);
        case 'connection':
          return pick(r, ['close', 'upgrade', 'keep-alive, x-a', 'te, upgrade', 'host']);
        case 'upgrade':
          return pick(r, ['websocket', 'h2c', 'WebSocket', 'tls/1.0', '']);
        case 'sec-websocket-key':
          return pick(r, ['dGhlIHNhbXBsZSBub25jZQ==', 'short', '', '=====']);
        case 'origin':
          return pick(r, ['https://shop.example', 'null', 'https://evil.example', '*', '']);
        case 'access-control-request-method':
          return pick(r, ['PUT', 'put', 'GET', 'BREW', '', 'GET, PUT']);
        case 'accept-encoding':
          return pick(r, ['br', 'gzip;q=0.5, br;q=abc', '*;q=0', 'identity;q=0', 'gzip;q=2', 'br;q=1;q=0', ';', 'x'.repeat(3000)]);
        case 'authorization':
          return pick(r, [`Bearer ${token}`, `Bearer ${jwtish(r)}`, 'Bearer', 'Bearer  ', 'Basic abc', `ApiKey ${pick(r, WEIRD)}`, 'bearer x.y.z']);
        case 'traceparent':
          return pick(r, ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '00-00000000000000000000000000000000-00f067aa0ba902b7-01', 'ff-x-y-z', '00-' + 'g'.repeat(32) + '-' + '0'.repeat(16) + '-01', '']);
        case 'baggage':
          return pick(r, ['plinth.lane=gray', 'plinth.stress=1', 'user.id=%zz', 'a=b;prop', ',,=,', 'user.id=' + 'x'.repeat(9000), 'plinth.lane=%E0%A4%A']);
        case 'plinth-timeout-ms':
        case 'grpc-timeout':
          return pick(r, ['10', '1S', '99999999999H', '-5', 'm', '0', '1e3', '1u']);
        case 'content-type':
          return pick(r, ['application/json', 'application/grpc', 'application/grpc-web-text', 'application/grpc-web+proto', 'multipart/form-data; boundary=', 'text/plain; charset=ü']);
        case 'x-forwarded-for':
          return pick(r, ['10.0.0.1', 'not-an-ip', '1.2.3.4, ::1, ', '[::1]:80', '999.1.1.1']);
        case 'x-answer':
          return String(int(r, BAD_ANSWERS.length));
        default:
          return pick(r, [...WEIRD, 'gray', '1', 'bytes=0-1,5-', '"etag"']);
      }
    })();
    return [name, value];
  }

  /** Half the cases are well-formed requests with odd values (they reach the routes); half are hostile at every layer. */
  async function request(r: Rand): Promise<{ data: Buffer; hostile: boolean }> {
    const hostile = r() < 0.5;
    const method = hostile ? pick(r, METHODS) : pick(r, METHODS.slice(0, 8));
    let target = pick(r, hostile ? PATHS : PATHS.filter((p) => /^\/[\x21-\x7e]*$/.test(p)));
    if (target.startsWith('/bad') || target.startsWith('/gz')) target += String(int(r, BAD_ANSWERS.length));
    if (r() < 0.5) target += '?' + Array.from({ length: 1 + int(r, 3) }, () => `${pick(r, ['variant', 'x+y', 'x%20y', '%zz', '', 'a'])}=${pick(r, ['a', 'b', 'zz', '%62', '%', '+', ''])}`).join(pick(r, ['&', ';', '&&']));
    const token = await claimsToken(r);
    const lines = [`${method} ${target} ${hostile ? pick(r, ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x']) : 'HTTP/1.1'}`];
    if (!hostile || r() < 0.9) lines.push('host: shop.example');
    // The gateway closes after its answer, so the exchange ends without the client leaving first.
    if (!hostile) lines.push('connection: close');
    const n = int(r, hostile ? 7 : 4);
    let chunked = false;
    let length: number | undefined;
    for (let i = 0; i < n; i++) {
      const [k, v] = header(r, token);
      // Framing is the hostile cases' business; the others keep to headers node's parser takes.
      if (!hostile && (k === 'transfer-encoding' || k === 'content-length' || k === 'host' || k === 'connection' || k === ':path' || v.length > 4000 || /[^\x20-\x7e]/.test(v))) continue;
      if (k === 'transfer-encoding' && v.endsWith('chunked')) chunked = true;
      if (k === 'content-length') length = Number(v);
      lines.push(`${k}: ${v}`);
    }
    if (target.startsWith('/me') && r() < 0.7) lines.push(`authorization: Bearer ${token}`);
    let body: Buffer = Buffer.alloc(0);
    if (chunked) body = Buffer.from(pick(r, ['5\r\nhello\r\n0\r\n\r\n', 'zz\r\n', '3\r\nab', '0\r\n\r\n', `ffffffffff\r\n${'a'.repeat(100)}`, '1;ext=1\r\na\r\n0\r\nx-t: 1\r\n\r\n']));
    else if (length !== undefined && Number.isSafeInteger(length) && length >= 0 && length < 100_000) body = bytes(r, r() < 0.8 ? length : int(r, 200));
    else if (!hostile && (method === 'POST' || method === 'PUT')) {
      body = bytes(r, int(r, 3000));
      lines.push(`content-length: ${body.length}`);
    } else if (hostile && r() < 0.2) body = bytes(r, int(r, 100));
    let data: Buffer = Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
    if (hostile && r() < 0.5) {
      // Byte-level damage: flips, inserted CR, LF, NUL and high bytes, cut endings.
      const out = [...data];
      for (let i = 0, m = 1 + int(r, 4); i < m; i++) {
        const at = int(r, out.length);
        const op = r();
        if (op < 0.3) out[at] = int(r, 256);
        else if (op < 0.6) out.splice(at, 0, pick(r, [0x0d, 0x0a, 0x00, 0x80, 0xff, 0x20, 0x3a]));
        else if (op < 0.8) out.splice(at, 1);
        else out.length = at;
      }
      data = Buffer.from(out);
    }
    return { data, hostile };
  }

  it('turns every kind of broken upstream answer into a clean one, for requests and WebSocket handshakes alike', async () => {
    const seen: string[] = [];
    for (let n = 0; n < BAD_ANSWERS.length; n++) {
      for (const ws of [false, true]) {
        const upgrade = ws ? 'connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n' : 'connection: close\r\n';
        const answer = await exchange(port, Buffer.from(`GET /bad/${n} HTTP/1.1\r\nhost: shop.example\r\n${upgrade}\r\n`), 3000, false);
        const status = /^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1] ?? (answer === '' ? 'closed' : 'garbled');
        seen.push(`${n}${ws ? ' ws' : ''}: ${status}`);
        assert.ok(status !== '500' && status !== 'garbled' && Number(status) < 600, `answer ${n}${ws ? ' (handshake)' : ''}: ${JSON.stringify(answer.slice(0, 300))}`);
      }
    }
    // Framing that breaks before the body, a status HTTP does not have, no HTTP at all, and a reset are the
    // upstream's failures; a body cut after its first bytes can only be cut (3).
    for (const n of [4, 5, 9, 10, 11]) assert.ok(seen.includes(`${n}: 502`), `answer ${n}: ${seen.join(', ')}`);
    assert.ok(seen.includes('9 ws: 502'), seen.join(', '));
    assert.ok(seen.includes('0: 200') && seen.includes('3: 200'), seen.join(', '));
    assert.ok(seen.includes('22: 200'), `an answer after 103 Early Hints passes, the hints dropped: ${seen.join(', ')}`);
  });

  it('answers every hostile request with a clean status and keeps serving, with nothing left in flight', async () => {
    const seed = Number(process.env.PLINTH_FUZZ_SEED ?? 0x5eed);
    const cases = Number(process.env.PLINTH_FUZZ_CASES ?? 1500);
    const statuses = new Map<string, number>();
    const failures: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < cases) {
          const i = next++;
          const r = rng(seed + i * 7919);
          const { data, hostile } = await request(r);
          const answer = await exchange(port, data, 4000, hostile);
          const status = /^HTTP\/1\.[01] (\d{3}) /.exec(answer)?.[1] ?? (answer === '' ? 'closed' : 'garbled');
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          if (process.env.PLINTH_FUZZ_DEBUG && status === process.env.PLINTH_FUZZ_DEBUG && !hostile) console.log(JSON.stringify(data.toString('latin1').slice(0, 300)), '=>', JSON.stringify(answer.slice(0, 300)));
          if (status === '500' || status === 'garbled') failures.push(`case ${i} (seed ${seed}): ${status}\n  sent ${JSON.stringify(data.toString('latin1').slice(0, 600))}\n  got ${JSON.stringify(answer.slice(0, 400))}`);
        }
      }),
    );
    if (process.env.PLINTH_FUZZ_DEBUG !== undefined) console.log(JSON.stringify([...statuses].sort()));
    assert.deepEqual(failures.slice(0, 5), [], `statuses ${JSON.stringify([...statuses].sort())}`);
    assert.ok((statuses.get('200') ?? 0) > cases / 20, `some requests went through: ${JSON.stringify([...statuses])}`);
    assert.ok([...statuses.keys()].some((s) => s >= '400' && s < '500'));
    assert.ok([...statuses.keys()].some((s) => s === '502' || s === '503' || s === '504'));
    await until('nothing left in flight', () => gw.inFlight() === 0, 8000);
    const after = await call(`${gw.url}/api/after`);
    assert.equal(after.status, 200, 'the gateway serves on');
  });
});
