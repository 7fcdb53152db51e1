/**
 * The admin port's route endpoints on a gateway with static sources: what the table holds, what it could not
 * compile, and where a given request would go.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Gateway } from './gateway.js';
import { call, route, staticGateway } from './testkit.test.helpers.js';

const anon = { auth: { mode: 'anonymous' } };

describe('admin /routes and /routes/match', () => {
  let gw: Gateway;

  before(async () => {
    const started = await staticGateway({ accessLog: false });
    gw = started.gw;
    started.routes.set([
      route('orders', { match: { path: { template: '/api/orders/:id' } }, service: 'orders', rewrite: { path: '/v2/orders/:id' } }),
      route('gray', { ...anon, hosts: ['shop.example.com'], match: { path: { prefix: '/api' }, headers: { 'x-lane': { exact: 'gray' } } }, service: 'shop-gray' }),
      route('robots', { ...anon, match: { path: { exact: '/robots.txt' } }, static: { status: 200, body: 'User-agent: *' } }),
      route('broken', { ...anon, match: { path: { regex: '([' } }, service: 'nowhere' }),
    ]);
  });

  after(async () => {
    await gw?.close();
  });

  it('lists the routes served and the ones that could not be compiled, with why', async () => {
    const r = await call(`${gw.adminUrl}/routes`);
    assert.equal(r.status, 200);
    const body = r.json() as { routes: { id: string; service: string | null; static: boolean; auth: string }[]; errors: string[] };
    assert.deepEqual(body.routes.map((x) => [x.id, x.service, x.static, x.auth]).sort(), [
      ['edge/gray', 'shop-gray', false, 'anonymous'],
      ['edge/orders', 'orders', false, 'jwt'],
      ['edge/robots', null, true, 'anonymous'],
    ]);
    assert.equal(body.errors.length, 1);
    assert.match(body.errors[0]!, /broken/);
  });

  it('tells which route a request takes and the path it sends upstream', async () => {
    const m = async (q: string) => call(`${gw.adminUrl}/routes/match?${q}`);
    const orders = await m('method=get&host=api.example.com:443&path=/api/orders/42?x=1');
    assert.equal(orders.status, 200);
    assert.deepEqual(orders.json().match, { route: 'edge/orders', service: 'orders', split: null, static: false, redirect: null, auth: 'jwt', upstreamPath: '/v2/orders/42?x=1', params: ['42'] });
    const gray = await m('method=GET&host=shop.example.com&path=/api/cart&header.X-Lane=gray');
    assert.equal((gray.json().match as { route: string }).route, 'edge/gray', 'headers take part as they would on a request');
    assert.equal((await m('method=GET&host=shop.example.com&path=/api/cart')).status, 404, 'without the header no route matches');
    assert.equal(((await m('path=/robots.txt')).json().match as { upstreamPath: string | null }).upstreamPath, null, 'a static answer sends nothing upstream');
    const bad = await m('method=BREW&path=/x');
    assert.equal(bad.status, 400);
    assert.equal(bad.headers['content-type'], 'application/problem+json');
    assert.equal((await m('method=GET')).status, 400, 'a path is required');
  });
});
