/**
 * The gateway end to end on loopback with static governance sources: real node:http upstreams, real
 * sockets for the malformed and slow cases. Identity (JWKS, API keys) and discovery through a real control
 * plane are in auth.test.ts and sidecar.test.ts.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Headers } from '@plinth/core';
import { StaticGovernance } from '@plinth/sdk';
import { REPLAYABLE_BYTES } from './body.js';
import { checkGateway, type Gateway } from './gateway.js';
import { StaticFeed } from './feed.js';
import { call, instance, raw, resource, route, sleep, staticGateway, until, upstream, type Upstream } from './testkit.test.helpers.js';

const anon = { auth: { mode: 'anonymous' } };

describe('gateway (static sources)', () => {
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let log: Record<string, unknown>[];
  let echo: Upstream;
  let gray: Upstream;
  let flaky: Upstream;
  let slow: Upstream;
  let reset: Upstream;
  let hop: Upstream;
  let legacy: Upstream;
  let broken: Upstream;
  let flakyCalls = 0;

  before(async () => {
    echo = await upstream('echo');
    gray = await upstream('gray');
    flaky = await upstream('flaky', (_req, res) => {
      flakyCalls++;
      res.writeHead(flakyCalls % 2 === 1 ? 503 : 200, { 'content-type': 'text/plain' });
      res.end(flakyCalls % 2 === 1 ? 'busy' : 'ok');
    });
    slow = await upstream('slow', (_req, res) => {
      setTimeout(() => {
        if (!res.destroyed) res.end('late');
      }, 400);
    });
    reset = await upstream('reset', (req) => req.socket.destroy());
    // /broken/head: a head, then a body cut short before a byte of it; /broken/midway: part of the body, then the cut.
    broken = await upstream('broken', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' });
      if (req.url === '/broken/midway') res.write('x'.repeat(40));
      else res.flushHeaders();
      setTimeout(() => res.socket?.destroy(), 30);
    });
    hop = await upstream('hop', (req, res) => {
      if (req.url === '/hop/trailers') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('part');
        res.addTrailers({ 'x-checksum': 'abc' });
        res.end();
        return;
      }
      res.writeHead(200, [ 'connection', 'x-hop-resp', 'x-hop-resp', '1', 'keep-alive', 'timeout=1', 'x-fine', '1' ]);
      res.end('hop');
    });
    legacy = await upstream('legacy');
    ({ gw, governance, routes, log } = await staticGateway({ server: { headersTimeoutMs: 300, requestTimeoutMs: 5000, connectionsCheckingIntervalMs: 50 } }));
    governance.set({
      instances: [
        instance('echo-1', 'echo', echo.address),
        instance('echo-gray', 'echo', gray.address, { lane: 'gray' }),
        instance('flaky-1', 'flaky', flaky.address),
        instance('slow-1', 'slow', slow.address),
        instance('reset-1', 'reset', reset.address),
        instance('hop-1', 'hop', hop.address),
        instance('legacy-1', 'legacy', legacy.address),
        instance('broken-1', 'broken', broken.address),
      ],
      trafficPolicies: [resource<any>('TrafficPolicy', 'lanes', { lanes: [{ name: 'gray', services: ['echo'], mode: 'fallbackToBase', entry: [{ match: { headers: { 'x-lane': { exact: 'gray' } } } }] }], routing: [], loadBalancing: [], trustedIdentities: [] })],
      faultTolerance: [
        resource<any>('FaultTolerance', 'limits', {
          rules: [
            { name: 'per-route', targets: [{ service: 'echo', endpoints: ['/limited'] }], strategies: [{ type: 'rateLimit', threshold: 2, statDurationSec: 60 }] },
            { name: 'per-ip', targets: [{ service: 'echo', endpoints: ['/per-ip'] }], strategies: [{ type: 'rateLimit', threshold: 1, statDurationSec: 60, key: { source: 'ip' } }] },
          ],
        }),
      ],
    });
    routes.set([
      route('api', { ...anon, match: { path: { prefix: '/api' } }, service: 'echo', rewrite: { prefix: '/' } }),
      route('limited', { ...anon, match: { path: { exact: '/limited' } }, service: 'echo' }),
      route('per-ip', { ...anon, match: { path: { exact: '/per-ip' } }, service: 'echo' }),
      route('to-https', { ...anon, hosts: ['plain.example'], match: { path: { prefix: '/' } }, redirect: { scheme: 'https', status: 301 } }),
      route('moved', { ...anon, match: { path: { template: '/item/:id' } }, redirect: { host: 'shop.example.com', path: '/products/:id', status: 308 } }),
      route('migrate', { ...anon, match: { path: { prefix: '/migrate' } }, split: { backends: [{ service: 'echo', weight: 75 }, { service: 'legacy', weight: 25 }] } }),
      route('sticky', { ...anon, match: { path: { prefix: '/sticky' } }, split: { backends: [{ service: 'echo', weight: 50 }, { service: 'legacy', weight: 50 }], stickyBy: 'clientIp' } }),
      route('variant-b', { ...anon, match: { path: { prefix: '/variant' }, query: { variant: { exact: 'b' } } }, service: 'legacy' }),
      route('variant', { ...anon, match: { path: { prefix: '/variant' } }, service: 'echo' }),
      route('robots', { ...anon, match: { path: { exact: '/robots.txt' } }, static: { status: 200, body: 'User-agent: *', headers: { 'content-type': 'text/plain', 'cache-control': 'max-age=60' } } }),
      route('flaky', { ...anon, match: { path: { prefix: '/flaky' } }, service: 'flaky', retries: { attempts: 3 } }),
      // The same upstream paths as `flaky`, without retries; and a regex route with its own.
      route('flaky-once', { ...anon, match: { path: { prefix: '/once' } }, service: 'flaky', rewrite: { prefix: '/flaky' } }),
      route('flaky-regex', { ...anon, match: { path: { regex: '^/re/[a-z]+$' } }, service: 'flaky', retries: { attempts: 2, on: [503] } }),
      route('slow', { ...anon, match: { path: { prefix: '/slow' } }, service: 'slow', timeoutMs: 100 }),
      route('reset', { ...anon, match: { path: { prefix: '/reset' } }, service: 'reset' }),
      route('broken', { ...anon, match: { path: { prefix: '/broken' } }, service: 'broken' }),
      route('hop', { ...anon, match: { path: { prefix: '/hop' } }, service: 'hop' }),
      route('small', { ...anon, match: { path: { prefix: '/small' } }, service: 'echo', maxBodyBytes: 1000 }),
      route('edited', {
        ...anon,
        match: { path: { prefix: '/edited' } },
        service: 'echo',
        requestHeaders: { set: { 'X-Tenant': 'acme' }, add: { 'x-tag': 'edge' }, remove: ['x-debug'] },
        responseHeaders: { set: { 'cache-control': 'no-store' }, add: { 'x-served-by': 'plinth' }, remove: ['x-upstream'] },
      }),
      route('cors', { ...anon, match: { path: { prefix: '/cors' } }, service: 'echo', cors: { allowOrigins: ['https://shop.example.com'], allowMethods: ['GET', 'PUT'], allowHeaders: ['content-type'], exposeHeaders: ['x-upstream'], allowCredentials: true } }),
    ]);
  });

  after(async () => {
    await gw.close();
    for (const u of [echo, gray, flaky, slow, reset, hop, legacy, broken]) await u.close();
  });

  it('forwards with X-Forwarded-* and Forwarded, drops hop-by-hop headers both ways, rewrites the prefix, keeps the query', async () => {
    const before = echo.seen.length;
    const answer = await raw(gw.url, 'GET /api/orders?x=1 HTTP/1.1\r\nhost: shop.test\r\nconnection: close, x-hop\r\nx-hop: secret\r\nkeep-alive: timeout=5\r\nte: gzip, trailers\r\nx-keep: yes\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.match(answer, /x-upstream: echo/);
    const s = echo.seen[before]!;
    assert.equal(s.url, '/orders?x=1');
    assert.equal(s.headers['x-keep'], 'yes');
    assert.equal(s.headers['x-hop'], undefined, 'a header named in Connection is hop-by-hop');
    assert.equal(s.headers['keep-alive'], undefined);
    assert.equal(s.headers.te, undefined);
    await raw(gw.url, 'GET /api/te HTTP/1.1\r\nhost: shop.test\r\nconnection: close\r\nte: trailers\r\n\r\n');
    assert.equal(echo.seen.at(-1)!.headers.te, 'trailers', 'TE: trailers alone, the one TE an HTTP/2 hop carries (gRPC asks for it), goes on');
    assert.equal(s.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(s.headers['x-forwarded-proto'], 'http');
    assert.equal(s.headers['x-forwarded-host'], 'shop.test');
    assert.equal(s.headers.forwarded, 'for=127.0.0.1;host=shop.test;proto=http');
    assert.equal(s.headers[Headers.caller], 'gateway');
    assert.match(String(s.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    assert.ok(Number(s.headers[Headers.timeout]) > 0, 'the remaining budget travels with the request');
    const hop = await raw(gw.url, 'GET /hop HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n');
    assert.match(hop, /x-fine: 1/);
    assert.doesNotMatch(hop, /x-hop-resp/i, 'a response header named in Connection is dropped');
    assert.doesNotMatch(hop, /keep-alive: timeout=1/i);
    const withTrailers = await raw(gw.url, 'GET /hop/trailers HTTP/1.1\r\nhost: a\r\nconnection: close\r\nte: trailers\r\n\r\n');
    assert.match(withTrailers, /transfer-encoding: chunked/i);
    assert.match(withTrailers, /\r\n0\r\nx-checksum: abc\r\n\r\n$/, 'trailers of a chunked answer are passed on');
  });

  it('answers a static route itself and 404 problem+json when no route matches', async () => {
    const r = await call(`${gw.url}/robots.txt`);
    assert.equal(r.status, 200);
    assert.equal(r.text, 'User-agent: *');
    assert.equal(r.headers['content-type'], 'text/plain');
    assert.equal(r.headers['cache-control'], 'max-age=60');
    const n = await call(`${gw.url}/nowhere`);
    assert.equal(n.status, 404);
    assert.equal(n.headers['content-type'], 'application/problem+json');
    assert.equal(n.json().code, 'route_not_found');
  });

  it('answers redirect routes with a Location built from the request, and refuses to build one from a Host that is no host', async () => {
    const https = await call(`${gw.url}/cart/items?x=1`, { headers: { host: 'plain.example:8080' } });
    assert.equal(https.status, 301);
    assert.equal(https.headers.location, 'https://plain.example/cart/items?x=1');
    assert.equal(https.text, '');
    const moved = await call(`${gw.url}/item/42?ref=mail`, { method: 'POST', body: 'kept by 308' });
    assert.equal(moved.status, 308);
    assert.equal(moved.headers.location, `http://shop.example.com:${new URL(gw.url).port}/products/42?ref=mail`, 'the scheme and port the client used');
    // The route keeps the client's port, which a Host that is no host name cannot give.
    const evil = await raw(gw.url, 'GET /item/1 HTTP/1.1\r\nhost: a@evil.example\r\nconnection: close\r\n\r\n');
    assert.match(evil, /^HTTP\/1\.1 400 /);
    assert.match(evil, /no host name to redirect to/);
    assert.doesNotMatch(evil, /location:/i);
    const match = (await (await fetch(`${gw.adminUrl}/routes/match?host=plain.example&path=/a?b=c&scheme=http`)).json()) as { match: { redirect: unknown } };
    assert.deepEqual(match.match.redirect, { status: 301, location: 'https://plain.example/a?b=c' });
  });

  it('splits a route across services by weight, sticky by client address when told', async () => {
    const counts = { echo: 0, legacy: 0 };
    for (let i = 0; i < 400; i++) {
      const r = await call(`${gw.url}/migrate/cart`);
      assert.equal(r.status, 200);
      counts[r.headers['x-upstream'] as 'echo' | 'legacy']++;
    }
    // 25 % of 400: a standard deviation of about 8.7.
    assert.ok(counts.legacy > 55 && counts.legacy < 145, `legacy took ${counts.legacy} of 400`);
    assert.equal(counts.echo + counts.legacy, 400);
    const drawn = (await (await fetch(`${gw.adminUrl}/routes/match?path=/sticky/a&ip=127.0.0.1`)).json()) as { match: { service: string; split: { stickyBy: string } } };
    assert.equal(drawn.match.split.stickyBy, 'clientIp');
    for (let i = 0; i < 20; i++) assert.equal((await call(`${gw.url}/sticky/a`)).headers['x-upstream'], drawn.match.service, 'one client address, one backend (the one the admin API names)');
    assert.equal((drawn.match.service === 'legacy' ? legacy : echo).seen.at(-1)?.url, '/sticky/a', 'the path goes on unchanged');
    await until('the access log names the service drawn', () => log.some((l) => l.path === '/sticky/a'));
    assert.deepEqual(new Set(log.filter((l) => l.path === '/sticky/a').map((l) => l.service)), new Set([drawn.match.service]));
    const migrated = new Set(log.filter((l) => l.route === 'edge/migrate').map((l) => l.service));
    assert.deepEqual(migrated, new Set(['echo', 'legacy']));
  });

  it('matches query parameters, decoded, before the same path without them', async () => {
    assert.equal((await call(`${gw.url}/variant/x?variant=b`)).headers['x-upstream'], 'legacy');
    assert.equal((await call(`${gw.url}/variant/x?ref=1&variant=%62`)).headers['x-upstream'], 'legacy');
    assert.equal((await call(`${gw.url}/variant/x?variant=a`)).headers['x-upstream'], 'echo');
    assert.equal((await call(`${gw.url}/variant/x`)).headers['x-upstream'], 'echo');
    assert.equal(legacy.seen.at(-1)?.url, '/variant/x?ref=1&variant=%62', 'the query goes upstream as the client wrote it');
    const m = (await (await fetch(`${gw.adminUrl}/routes/match?path=${encodeURIComponent('/variant/x?variant=b')}`)).json()) as { match: { route: string } };
    assert.equal(m.match.route, 'edge/variant-b');
  });

  it('retries an idempotent call on the route statuses, never a POST', async () => {
    flakyCalls = 0;
    const r = await call(`${gw.url}/flaky/a`);
    assert.equal(r.status, 200);
    assert.equal(r.text, 'ok');
    assert.equal(flakyCalls, 2, 'the 503 was retried once');
    flakyCalls = 0;
    const p = await call(`${gw.url}/flaky/a`, { method: 'POST', body: 'x' });
    assert.equal(p.status, 503);
    assert.equal(p.text, 'busy');
    assert.equal(flakyCalls, 1);
  });

  it("retries per route: another route to the same upstream paths keeps its own (none), a regex route has its own", async () => {
    flakyCalls = 0;
    const once = await call(`${gw.url}/once/a`);
    assert.equal(once.status, 503, 'no retries on this route, though /flaky retries the same upstream path');
    assert.equal(flakyCalls, 1);
    assert.equal(flaky.seen.at(-1)!.url, '/flaky/a');
    flakyCalls = 0;
    const re = await call(`${gw.url}/re/abc`);
    assert.equal(re.status, 200);
    assert.equal(flakyCalls, 2);
  });

  it('sends a body that streams through once, and retries a buffered one, on the same engine', async () => {
    flakyCalls = 0;
    const streamed = await call(`${gw.url}/flaky/put`, { method: 'PUT', body: Buffer.alloc(REPLAYABLE_BYTES + 1, 'b') });
    assert.equal(streamed.status, 503, 'the 503 is the answer: the body cannot be sent again');
    assert.equal(flakyCalls, 1);
    assert.equal(flaky.seen.at(-1)!.body.length, REPLAYABLE_BYTES + 1);
    flakyCalls = 0;
    const buffered = await call(`${gw.url}/flaky/put`, { method: 'PUT', body: 'small' });
    assert.equal(buffered.status, 200);
    assert.equal(flakyCalls, 2);
    assert.deepEqual(
      flaky.seen.slice(-2).map((s) => s.body),
      ['small', 'small'],
    );
  });

  it('answers 504 when the route timeout passes, 502 problem when the upstream resets, and keeps serving', async () => {
    const t = await call(`${gw.url}/slow`);
    assert.equal(t.status, 504);
    assert.equal(t.json().code, 'deadline_exceeded');
    const r = await call(`${gw.url}/reset`);
    assert.equal(r.status, 502);
    assert.equal(r.json().code, 'upstream_error');
    assert.equal((await call(`${gw.url}/api/ok`)).status, 200);
  });

  it('answers 502 whole when an upstream breaks off before any of its body, and logs a cut midway as its 502', async () => {
    const whole = await call(`${gw.url}/broken/head`);
    assert.equal(whole.status, 502, 'nothing had gone to the client: it is told, not left with a closed connection');
    assert.equal(whole.json().code, 'upstream_error');
    assert.match(String(whole.json().detail), /broken broke off its answer/);
    const cut = await raw(gw.url, 'GET /broken/midway HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n');
    assert.match(cut, /^HTTP\/1\.1 200 /, 'the head and the first bytes had gone: all HTTP/1.1 allows is the cut');
    assert.ok(!cut.endsWith('x'.repeat(100)));
    await until('both log lines', () => log.filter((l) => String(l.path).startsWith('/broken/')).length === 2);
    for (const l of log.filter((x) => String(x.path).startsWith('/broken/'))) {
      assert.equal(l.status, 502, `${l.path} is the upstream's failure`);
      assert.equal(l.reason, 'upstream_error');
    }
    const m = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(m, /plinth_gateway_requests_total\{route="edge\/broken",status_class="5xx"\} 2/, 'not counted as clients that left');
  });

  it('refuses bodies over maxBodyBytes with 413, by length or while streaming, and forwards others intact', async () => {
    const big = await call(`${gw.url}/small`, { method: 'POST', body: 'x'.repeat(2000) });
    assert.equal(big.status, 413);
    assert.equal(big.json().code, 'body_too_large');
    const chunked = await raw(gw.url, `POST /small HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n7d0\r\n${'y'.repeat(2000)}\r\n0\r\n\r\n`);
    assert.match(chunked, /^HTTP\/1\.1 413/);
    const before = echo.seen.length;
    const ok = await call(`${gw.url}/small`, { method: 'POST', body: 'hello' });
    assert.equal(ok.status, 200);
    assert.equal(echo.seen[before]!.body, 'hello');
    // Larger than the replay buffer: streamed through.
    const body = Buffer.alloc(200 * 1024, 'z');
    const s = await call(`${gw.url}/api/upload`, { method: 'PUT', body });
    assert.equal(s.status, 200);
    assert.equal(echo.seen.at(-1)!.body.length, body.length);
  });

  it("edits the request and the answer by the route's requestHeaders and responseHeaders", async () => {
    const r = await call(`${gw.url}/edited/x`, { headers: { 'x-tenant': 'evil', 'x-tag': 'client', 'x-debug': 'on', 'x-kept': 'yes' } });
    assert.equal(r.status, 200);
    const s = echo.seen.at(-1)!;
    assert.equal(s.url, '/edited/x');
    assert.equal(s.headers['x-tenant'], 'acme', 'set replaces what the client sent');
    assert.equal(s.headers['x-tag'], 'client, edge', "add goes beside the client's value");
    assert.equal(s.headers['x-debug'], undefined, 'removed');
    assert.equal(s.headers['x-kept'], 'yes');
    assert.equal(s.headers['x-forwarded-for'], '127.0.0.1', "the gateway's own headers are still set");
    assert.equal(r.headers['cache-control'], 'no-store');
    assert.equal(r.headers['x-served-by'], 'plinth');
    assert.equal(r.headers['x-upstream'], undefined, "the upstream's header is removed");
    assert.equal(r.headers['content-type'], 'application/json');
    const plain = await call(`${gw.url}/api/x`, { headers: { 'x-debug': 'on' } });
    assert.equal(echo.seen.at(-1)!.headers['x-debug'], 'on', 'other routes are not edited');
    assert.equal(plain.headers['x-upstream'], 'echo');
  });

  it('answers CORS preflights at the edge and adds CORS headers to allowed origins', async () => {
    const before = echo.seen.length;
    const pre = await call(`${gw.url}/cors/x`, { method: 'OPTIONS', headers: { origin: 'https://shop.example.com', 'access-control-request-method': 'PUT' } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], 'https://shop.example.com');
    assert.equal(pre.headers['access-control-allow-methods'], 'GET, PUT');
    assert.equal(pre.headers['access-control-allow-headers'], 'content-type');
    assert.equal(pre.headers['access-control-allow-credentials'], 'true');
    assert.equal(pre.headers['access-control-max-age'], '600');
    assert.equal(echo.seen.length, before, 'the preflight never reached the upstream');
    const denied = await call(`${gw.url}/cors/x`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'PUT' } });
    assert.equal(denied.status, 403);
    assert.equal(denied.json().code, 'cors_rejected');
    const real = await call(`${gw.url}/cors/x`, { headers: { origin: 'https://shop.example.com' } });
    assert.equal(real.status, 200);
    assert.equal(real.headers['access-control-allow-origin'], 'https://shop.example.com');
    assert.equal(real.headers['access-control-expose-headers'], 'x-upstream');
    const other = await call(`${gw.url}/cors/x`, { headers: { origin: 'https://evil.example' } });
    assert.equal(other.headers['access-control-allow-origin'], undefined);
  });

  it('strips spoofed identity headers, the caller name and internal baggage from untrusted clients', async () => {
    const before = echo.seen.length;
    await call(`${gw.url}/api/me`, {
      headers: { 'plinth-identity': 'ServiceAccount:edge/admin', 'plinth-identity-roles': 'admin', 'plinth-identity-x': '1', [Headers.caller]: 'billing', baggage: 'plinth.stress=1,plinth.lane=gray,user.id=42,region=eu' },
    });
    const s = echo.seen[before]!;
    assert.equal(s.headers['plinth-identity'], undefined);
    assert.equal(s.headers['plinth-identity-roles'], undefined);
    assert.equal(s.headers['plinth-identity-x'], undefined);
    assert.equal(s.headers[Headers.caller], 'gateway');
    assert.equal(s.headers.baggage, 'region=eu');
    assert.equal(s.headers['x-upstream'], undefined);
    assert.equal(echo.seen.length, before + 1, 'the spoofed lane did not route to the gray instance');
  });

  it('enters lanes by the TrafficPolicy entry rules and routes to the lane instances', async () => {
    const g0 = gray.seen.length;
    const r = await call(`${gw.url}/api/lane`, { headers: { 'x-lane': 'gray' } });
    assert.equal(r.headers['x-upstream'], 'gray');
    assert.match(String(gray.seen[g0]!.headers.baggage), /plinth\.lane=gray/);
    const b = await call(`${gw.url}/api/lane`);
    assert.equal(b.headers['x-upstream'], 'echo');
  });

  it('applies FaultTolerance rate limits of the route service: per endpoint, and per client IP (X-Forwarded-For is not believed without trustProxy)', async () => {
    assert.equal((await call(`${gw.url}/limited`)).status, 200);
    assert.equal((await call(`${gw.url}/limited`)).status, 200);
    const r = await call(`${gw.url}/limited`);
    assert.equal(r.status, 429);
    assert.equal(r.json().code, 'rate_limited');
    assert.ok(r.headers['retry-after'] !== undefined);
    assert.match(String(r.headers['ratelimit-policy']), /q=2;w=60/);
    assert.match(String(r.headers.ratelimit), /r=0/);
    assert.equal((await call(`${gw.url}/api/free`)).status, 200, 'other endpoints are not limited');
    // Without a trusted proxy every request comes from 127.0.0.1: the second is refused.
    assert.equal((await call(`${gw.url}/per-ip`, { headers: { 'x-forwarded-for': '10.0.0.1' } })).status, 200);
    assert.equal((await call(`${gw.url}/per-ip`, { headers: { 'x-forwarded-for': '10.0.0.2' } })).status, 429);
  });

  it('writes one JSON access-log line per request with the trace id the upstream saw', async () => {
    const before = echo.seen.length;
    await call(`${gw.url}/api/logged`, { headers: { traceparent: '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01' } });
    await sleep(50);
    const line = log.findLast((l) => l.path === '/api/logged');
    assert.ok(line, 'logged');
    assert.equal(line.traceId, '0123456789abcdef0123456789abcdef');
    assert.match(String(echo.seen[before]!.headers.traceparent), /^00-0123456789abcdef0123456789abcdef-/);
    assert.equal(line.route, 'edge/api');
    assert.equal(line.status, 200);
    assert.equal(line.method, 'GET');
    assert.equal(line.upstream, echo.address);
    assert.equal(typeof line.durationMs, 'number');
    const limited = log.findLast((l) => l.path === '/limited' && l.status === 429);
    assert.equal(limited?.reason, 'rate_limited');
  });

  it('exposes Prometheus metrics on the admin listener', async () => {
    const m = await call(`${gw.adminUrl}/metrics`);
    assert.equal(m.status, 200);
    assert.match(m.text, /plinth_gateway_requests_total\{route="edge\/api",status_class="2xx"\} \d+/);
    assert.match(m.text, /plinth_gateway_rejections_total\{route="edge\/limited",reason="rate_limited"\} 1/);
    assert.match(m.text, /plinth_gateway_upstream_endpoints\{service="echo"\} 2/);
    assert.match(m.text, /plinth_gateway_request_duration_seconds_bucket/);
    assert.equal((await call(`${gw.adminUrl}/readyz`)).status, 200);
  });

  it('answers malformed requests, oversized headers and stalled clients cleanly and keeps serving', async () => {
    assert.match(await raw(gw.url, 'GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.match(await raw(gw.url, `GET /api HTTP/1.1\r\nhost: a\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`), /^HTTP\/1\.1 431/);
    assert.match(await raw(gw.url, 'GET /api HTTP/1.1\r\nhost: a\r\nx-slow: ', 3000), /^HTTP\/1\.1 408/);
    assert.match(await raw(gw.url, 'GET http://other/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.equal((await call(`${gw.url}/api/still`)).status, 200);
  });

  it('applies a changed Route to the next request while a request in flight finishes on its old route', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const a = await upstream('a', (_req, res) => void held.then(() => res.end('from-a')));
    const b = await upstream('b', (_req, res) => res.end('from-b'));
    governance.set({ instances: [...liveInstances(), instance('a-1', 'svc-a', a.address), instance('b-1', 'svc-b', b.address)] });
    const base = [...routes.list()];
    routes.set([...base, route('live', { ...anon, match: { path: { prefix: '/live' } }, service: 'svc-a' })]);
    const inFlight = call(`${gw.url}/live`);
    while (a.seen.length === 0) await sleep(5);
    routes.set([...base, route('live', { ...anon, match: { path: { prefix: '/live' } }, service: 'svc-b' })]);
    assert.equal((await call(`${gw.url}/live`)).text, 'from-b');
    release();
    const first = await inFlight;
    assert.equal(first.status, 200);
    assert.equal(first.text, 'from-a');
    await a.close();
    await b.close();
  });

  it('streams a large answer at the pace of a slow client, holding the upstream back instead of buffering it', async () => {
    const CHUNK = 256 * 1024;
    const TOTAL = 64 * 1024 * 1024;
    let written = 0;
    const big = await upstream('big', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(TOTAL) });
      const pump = (): void => {
        while (written < TOTAL) {
          const chunk = Buffer.alloc(CHUNK, (written / CHUNK) % 251);
          written += CHUNK;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    governance.set({ instances: [...liveInstances(), instance('big-1', 'big', big.address)] });
    const base = [...routes.list()];
    routes.set([...base, route('big', { ...anon, match: { path: { prefix: '/big' } }, service: 'big' })]);
    try {
      const { request } = await import('undici');
      const r = await request(`${gw.url}/big/file`);
      assert.equal(r.statusCode, 200);
      // The client reads nothing for a while: socket buffers fill, then the gateway stops reading the upstream.
      await sleep(600);
      const stalledAt = written;
      assert.ok(stalledAt < TOTAL * 0.75, `the upstream wrote ${stalledAt} of ${TOTAL} bytes while the client read none`);
      let got = 0;
      let wrong = 0;
      for await (const c of r.body as AsyncIterable<Buffer>) {
        for (let i = 0; i < c.length; i += 4096) if (c[i] !== Math.floor((got + i) / CHUNK) % 251) wrong++;
        got += c.length;
      }
      assert.equal(got, TOTAL);
      assert.equal(wrong, 0, 'every byte in its place');
    } finally {
      routes.set(base);
      await big.close();
    }
  });

  function liveInstances() {
    return [
      instance('echo-1', 'echo', echo.address),
      instance('echo-gray', 'echo', gray.address, { lane: 'gray' }),
      instance('flaky-1', 'flaky', flaky.address),
      instance('slow-1', 'slow', slow.address),
      instance('reset-1', 'reset', reset.address),
      instance('hop-1', 'hop', hop.address),
    ];
  }
});

describe('gateway shutdown', () => {
  it('finishes requests in flight, refuses new connections, and closes idle kept-alive ones', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const up = await upstream('held', (_req, res) => void held.then(() => res.end('done')));
    const { gw, governance, routes } = await staticGateway({ accessLog: false });
    governance.set({ instances: [instance('h-1', 'held', up.address)] });
    routes.set([route('all', { ...anon, match: { path: { prefix: '/' } }, service: 'held' })]);
    const inFlight = [call(`${gw.url}/1`), call(`${gw.url}/2`)];
    while (up.seen.length < 2) await sleep(5);
    const closed = gw.close();
    await sleep(50);
    await assert.rejects(call(`${gw.url}/late`), 'no new connection is accepted');
    release();
    const answers = await Promise.all(inFlight);
    assert.deepEqual(
      answers.map((a) => [a.status, a.text]),
      [
        [200, 'done'],
        [200, 'done'],
      ],
    );
    await closed;
    assert.equal(gw.inFlight(), 0);
    await up.close();
  });

  it('serves a request that arrives during the drain on a connection accepted before it, with connection: close', async () => {
    const up = await upstream('late');
    const { gw, governance, routes } = await staticGateway({ accessLog: false });
    governance.set({ instances: [instance('l-1', 'late', up.address)] });
    routes.set([route('all', { ...anon, match: { path: { prefix: '/' } }, service: 'late' })]);
    const u = new URL(gw.url);
    // Accepted, its request not all there when the drain begins, as a worker sharing a port sees it.
    const fresh = connect(Number(u.port), u.hostname);
    await new Promise<void>((r) => fresh.once('connect', () => r()));
    const text = new Promise<string>((resolve) => {
      let t = '';
      fresh.on('data', (c: Buffer) => (t += c.toString()));
      fresh.on('close', () => resolve(t));
    });
    // Its first bytes read before the drain begins: the gateway holds the connection, with no request in flight.
    fresh.write('GET /fresh HTTP/1.1\r\n');
    await sleep(50);
    const closed = gw.close();
    await sleep(100);
    fresh.write('host: x\r\n\r\n');
    const answer = await text;
    await closed;
    assert.match(answer, /^HTTP\/1\.1 200 /, answer);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.deepEqual(up.seen.map((r) => r.url), ['/fresh']);
    await up.close();
  });

  it('is not ready while draining', async () => {
    const hang = createServer(() => {});
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', () => r()));
    const { gw, governance, routes } = await staticGateway({ accessLog: false, drainTimeoutMs: 300 });
    governance.set({ instances: [instance('x-1', 'x', `127.0.0.1:${(hang.address() as { port: number }).port}`)] });
    routes.set([route('all', { ...anon, match: { path: { prefix: '/' } }, service: 'x' })]);
    const stuck = call(`${gw.url}/`).catch((e: Error) => e);
    await sleep(50);
    const closed = gw.close();
    const ready = await call(`${gw.adminUrl}/readyz`);
    assert.equal(ready.status, 503);
    assert.equal(ready.json().reason, 'draining');
    await closed;
    assert.ok((await stuck) instanceof Error, 'a request past the drain timeout has its connection closed');
    hang.closeAllConnections();
    hang.close();
  });
});

describe('checkGateway (plinth gateway --check)', () => {
  it('compiles the Routes a start would serve and names those it would ignore, without listening', async () => {
    const governance = new StaticGovernance();
    const routes = new StaticFeed([route('bad', { match: { path: {} } }), route('good', { ...anon, service: 's', match: { path: { exact: '/' } } })]);
    const found = await checkGateway({ namespace: 'edge', governance, routes, listen: '127.0.0.1:1' });
    assert.equal(found.routes, 1);
    assert.equal(found.routeErrors.length, 1);
    assert.match(found.routeErrors[0]!, /^Route edge\/bad: /);
  });

  it('refuses what a start would refuse: option combinations, unreadable TLS files, a sidecar app it cannot front', async () => {
    const governance = new StaticGovernance();
    await assert.rejects(checkGateway({ namespace: 'edge', governance, h2c: true, tls: { cert: '/nonexistent/c.pem', key: '/nonexistent/k.pem' } }), { name: 'TypeError', message: /h2c is cleartext HTTP\/2/ });
    await assert.rejects(checkGateway({ namespace: 'edge', governance, tls: { cert: '/nonexistent/c.pem', key: '/nonexistent/k.pem' } }), /cannot read the TLS certificate \/nonexistent\/c\.pem: no such file/);
    await assert.rejects(checkGateway({ namespace: 'edge', governance, sidecar: { app: 'ftp://127.0.0.1:21', service: 'x', version: '1' } }), { name: 'TypeError', message: /sidecar app must be an http:\/\/ URL/ });
    await assert.rejects(checkGateway({ namespace: 'edge' }), /give either controlPlane or governance/);
  });
});
