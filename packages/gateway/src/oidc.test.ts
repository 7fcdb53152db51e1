/**
 * End users' tokens at the edge (auth mode oidc), on loopback: a local stand-in for an OpenID provider
 * publishes its JWKS over HTTP and signs tokens with jose, as Keycloak or Auth0 would; the gateway verifies
 * them, names the user upstream and in the baggage, and follows a key rotation.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { RouteSpec } from '@plinth/core';
import type { Gateway } from './gateway.js';
import { call, instance, resource, route, staticGateway, upstream, type Upstream } from './testkit.test.helpers.js';

const ISSUER = 'https://idp.example.com/realms/shop';
type Key = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

describe('auth mode oidc: end users’ tokens from an OpenID provider', () => {
  let idp: Server;
  let jwks: { keys: JWK[] } = { keys: [] };
  let jwksUrl = '';
  let jwksFetches = 0;
  let localIssuer = '';
  let liarIssuer = '';
  let rsa: Key;
  let ec: Key;
  let gw: Gateway;
  let base: Upstream;
  let gray: Upstream;

  const token = (claims: Record<string, unknown>, o: { key?: Key; kid?: string; alg?: string; issuer?: string; audience?: string; expires?: string | number } = {}) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: o.alg ?? 'RS256', kid: o.kid ?? 'rsa-1' })
      .setIssuer(o.issuer ?? ISSUER)
      .setAudience(o.audience ?? 'shop-web')
      .setIssuedAt()
      .setExpirationTime(o.expires ?? '5m')
      .sign(o.key ?? rsa);
  const bearer = (t: string, extra: Record<string, string> = {}) => ({ headers: { authorization: `Bearer ${t}`, ...extra } });

  before(async () => {
    const a = await generateKeyPair('RS256');
    const b = await generateKeyPair('ES256');
    rsa = a.privateKey;
    ec = b.privateKey;
    jwks = { keys: [{ ...(await exportJWK(a.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' }] };
    // Kept for the rotation: published only when the provider rotates.
    const next: JWK = { ...(await exportJWK(b.publicKey)), kid: 'ec-2', alg: 'ES256', use: 'sig' };
    idp = createServer((req, res) => {
      // Discovery documents: a provider's own, and one naming another issuer than the one it is fetched for.
      if (req.url === '/realms/local/.well-known/openid-configuration' || req.url === '/liar/.well-known/openid-configuration') {
        const issuer = req.url.startsWith('/liar') ? 'https://someone-else.example.com' : localIssuer;
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ issuer, jwks_uri: jwksUrl }));
      }
      if (req.url === '/rotate') {
        // Both published during the overlap, as providers rotate: old tokens stay good until they expire.
        jwks = { keys: [...jwks.keys, next] };
        return void res.end('rotated');
      }
      jwksFetches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(jwks));
    });
    await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
    const origin = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
    jwksUrl = `${origin}/protocol/openid-connect/certs`;
    localIssuer = `${origin}/realms/local`;
    liarIssuer = `${origin}/liar`;

    base = await upstream('base');
    gray = await upstream('gray');
    const started = await staticGateway({ accessLog: false, oidc: { jwksCooldownMs: 0 } });
    gw = started.gw;
    const oidc = { issuer: ISSUER, jwksUri: jwksUrl, audiences: ['shop-web'], claimHeaders: { email: 'x-user-email', tenant: 'x-tenant' } };
    started.governance.set({
      instances: [instance('shop-1', 'shop', base.address), instance('shop-gray', 'shop', gray.address, { lane: 'gray' })],
      // Half of the users, by a hash of user.id, take the gray lane: who a request is for decides where it goes.
      trafficPolicies: [resource<any>('TrafficPolicy', 'lanes', { lanes: [{ name: 'gray', services: ['shop'], mode: 'fallbackToBase', entry: [{ userIdHashPercent: 50 }] }], routing: [], loadBalancing: [], trustedIdentities: [] })],
      faultTolerance: [
        resource<any>('FaultTolerance', 'per-user', { rules: [{ name: 'per-user', targets: [{ service: 'shop', endpoints: ['/limited'] }], strategies: [{ type: 'rateLimit', threshold: 1, statDurationSec: 60, key: { source: 'identity' } }] }] }),
      ],
    });
    started.routes.set([
      route('shop', { match: { path: { prefix: '/' } }, service: 'shop', auth: { mode: 'oidc', oidc } }),
      route('orders', { match: { path: { prefix: '/orders' } }, service: 'shop', auth: { mode: 'oidc', oidc: { ...oidc, requiredScopes: ['orders:write'] } } }),
      // No jwksUri: the keys are found through the issuer's discovery document.
      route('discovered', { match: { path: { prefix: '/discovered' } }, service: 'shop', auth: { mode: 'oidc', oidc: { issuer: localIssuer, audiences: ['shop-web'] } } }),
      route('liar', { match: { path: { prefix: '/liar' } }, service: 'shop', auth: { mode: 'oidc', oidc: { issuer: liarIssuer, audiences: ['shop-web'] } } }),
    ]);
  });

  after(async () => {
    await gw?.close();
    await base?.close();
    await gray?.close();
    idp?.closeAllConnections();
    await new Promise<void>((r) => idp.close(() => r()));
  });

  it('admits a valid token, names the user upstream, passes its claims as headers, and never a client’s own', async () => {
    const t = await token({ sub: 'alice', email: 'alice@example.com' });
    const r = await call(`${gw.url}/cart`, bearer(t, { 'x-tenant': 'forged', 'x-user-email': 'mallory@example.com', 'plinth-identity': 'User:root', baggage: 'user.id=mallory' }));
    assert.equal(r.status, 200);
    const seen = [...base.seen, ...gray.seen].find((s) => s.url === '/cart')!;
    assert.equal(seen.headers['plinth-identity'], 'User:alice');
    assert.equal(seen.headers['plinth-identity-via'], 'oidc');
    assert.equal(seen.headers['x-user-email'], 'alice@example.com', 'the claim, not the client’s header');
    assert.equal(seen.headers['x-tenant'], undefined, 'a claim the token lacks is sent by nobody');
    assert.match(String(seen.headers.baggage), /(^|,)user\.id=alice(,|$)/, 'the verified user is user.id for the services behind');
    assert.doesNotMatch(String(seen.headers.baggage), /mallory/);
  });

  it('routes users into lanes by their verified id: the same user always lands on the same side', async () => {
    const sides = new Map<string, string>();
    for (const user of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8', 'u9', 'u10', 'u11', 'u12']) {
      const t = await token({ sub: user });
      for (let i = 0; i < 2; i++) {
        const r = await call(`${gw.url}/lane`, bearer(t));
        const side = String(r.json().name);
        if (sides.has(user)) assert.equal(side, sides.get(user), `${user} stays on ${sides.get(user)}`);
        sides.set(user, side);
      }
    }
    const used = new Set(sides.values());
    assert.deepEqual([...used].sort(), ['base', 'gray'], 'users are split between the lanes');
  });

  it('refuses what is not a valid token for the route: 401 with a bearer challenge, 403 for a missing scope', async () => {
    const cases: [string, Promise<string> | string, RegExp][] = [
      ['no token', '', /bearer token from the identity provider is required/],
      ['another audience', token({ sub: 'alice' }, { audience: 'other-app' }), /audience/],
      ['another issuer', token({ sub: 'alice' }, { issuer: 'https://evil.example.com' }), /another issuer/],
      ['expired', token({ sub: 'alice' }, { expires: Math.floor(Date.now() / 1000) - 3600 }), /expired/],
      ['an unknown key', token({ sub: 'alice' }, { kid: 'nope' }), /key the provider does not publish/],
      ['a shared-secret algorithm', new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' }).setIssuer(ISSUER).setAudience('shop-web').setExpirationTime('5m').sign(new TextEncoder().encode('x'.repeat(32))), /algorithm is not accepted/],
      ['no user', token({}), /does not name a user/],
      // The provider signed them, but RFC 7519's aud is a string or a list of strings: these name no audience.
      ['an audience that is a number', new SignJWT({ sub: 'alice', aud: 7 } as Record<string, unknown>).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setIssuer(ISSUER).setExpirationTime('5m').sign(rsa), /audience/],
      ['an audience list holding no strings', new SignJWT({ sub: 'alice', aud: [{ name: 'shop-web' }, 1] } as Record<string, unknown>).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setIssuer(ISSUER).setExpirationTime('5m').sign(rsa), /audience/],
      ['garbage', 'not.a.token', /malformed token/],
    ];
    for (const [what, t, detail] of cases) {
      const text = await t;
      const r = await call(`${gw.url}/cart`, text === '' ? {} : bearer(text));
      assert.equal(r.status, 401, what);
      assert.match(String(r.json().detail), detail, what);
      assert.equal(r.headers['www-authenticate'], 'Bearer realm="plinth"', what);
    }
    const good = await token({ sub: 'alice' });
    const tampered = good.slice(0, -4) + (good.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    assert.equal((await call(`${gw.url}/cart`, bearer(tampered))).status, 401, 'a tampered signature');

    const noScope = await call(`${gw.url}/orders/1`, bearer(await token({ sub: 'alice', scope: 'profile' })));
    assert.equal(noScope.status, 403);
    assert.match(String(noScope.json().detail), /lacks the scope orders:write/);
    assert.equal((await call(`${gw.url}/orders/1`, bearer(await token({ sub: 'alice', scope: 'profile orders:write' })))).status, 200);
    assert.equal((await call(`${gw.url}/orders/1`, bearer(await token({ sub: 'alice', scp: ['orders:write'] })))).status, 200, 'scp as a list (Entra ID, Okta)');
  });

  it('limits per user when a rate limit is keyed by identity', async () => {
    const alice = await token({ sub: 'alice-limited' });
    const bob = await token({ sub: 'bob-limited' });
    assert.equal((await call(`${gw.url}/limited`, bearer(alice))).status, 200);
    assert.equal((await call(`${gw.url}/limited`, bearer(alice))).status, 429);
    assert.equal((await call(`${gw.url}/limited`, bearer(bob))).status, 200, 'another user has a quota of their own');
  });

  it('follows a key rotation: a token signed by the new key is verified once the provider publishes it', async () => {
    const before = jwksFetches;
    const t = await token({ sub: 'carol' }, { key: ec, kid: 'ec-2', alg: 'ES256' });
    assert.equal((await call(`${gw.url}/cart`, bearer(t))).status, 401, 'not published yet');
    await call(jwksUrl.replace(/\/protocol.*/, '/rotate'));
    assert.equal((await call(`${gw.url}/cart`, bearer(t))).status, 200);
    assert.ok(jwksFetches > before, 'the unknown key id made the gateway fetch the keys again');
    // A verified token is cached: asking again does not go to the provider.
    const fetched = jwksFetches;
    assert.equal((await call(`${gw.url}/cart`, bearer(t))).status, 200);
    assert.equal(jwksFetches, fetched);
  });

  it("finds the provider's keys through its discovery document when the route names no jwksUri", async () => {
    assert.equal((await call(`${gw.url}/discovered/1`, bearer(await token({ sub: 'dora' }, { issuer: localIssuer })))).status, 200);
    const other = await call(`${gw.url}/discovered/1`, bearer(await token({ sub: 'dora' })));
    assert.equal(other.status, 401, 'a token of another issuer is still refused');
    const liar = await call(`${gw.url}/liar/1`, bearer(await token({ sub: 'dora' }, { issuer: liarIssuer })));
    assert.equal(liar.status, 503);
    assert.match(String(liar.json().detail), /names another issuer/);
  });

  it('answers 503 auth_unavailable while the provider’s keys cannot be fetched', async () => {
    const { gw: other, governance, routes } = await staticGateway({ accessLog: false });
    try {
      governance.set({ instances: [instance('shop-1', 'shop', base.address)] });
      routes.set([route('shop', { match: { path: { prefix: '/' } }, service: 'shop', auth: { mode: 'oidc', oidc: { issuer: ISSUER, jwksUri: 'http://127.0.0.1:1/certs', audiences: ['shop-web'] } } })]);
      const r = await call(`${other.url}/cart`, bearer(await token({ sub: 'alice' })));
      assert.equal(r.status, 503);
      assert.equal(r.json().code, 'auth_unavailable');
    } finally {
      await other.close();
    }
  });

  it('takes an oidc route with its defaults: the user named by sub', () => {
    const spec = RouteSpec.parse({ match: { path: { prefix: '/' } }, service: 'shop', auth: { mode: 'oidc', oidc: { issuer: ISSUER, jwksUri: 'https://idp.example.com/certs', audiences: ['shop-web'] } } });
    assert.equal(spec.auth.oidc?.userClaim, 'sub');
  });
});
