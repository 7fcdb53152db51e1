/**
 * Identity at the edge against a REAL plinth server: JWTs it signs (verified against its JWKS, rotation
 * followed), API keys exchanged at its token endpoint, roles from its RoleBindings, trusted identities from
 * its TrafficPolicy, and per-identity rate limits from its FaultTolerance, all delivered by the watch.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGateway, type Gateway } from './gateway.js';
import { call, sleep, upstream, type Upstream } from './testkit.test.helpers.js';

interface ControlPlane {
  url: string;
  token: string;
  api(method: string, path: string, body?: unknown): Promise<any>;
  destroy(): Promise<void>;
}

/** The SDK's test harness (a real server), loaded from its build output: it is not part of the SDK's exports. */
async function controlPlane(): Promise<ControlPlane> {
  const mod = (await import(new URL('../../sdk/dist/testing/control-plane.js', import.meta.url).href)) as { TestControlPlane: { start(): Promise<ControlPlane> } };
  return mod.TestControlPlane.start();
}

const NS = 'edge';

describe('gateway identity (real control plane)', () => {
  let cp: ControlPlane;
  let gw: Gateway;
  let echo: Upstream;
  let skewMs = 0;
  const creds: Record<string, { id: string; token: string }> = {};

  async function jwt(account: string): Promise<string> {
    const r = await fetch(`${cp.url}/v1/auth/token`, { method: 'POST', headers: { authorization: `Bearer ${creds[account]!.token}` } });
    assert.equal(r.status, 200);
    return ((await r.json()) as { access_token: string }).access_token;
  }

  const put = (kind: string, name: string, spec: unknown) => cp.api('PUT', `/v1/resources/${kind}/${NS}/${name}`, { spec });

  before(async () => {
    cp = await controlPlane();
    echo = await upstream('echo');
    for (const a of ['shopper', 'loadgen', 'operator']) {
      await put('ServiceAccount', a, {});
      creds[a] = await cp.api('POST', `/v1/serviceaccounts/${NS}/${a}/credentials`, {});
    }
    await put('Instance', 'echo-1', { service: 'echo', version: '1.0.0', address: echo.address, leaseTtlSeconds: 3600 });
    await put('Role', 'ops', { rules: [] });
    await put('RoleBinding', 'ops', { role: 'ops', subjects: [{ kind: 'ServiceAccount', namespace: NS, name: 'operator' }] });
    await put('TrafficPolicy', 'trust', { trustedIdentities: [{ subject: { kind: 'ServiceAccount', namespace: NS, name: 'loadgen' }, baggageKeys: ['plinth.stress'] }] });
    await put('FaultTolerance', 'per-identity', {
      rules: [{ name: 'one-each', targets: [{ service: 'echo', endpoints: ['/limited'] }], strategies: [{ type: 'rateLimit', threshold: 1, statDurationSec: 60, key: { source: 'identity' } }] }],
    });
    await put('Route', 'jwt', { match: { path: { prefix: '/jwt' } }, service: 'echo', rewrite: { prefix: '/' } });
    await put('Route', 'key', { match: { path: { prefix: '/key' } }, service: 'echo', auth: { mode: 'apiKey' } });
    await put('Route', 'anon', { match: { path: { prefix: '/anon' } }, service: 'echo', auth: { mode: 'anonymous' } });
    await put('Route', 'ops', { match: { path: { prefix: '/ops' } }, service: 'echo', auth: { mode: 'any', requiredRoles: ['ops'] } });
    await put('Route', 'aud', { match: { path: { prefix: '/aud' } }, service: 'echo', auth: { audiences: ['billing'] } });
    gw = await startGateway({
      namespace: NS,
      controlPlane: { url: cp.url, token: cp.token },
      listen: '127.0.0.1:0',
      accessLog: false,
      identity: { jwksCooldownMs: 0, now: () => Date.now() + skewMs },
    });
    const deadline = Date.now() + 10_000;
    while ((await call(`${gw.url}/anon/ready`)).status !== 200) {
      if (Date.now() > deadline) throw new Error('routes never arrived');
      await sleep(20);
    }
  });

  after(async () => {
    await gw?.close();
    await echo?.close();
    await cp?.destroy();
  });

  it('lets a valid server-signed JWT through and tells the upstream who it is', async () => {
    const n = echo.seen.length;
    const r = await call(`${gw.url}/jwt/orders`, { headers: { authorization: `Bearer ${await jwt('shopper')}` } });
    assert.equal(r.status, 200);
    const s = echo.seen[n]!;
    assert.equal(s.url, '/orders');
    assert.equal(s.headers['plinth-identity'], `ServiceAccount:${NS}/shopper`);
    assert.equal(s.headers['plinth-identity-via'], 'jwt');
  });

  it('refuses a missing, forged or expired token with 401 problem+json', async () => {
    const missing = await call(`${gw.url}/jwt/x`);
    assert.equal(missing.status, 401);
    assert.equal(missing.json().code, 'unauthenticated');
    assert.match(String(missing.headers['www-authenticate']), /^Bearer/);
    const token = await jwt('shopper');
    const [h, p, sig] = token.split('.');
    const forged = `${h}.${p}.${sig!.slice(0, -4)}${sig!.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
    const bad = await call(`${gw.url}/jwt/x`, { headers: { authorization: `Bearer ${forged}` } });
    assert.equal(bad.status, 401);
    assert.match(String(bad.json().detail), /signature/);
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: `ServiceAccount:${NS}/operator` })).toString('base64url')}.${sig}`;
    assert.equal((await call(`${gw.url}/jwt/x`, { headers: { authorization: `Bearer ${tampered}` } })).status, 401);
    skewMs = 2 * 3600_000;
    try {
      const expired = await call(`${gw.url}/jwt/x`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(expired.status, 401);
      assert.match(String(expired.json().detail), /expired/);
    } finally {
      skewMs = 0;
    }
  });

  it('checks the audience the route asks for', async () => {
    const r = await call(`${gw.url}/aud/x`, { headers: { authorization: `Bearer ${await jwt('shopper')}` } });
    assert.equal(r.status, 401);
    assert.match(String(r.json().detail), /audience/);
  });

  it('follows a signing-key rotation: a token signed with the new key verifies without a restart', async () => {
    assert.equal((await call(`${gw.url}/jwt/x`, { headers: { authorization: `Bearer ${await jwt('shopper')}` } })).status, 200);
    const rotated = await cp.api('POST', '/v1/auth/keys/rotate');
    const fresh = await jwt('shopper');
    assert.equal(JSON.parse(Buffer.from(fresh.split('.')[0]!, 'base64url').toString()).kid, rotated.kid);
    assert.equal((await call(`${gw.url}/jwt/x`, { headers: { authorization: `Bearer ${fresh}` } })).status, 200);
  });

  it('exchanges an API key once and keeps the resulting identity until its token expires', async () => {
    const n = echo.seen.length;
    const r = await call(`${gw.url}/key/x`, { headers: { 'x-api-key': creds.shopper!.token } });
    assert.equal(r.status, 200);
    assert.equal(echo.seen[n]!.headers['plinth-identity'], `ServiceAccount:${NS}/shopper`);
    assert.equal(echo.seen[n]!.headers['plinth-identity-via'], 'apiKey');
    assert.equal(echo.seen[n]!.headers['x-api-key'], undefined, 'the long-lived key is not passed upstream');
    // Revoked at the server: the gateway does not ask again per request, so the cached identity still serves.
    await cp.api('DELETE', `/v1/serviceaccounts/${NS}/shopper/credentials/${creds.shopper!.id}`);
    assert.equal((await call(`${gw.url}/key/x`, { headers: { authorization: `ApiKey ${creds.shopper!.token}` } })).status, 200);
    const wrong = await call(`${gw.url}/key/x`, { headers: { 'x-api-key': 'plinth_not-a-real-key' } });
    assert.equal(wrong.status, 401);
    assert.equal((await call(`${gw.url}/key/x`, { headers: { authorization: `Bearer ${await jwt('loadgen')}` } })).status, 401, 'an apiKey route takes no JWT');
  });

  it('serves anonymous routes without an identity', async () => {
    const n = echo.seen.length;
    assert.equal((await call(`${gw.url}/anon/x`)).status, 200);
    assert.equal(echo.seen[n]!.headers['plinth-identity'], undefined);
  });

  it('keeps plinth.stress only from an identity the TrafficPolicy trusts with it', async () => {
    const n = echo.seen.length;
    await call(`${gw.url}/jwt/x`, { headers: { authorization: `Bearer ${await jwt('loadgen')}`, baggage: 'plinth.stress=1,plinth.lane=gray' } });
    assert.equal(echo.seen[n]!.headers.baggage, 'plinth.stress=1', 'stress kept, the lane (not granted) dropped');
    await call(`${gw.url}/jwt/x`, { headers: { authorization: `Bearer ${await jwt('operator')}`, baggage: 'plinth.stress=1' } });
    assert.equal(echo.seen[n + 1]!.headers.baggage, undefined);
  });

  it('rate-limits per identity with the route service as the target', async () => {
    const op = await jwt('operator');
    const lg = await jwt('loadgen');
    assert.equal((await call(`${gw.url}/jwt/limited`, { headers: { authorization: `Bearer ${op}` } })).status, 200);
    const second = await call(`${gw.url}/jwt/limited`, { headers: { authorization: `Bearer ${op}` } });
    assert.equal(second.status, 429);
    assert.ok(second.headers['ratelimit'] !== undefined);
    assert.equal((await call(`${gw.url}/jwt/limited`, { headers: { authorization: `Bearer ${lg}` } })).status, 200, 'another identity has its own bucket');
  });

  it('requires the roles a route names, from RoleBindings, and passes them on', async () => {
    const n = echo.seen.length;
    const ok = await call(`${gw.url}/ops/x`, { headers: { authorization: `Bearer ${await jwt('operator')}` } });
    assert.equal(ok.status, 200);
    assert.equal(echo.seen[n]!.headers['plinth-identity-roles'], 'ops');
    const no = await call(`${gw.url}/ops/x`, { headers: { authorization: `Bearer ${await jwt('loadgen')}` } });
    assert.equal(no.status, 403);
    assert.equal(no.json().code, 'forbidden');
  });
});
