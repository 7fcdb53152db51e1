/**
 * Auth mode external at the edge, on loopback: a real node:http authorization service speaking the
 * ForwardAuth convention (2xx lets through, anything else is the answer), a real upstream, a real gateway.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FaultToleranceSpec } from '@plinth/core';
import type { StaticGovernance } from '@plinth/sdk';
import type { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import { call, closed, instance, open, opened, refused, resource, roundTrip, route, sleep, staticGateway, upstream, wsUpstream, type Upstream, type WsUpstream } from './testkit.test.helpers.js';

/** Decides by the session cookie, as a login proxy (oauth2-proxy, Authelia) does. */
async function authzService(): Promise<Upstream> {
  return upstream('authz', (req, res) => {
    const cookie = String(req.headers.cookie ?? '');
    if (cookie.includes('session=alice')) {
      res.writeHead(200, { 'x-user': 'alice', 'x-tenant': 'acme', 'x-internal': 'not for upstream' });
      return res.end('ignored');
    }
    if (cookie.includes('session=nameless')) {
      res.writeHead(204, { 'x-tenant': 'acme' });
      return res.end();
    }
    if (cookie.includes('session=expired')) {
      res.writeHead(302, { location: 'https://login.example.com/?rd=%2Fapp', 'set-cookie': ['csrf=1; HttpOnly', 'rd=%2Fapp'], 'x-internal': 'no' });
      return res.end();
    }
    if (cookie.includes('session=boom')) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      return res.end('stack trace the client must not see');
    }
    if (cookie.includes('session=slow')) return void setTimeout(() => (res.writeHead(200, { 'x-user': 'late' }), res.end()), 800);
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Cookie realm="shop"' });
    res.end(JSON.stringify({ error: 'log in first' }));
  });
}

