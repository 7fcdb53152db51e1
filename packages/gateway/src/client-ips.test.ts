/**
 * A Route's clientIps at the edge, on loopback: the address the gateway sees, or behind trustProxy the one
 * the nearest trusted proxy saw, decides before authentication; HTTP requests and WebSocket handshakes alike.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Gateway } from './gateway.js';
import { call, instance, open, refused, route, staticGateway, upstream, wsUpstream, type Upstream, type WsUpstream } from './testkit.test.helpers.js';

const anon = { auth: { mode: 'anonymous' } };

describe('Route clientIps', () => {
  let direct: Gateway;
  let behindProxy: Gateway;
  let app: Upstream;
  let chat: WsUpstream;

  before(async () => {
    app = await upstream('app');
    chat = await wsUpstream('chat');
    const routes = [
      route('office', { ...anon, match: { path: { prefix: '/office' } }, service: 'app', clientIps: { allow: ['10.0.0.0/8', '2001:db8::/32'] } }),
      route('local', { ...anon, match: { path: { prefix: '/local' } }, service: 'app', clientIps: { allow: ['127.0.0.1', '::1'] } }),
      route('banned', { ...anon, match: { path: { prefix: '/banned' } }, service: 'app', clientIps: { allow: ['10.0.0.0/8'], deny: ['10.66.0.0/16'] } }),
      route('no-loopback', { ...anon, match: { path: { prefix: '/ws' } }, service: 'chat', clientIps: { deny: ['127.0.0.0/8'] } }),
      // Authentication comes after: a refused address learns nothing about the credentials a route wants.
      route('private', { match: { path: { prefix: '/private' } }, service: 'app', clientIps: { allow: ['10.0.0.0/8'] } }),
    ];
    const instances = [instance('app-1', 'app', app.address), instance('chat-1', 'chat', chat.address)];
    for (const extra of [{}, { trustProxy: 1 }]) {
      const g = await staticGateway({ accessLog: false, ...extra });
      g.governance.set({ instances });
      g.routes.set(routes);
      if ('trustProxy' in extra) behindProxy = g.gw;
      else direct = g.gw;
    }
  });

  after(async () => {
    await direct?.close();
    await behindProxy?.close();
    await app?.close();
    await chat?.close();
  });

  it('refuses an address outside allow with 403 ip_forbidden, and lets one inside through', async () => {
    const r = await call(`${direct.url}/office/x`);
    assert.equal(r.status, 403);
    assert.equal(r.headers['content-type'], 'application/problem+json');
    assert.equal(r.json().code, 'ip_forbidden');
    assert.match(String(r.json().detail), /127\.0\.0\.1 may not use this route/);
    assert.equal((await call(`${direct.url}/local/x`)).status, 200);
    const p = await call(`${direct.url}/private/x`);
    assert.equal(p.json().code, 'ip_forbidden', 'checked before the route asks for a token');
    const metrics = (await call(`${direct.adminUrl}/metrics`)).text;
    assert.match(metrics, /^plinth_gateway_rejections_total\{route="edge\/office",reason="ip_forbidden"\} 1$/m);
  });

  it('behind a trusted proxy, judges the address that proxy saw; deny wins over allow', async () => {
    const from = (ip: string) => ({ headers: { 'x-forwarded-for': ip } });
    assert.equal((await call(`${behindProxy.url}/office/x`, from('10.1.2.3'))).status, 200);
    assert.equal((await call(`${behindProxy.url}/office/x`, from('2001:db8::7'))).status, 200);
    assert.equal((await call(`${behindProxy.url}/office/x`, from('192.0.2.1'))).status, 403);
    assert.equal((await call(`${behindProxy.url}/banned/x`, from('10.66.1.1'))).status, 403);
    assert.equal((await call(`${behindProxy.url}/banned/x`, from('10.67.1.1'))).status, 200);
    assert.equal((await call(`${behindProxy.url}/office/x`, from('not-an-address'))).status, 403, 'what is not an address is in no allow list');
    // Without trustProxy the header is the client's word and is not believed.
    assert.equal((await call(`${direct.url}/office/x`, from('10.1.2.3'))).status, 403);
  });

  it('refuses a WebSocket handshake from a denied address', async () => {
    const r = refused(await open(`${direct.url.replace('http:', 'ws:')}/ws/room`));
    assert.equal(r.status, 403);
    assert.match(r.body, /ip_forbidden/);
  });
});
