/**
 * The fuzzers' shared parts: a seeded generator, the grammar of request parts routes read, upstreams that
 * misbehave on purpose, and an edge gateway with a route of every kind in front of them.
 */
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { GatewayOptions } from './gateway.js';
import { instance, route, staticGateway, upstream, wsUpstream, type Upstream, type WsUpstream } from './testkit.test.helpers.js';

/** mulberry32: a failing case replays from its seed; neighbouring seeds give unrelated streams. */
export function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (x + 0x6d2b79f5) >>> 0;
    let t = Math.imul(x ^ (x >>> 15), 1 | x);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 0x100000000;
  };
}

/**
 * The generator of case `i` of a campaign: seed and index are mixed by multiplication, so two campaigns of
 * different seeds share no case (with `seed + i`, seeds 7 and 8 would run the same cases shifted by one).
 */
export function caseRng(seed: number, i: number): () => number {
  return rng((Math.imul(seed, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0);
}

/**
 * Cases 0 to `cases - 1` of a campaign, `concurrency` at a time, each with its own generator (`caseRng`).
 */
export async function campaign(seed: number, cases: number, concurrency: number, run: (i: number, r: Rand) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < cases) {
        const i = next++;
        await run(i, caseRng(seed, i));
      }
    }),
  );
}

export type Rand = () => number;
export const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
export const int = (r: Rand, n: number): number => Math.floor(r() * n);
export const bytes = (r: Rand, n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(r, 256)));

export const ISSUER = 'https://idp.fuzz.example';

/** Answers an upstream (or the authorization service) gives on purpose, by number; each is one connection's reply. */
export const BAD_ANSWERS: readonly ((s: Socket) => void)[] = [
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
export async function misbehaving(): Promise<{ server: TcpServer; address: string }> {
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

export const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

export interface FuzzEdge {
  readonly gw: Awaited<ReturnType<typeof staticGateway>>['gw'];
  readonly port: number;
  /** Every access-log line. */
  readonly log: Record<string, unknown>[];
  /** The plain upstream, which keeps every request it was sent. */
  readonly echo: Upstream;
  /** The WebSocket echo upstream (route `/ws`), which keeps every handshake. */
  readonly ws: WsUpstream;
  /** Signs claims with the key the oidc route's provider publishes. */
  sign(claims: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

/** The gateway under fuzzing: a route of every kind, an OpenID provider, a plain upstream, a misbehaving one (also the authorization service). */
export async function fuzzEdge(extra: Partial<GatewayOptions> = {}): Promise<FuzzEdge> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  const idp: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
  const jwksUri = `http://127.0.0.1:${(idp.address() as AddressInfo).port}/certs`;
  const sign = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).sign(privateKey);
  const echo = await upstream('echo');
  const ws = await wsUpstream('ws');
  const bad: { server: TcpServer; address: string } = await misbehaving();
  const started = await staticGateway({ oidc: { jwksCooldownMs: 0 }, ...extra, server: { headersTimeoutMs: 1000, requestTimeoutMs: 3000, connectionsCheckingIntervalMs: 100, ...extra.server } });
  const gw = started.gw;
  started.governance.set({
    instances: [instance('echo-1', 'echo', echo.address), instance('bad-1', 'bad', bad.address), instance('authz-1', 'authz', bad.address), instance('alt-1', 'alt', echo.address), instance('ws-1', 'ws', ws.address)],
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
    route('ws', { ...anon, match: { path: { prefix: '/ws' } }, service: 'ws' }),
  ]);
  return {
    gw,
    port: Number(new URL(gw.url).port),
    log: started.log,
    echo,
    ws,
    sign,
    async close() {
      await gw.close();
      await echo.close();
      await ws.close();
      bad.server.close();
      idp.close();
    },
  };
}

export const PATHS = [
  '/api/x', '/api', '/apix', '/orders/7/items/9', '/orders//items/9', '/orders/%zz/items/%00', '/re/abc', '/re/a%2Fb', '/q', '/q/x', '/split/a',
  '/old/a/b', '/robots.txt', '/cors/x', '/gz/1', '/bad/', '/small', '/pkg.Svc/Method', '/me', '/ext/x', '/jwt/x', '/a/../../api/x',
  '/%2e%2e/%2E%2e/api', '/api/./x/../y', '//api', '/api/%', '/api/%ff%fe', '/api/\u00e9', '/', '*', 'http://evil.example/api', '/nowhere',
];
export const METHODS = ['GET', 'GET', 'GET', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'DELETE', 'PATCH', 'CONNECT', 'TRACE', 'BREW', 'get', 'PRI'];
export const WEIRD = ['', ' ', '\t', 'x'.repeat(9000), '%', '%zz', '\u00ff', '-1', '0', '1e999', 'NaN', '18446744073709551616', 'null', '{}', '"', ',,,', ';;', '=', 'a=b=c', '../..'];

export function jwtish(r: Rand): string {
  const part = () => (r() < 0.5 ? b64url(JSON.stringify({ alg: pick(r, ['RS256', 'none', 'HS256', 'ES512', '']), kid: pick(r, ['k1', 'k2', '', '../']), typ: 'JWT', crit: r() < 0.1 ? ['x'] : undefined })) : b64url(bytes(r, int(r, 40))));
  return [part(), part(), part(), ...(r() < 0.1 ? [part()] : [])].join('.');
}

export async function claimsToken(r: Rand, sign: (claims: Record<string, unknown>) => Promise<string>): Promise<string> {
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

/** One request header of a name routes or the gateway read, with a value from its odd cases. */
export function header(r: Rand, token: string): [string, string] {
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