describe('gateway auth mode external (ForwardAuth)', () => {
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let log: Record<string, unknown>[];
  let authz: Upstream;
  let app: Upstream;
  let chat: WsUpstream;
  const external = { service: 'authz', path: '/verify', requestHeaders: ['cookie'], upstreamHeaders: ['x-tenant'], userHeader: 'x-user', timeoutMs: 300 };

  before(async () => {
    authz = await authzService();
    app = await upstream('app');
    chat = await wsUpstream('chat');
    ({ gw, governance, routes, log } = await staticGateway());
    governance.set({
      instances: [instance('authz-1', 'authz', authz.address), instance('app-1', 'app', app.address), instance('chat-1', 'chat', chat.address)],
      trafficPolicies: [resource<any>('TrafficPolicy', 'lanes', { lanes: [{ name: 'gray', services: ['app'], mode: 'fallbackToBase', entry: [{ userIdHashPercent: 100 }] }], routing: [], loadBalancing: [], trustedIdentities: [] })],
      faultTolerance: [resource('FaultTolerance', 'per-user', FaultToleranceSpec.parse({ rules: [{ name: 'per-user', targets: [{ service: 'app', endpoints: ['/limited'] }], strategies: [{ type: 'rateLimit', threshold: 1, statDurationSec: 60, key: { source: 'identity' } }] }] }))],
    });
    routes.set([
      route('app', { match: { path: { prefix: '/app' } }, service: 'app', auth: { mode: 'external', external } }),
      route('chat', { match: { path: { exact: '/chat' } }, service: 'chat', auth: { mode: 'external', external } }),
      route('limited', { match: { path: { exact: '/limited' } }, service: 'app', auth: { mode: 'external', external } }),
      route('headers-only', { match: { path: { prefix: '/plain' } }, service: 'app', auth: { mode: 'external', external: { service: 'authz', requestHeaders: ['cookie'], upstreamHeaders: ['x-tenant'] } } }),
      route('nowhere', { match: { path: { prefix: '/nowhere' } }, service: 'app', auth: { mode: 'external', external: { service: 'no-such-authz' } } }),
    ]);
    await sleep(50);
  });

  after(async () => {
    await gw?.close();
    await Promise.all([authz?.close(), app?.close(), chat?.close()]);
  });

  it("asks the service about each request, as ForwardAuth does, and lets an allowed one through with the user and the service's headers", async () => {
    const r = await call(`${gw.url}/app/orders?x=1`, { method: 'POST', body: 'order', headers: { cookie: 'session=alice', authorization: 'Bearer not-for-authz', 'x-tenant': 'forged', 'x-user': 'mallory', 'content-type': 'text/plain' } });
    assert.equal(r.status, 200, r.text);
    const check = authz.seen.at(-1)!;
    assert.equal(check.method, 'GET');
    assert.equal(check.url, '/verify');
    assert.equal(check.body, '', 'the request body stays with the request');
    assert.equal(check.headers['x-forwarded-method'], 'POST');
    assert.equal(check.headers['x-forwarded-uri'], '/app/orders?x=1');
    assert.equal(check.headers['x-forwarded-proto'], 'http');
    assert.equal(check.headers['x-forwarded-host'], new URL(gw.url).host);
    assert.equal(check.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(check.headers.cookie, 'session=alice');
    assert.equal(check.headers.authorization, undefined, 'only the headers the route names');
    const seen = app.seen.at(-1)!;
    assert.equal(seen.body, 'order');
    assert.equal(seen.headers['x-tenant'], 'acme', "the service's value, never the client's");
    assert.equal(seen.headers['x-user'], 'alice');
    assert.equal(seen.headers['x-internal'], undefined);
    assert.equal(seen.headers['plinth-identity'], 'User:alice');
    assert.equal(seen.headers['plinth-identity-via'], 'external');
    assert.match(String(seen.headers.baggage), /user\.id=alice/);
    await sleep(20);
    assert.equal(log.find((l) => l.path === '/app/orders')?.identity, 'User:alice');
  });

  it('keys lanes and limits by the user the service named', async () => {
    assert.equal((await call(`${gw.url}/limited`, { headers: { cookie: 'session=alice' } })).status, 200);
    const second = await call(`${gw.url}/limited`, { headers: { cookie: 'session=alice' } });
    assert.equal(second.status, 429, 'one call a minute per identity');
    assert.match(String(app.seen.at(-1)!.headers.baggage), /plinth\.lane=gray/, 'a user-hash lane entered by the verified user');
  });

  it("passes the service's refusals to the client as it gave them, and never reaches the upstream", async () => {
    const before = app.seen.length;
    const anonymous = await call(`${gw.url}/app/orders`);
    assert.equal(anonymous.status, 401);
    assert.deepEqual(anonymous.json(), { error: 'log in first' });
    assert.equal(anonymous.headers['content-type'], 'application/json');
    assert.equal(anonymous.headers['www-authenticate'], 'Cookie realm="shop"');
    const expired = await call(`${gw.url}/app/orders`, { headers: { cookie: 'session=expired' } });
    assert.equal(expired.status, 302, 'a login redirect reaches the browser');
    assert.equal(expired.headers.location, 'https://login.example.com/?rd=%2Fapp');
    assert.deepEqual(expired.headers['set-cookie'], ['csrf=1; HttpOnly', 'rd=%2Fapp']);
    assert.equal(expired.headers['x-internal'], undefined, 'only the clientHeaders the route names');
    assert.equal(app.seen.length, before);
    await sleep(20);
    assert.equal(log.find((l) => l.path === '/app/orders' && l.status === 401)?.reason, 'unauthenticated');
  });

  it('decides WebSocket handshakes the same way', async () => {
    const wsUrl = `${gw.url.replace('http:', 'ws:')}/chat`;
    const ws = await opened(wsUrl, { cookie: 'session=alice', 'x-user': 'mallory' });
    assert.equal(await roundTrip(ws, 'hi'), 'chat:hi');
    assert.equal(chat.handshakes.at(-1)!.headers['x-user'], 'alice');
    assert.equal(chat.handshakes.at(-1)!.headers['x-tenant'], 'acme');
    ws.close();
    await closed(ws);
    const expired = refused(await open(wsUrl, { cookie: 'session=expired' }));
    assert.equal(expired.status, 302);
    assert.equal(expired.headers.location, 'https://login.example.com/?rd=%2Fapp');
    assert.equal(refused(await open(wsUrl)).status, 401);
  });

  it('answers 503 when the service cannot decide: a 5xx, no answer in time, no instance, no user named', async () => {
    const before = app.seen.length;
    const boom = await call(`${gw.url}/app/x`, { headers: { cookie: 'session=boom' } });
    assert.equal(boom.status, 503);
    assert.equal(boom.json().code, 'auth_unavailable');
    assert.doesNotMatch(boom.text, /stack trace/);
    const started = Date.now();
    const slow = await call(`${gw.url}/app/x`, { headers: { cookie: 'session=slow' } });
    assert.equal(slow.status, 503);
    assert.ok(Date.now() - started < 750, 'the route budget of 300 ms, not the service, decides how long');
    const nowhere = await call(`${gw.url}/nowhere`, { headers: { cookie: 'session=alice' } });
    assert.equal(nowhere.status, 503);
    assert.match(String(nowhere.json().detail), /no-such-authz/);
    const nameless = await call(`${gw.url}/app/x`, { headers: { cookie: 'session=nameless' } });
    assert.equal(nameless.status, 503, 'a route that names its user header needs the user');
    assert.equal(app.seen.length, before, 'nothing reached the upstream');
  });

  it("sends the service's headers without an identity when the route names no user header", async () => {
    const r = await call(`${gw.url}/plain/a`, { headers: { cookie: 'session=nameless', 'x-tenant': 'forged' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(authz.seen.at(-1)!.url, '/', 'the default path');
    const seen = app.seen.at(-1)!;
    assert.equal(seen.headers['x-tenant'], 'acme');
    assert.equal(seen.headers['plinth-identity'], undefined);
    const refused = await call(`${gw.url}/plain/a`, { headers: { 'x-tenant': 'forged' } });
    assert.equal(refused.status, 401);
  });
});
