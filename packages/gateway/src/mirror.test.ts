/**
 * A Route's `mirror` on loopback with real node:http upstreams: the copy reaches the shadow service with
 * the pressure-test mark, and the client's answer never waits for it or depends on it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { StaticGovernance } from '@plinth/sdk';
import type { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import { call, instance, route, sleep, staticGateway, until, upstream, type Upstream } from './testkit.test.helpers.js';

const anon = { auth: { mode: 'anonymous' } };

describe('Route mirror: shadow traffic', () => {
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let primary: Upstream;
  let shadow: Upstream;
  let stuck: Upstream;
  const held: (() => void)[] = [];

  const metric = async (route: string, outcome: string): Promise<number> => {
    const text = (await call(`${gw.adminUrl}/metrics`)).text;
    const m = new RegExp(`^plinth_gateway_mirrored_total\\{route="edge/${route}",outcome="${outcome}"\\} (\\d+)`, 'm').exec(text);
    return m === null ? 0 : Number(m[1]);
  };

  before(async () => {
    primary = await upstream('primary');
    shadow = await upstream('shadow', (_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('the shadow failed');
    });
    // Answers only when the test lets it, to show the primary does not wait.
    stuck = await upstream('stuck', (_req, res) => held.push(() => res.end('late')));
    ({ gw, governance, routes } = await staticGateway({ accessLog: false }));
    governance.set({
      instances: [instance('primary-1', 'orders', primary.address), instance('shadow-1', 'orders-next', shadow.address), instance('stuck-1', 'stuck', stuck.address), instance('gone-1', 'gone', '127.0.0.1:1')],
    });
    routes.set([
      route('mirrored', { ...anon, match: { path: { prefix: '/orders' } }, service: 'orders', mirror: { service: 'orders-next' }, requestHeaders: { set: { 'x-tenant': 'acme' } } }),
      route('never', { ...anon, match: { path: { prefix: '/never' } }, service: 'orders', mirror: { service: 'orders-next', percent: 0 } }),
      route('to-stuck', { ...anon, match: { path: { prefix: '/slow-shadow' } }, service: 'orders', mirror: { service: 'stuck' } }),
      route('to-gone', { ...anon, match: { path: { prefix: '/dead-shadow' } }, service: 'orders', mirror: { service: 'gone' } }),
      route('big', { ...anon, match: { path: { prefix: '/big' } }, service: 'orders', mirror: { service: 'orders-next' }, maxBodyBytes: 1024 * 1024 }),
    ]);
  });

  after(async () => {
    for (const release of held) release();
    await gw?.close();
    for (const u of [primary, shadow, stuck]) await u?.close();
  });

  it('sends a copy of each request, body included, to the mirror service with the pressure-test mark; the client gets the primary answer', async () => {
    const before = shadow.seen.length;
    const r = await call(`${gw.url}/orders/7?x=1`, { method: 'POST', headers: { 'content-type': 'application/json', baggage: 'region=eu' }, body: '{"qty":2}' });
    assert.equal(r.status, 200, "the shadow's 500 is not the client's answer");
    assert.equal(r.json().name, 'primary');
    await until('the copy', () => shadow.seen.length > before);
    const copy = shadow.seen.at(-1)!;
    const real = primary.seen.at(-1)!;
    assert.deepEqual([copy.method, copy.url, copy.body], ['POST', '/orders/7?x=1', '{"qty":2}']);
    assert.equal(copy.headers['x-tenant'], 'acme', "the route's header edits apply to the copy too");
    assert.match(String(copy.headers.baggage), /(^|,)plinth\.stress=1(,|$)/, 'the copy is marked as pressure-test traffic');
    assert.match(String(copy.headers.baggage), /region=eu/);
    assert.doesNotMatch(String(real.headers.baggage ?? ''), /plinth\.stress/, 'the real request is not');
    assert.equal(copy.headers.traceparent, real.headers.traceparent, 'the copy is in the same trace');
    await until('counted', async () => (await metric('mirrored', 'sent')) >= 1);
  });

  it('copies no request at percent 0', async () => {
    const before = shadow.seen.length;
    assert.equal((await call(`${gw.url}/never/1`)).status, 200);
    await sleep(50);
    assert.equal(shadow.seen.length, before);
  });

  it('answers the client without waiting for a slow mirror, and counts a mirror that cannot be reached as failed', async () => {
    const started = Date.now();
    assert.equal((await call(`${gw.url}/slow-shadow/1`)).status, 200);
    assert.ok(Date.now() - started < 1000, 'not held by the mirror');
    await until('the copy arrived', () => stuck.seen.length === 1);
    assert.equal((await call(`${gw.url}/dead-shadow/1`)).status, 200);
    await until('the failed copy counted', async () => (await metric('to-gone', 'failed')) === 1);
  });

  it('keeps copies in flight under mirrorMaxInFlight: past it a copy is skipped, not queued', async () => {
    const { gw: capped, governance: g, routes: r } = await staticGateway({ accessLog: false, mirrorMaxInFlight: 1 });
    try {
      g.set({ instances: [instance('primary-1', 'orders', primary.address), instance('stuck-1', 'stuck', stuck.address)] });
      r.set([route('to-stuck', { ...anon, match: { path: { prefix: '/' } }, service: 'orders', mirror: { service: 'stuck' } })]);
      const seen = stuck.seen.length;
      assert.equal((await call(`${capped.url}/a`)).status, 200);
      await until('the first copy is held by the mirror', () => stuck.seen.length === seen + 1);
      assert.equal((await call(`${capped.url}/b`)).status, 200);
      const skipped = async () => /^plinth_gateway_mirrored_total\{route="edge\/to-stuck",outcome="skipped"\} 1$/m.test((await call(`${capped.adminUrl}/metrics`)).text);
      await until('the second copy skipped', skipped);
      for (const release of held.splice(0)) release();
      await until('the first copy answered', async () => /^plinth_gateway_mirrored_total\{route="edge\/to-stuck",outcome="sent"\} 1$/m.test((await call(`${capped.adminUrl}/metrics`)).text));
      assert.equal((await call(`${capped.url}/c`)).status, 200);
      await until('a copy goes again once one finished', () => stuck.seen.length === seen + 2);
      assert.equal(stuck.seen.at(-1)!.url, '/c');
    } finally {
      for (const release of held.splice(0)) release();
      await capped.close();
    }
  });

  it('skips a body that streams through (it cannot be sent twice), and says so', async () => {
    const before = shadow.seen.length;
    const r = await call(`${gw.url}/big/1`, { method: 'PUT', body: Buffer.alloc(100 * 1024, 'x') });
    assert.equal(r.status, 200);
    assert.equal(primary.seen.at(-1)!.body.length, 100 * 1024);
    await until('counted as skipped', async () => (await metric('big', 'skipped')) === 1);
    assert.equal(shadow.seen.length, before);
  });
});
