import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { AuditVerifier } from '@plinth/core';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { sendProblem } from '../http/problem.js';
import { Router } from '../http/router.js';
import { Auditor } from './audit.js';
import { bootstrap } from './bootstrap.js';
import { IdentityService } from './identity-service.js';
import { registerIdentityRoutes } from './routes.js';
import { forwardChanges, openTestStore, putResource, silentLog, testKeyring, type TestStore } from './test-helpers.js';

void describe('identity routes', () => {
  let ts: TestStore;
  let identity: IdentityService;
  let server: Server;
  let base: string;
  let admin: string;
  let seen = 0;

  async function call(method: string, path: string, token?: string, body?: unknown) {
    // The app (not this module) feeds changes to identity; mimic its watch hub before each request.
    seen = await forwardChanges(ts.store, seen, (ev) => identity.onChange(ev));
    const headers: Record<string, string> = {};
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(base + path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, any>) : undefined };
  }

  before(async () => {
    ts = await openTestStore();
    const boot = await bootstrap({ store: ts.store, dataDir: ts.dir, log: silentLog });
    admin = readFileSync(boot.adminTokenFile!, 'utf8').trim();
    await putResource(ts.store, 'ServiceAccount', 'retail', 'orders', {});
    identity = await IdentityService.start({ store: ts.store, keyring: testKeyring(), issuer: 'plinth', tokenTtlSeconds: 900, log: silentLog });
    seen = await ts.store.currentRevision();
    const router = new Router();
    registerIdentityRoutes(router, { identity, audit: new Auditor(ts.store, silentLog), store: ts.store });
    // A stand-in for the app's request handler: authenticate non-public routes, map errors to problems.
    server = createServer((req, res) => {
      void (async () => {
        try {
          const url = new URL(req.url ?? '/', 'http://x');
          const m = router.match(req.method ?? 'GET', url.pathname);
          const principal = m.options.public ? undefined : await identity.authenticate(req.headers.authorization);
          await m.handler({ req, res, url, params: m.params, query: url.searchParams, remote: '127.0.0.1', principal });
        } catch (err) {
          sendProblem(res, err);
        }
      })();
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((ok) => server.close(() => ok()));
    await identity.close();
    await ts.close();
  });

  void it('publishes the JWKS publicly, cacheable for a minute', async () => {
    const r = await call('GET', '/.well-known/jwks.json');
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('cache-control'), 'public, max-age=60');
    assert.equal(r.body!.keys.length, 1);
  });

  void it('exchanges a credential for a JWT that verifies against the JWKS', async () => {
    const r = await call('POST', '/v1/auth/token', admin);
    assert.equal(r.status, 200);
    assert.equal(r.body!.token_type, 'Bearer');
    assert.equal(r.body!.expires_in, 900);
    const jwks = (await call('GET', '/.well-known/jwks.json')).body as Parameters<typeof createLocalJWKSet>[0];
    const { payload } = await jwtVerify(r.body!.access_token as string, createLocalJWKSet(jwks), { issuer: 'plinth', audience: 'plinth' });
    assert.equal(payload.sub, 'ServiceAccount:plinth-system/admin');
    const who = await call('GET', '/v1/whoami', r.body!.access_token as string);
    assert.deepEqual(who.body, { subject: 'ServiceAccount:plinth-system/admin', namespace: 'plinth-system', name: 'admin', via: 'jwt' });
    // A JWT is not exchanged for another one.
    const again = await call('POST', '/v1/auth/token', r.body!.access_token as string);
    assert.equal(again.status, 401);
    const bad = await call('POST', '/v1/auth/token', 'plinth_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    assert.equal(bad.status, 401);
    assert.equal(bad.body!.code, 'unauthenticated');
    assert.equal(bad.headers.get('www-authenticate'), 'Bearer realm="plinth"');
    const none = await call('POST', '/v1/auth/token');
    assert.equal(none.status, 401);
  });

  void it('issues and revokes credentials, with RBAC and audit', async () => {
    const created = await call('POST', '/v1/serviceaccounts/retail/orders/credentials', admin);
    assert.equal(created.status, 201);
    const orders = created.body!.token as string;
    assert.match(orders, /^plinth_/);
    assert.equal((await call('GET', '/v1/whoami', orders)).body!.subject, 'ServiceAccount:retail/orders');
    // orders holds no role: it may not mint credentials, rotate keys or read the audit log.
    const forbidden = await call('POST', '/v1/serviceaccounts/retail/orders/credentials', orders);
    assert.equal(forbidden.status, 403);
    assert.equal((await call('POST', '/v1/auth/keys/rotate', orders)).status, 403);
    assert.equal((await call('GET', '/v1/audit', orders)).status, 403);
    assert.equal((await call('POST', '/v1/serviceaccounts/retail/ghost/credentials', admin)).status, 404);
    const ttl = await call('POST', '/v1/serviceaccounts/retail/orders/credentials', admin, { ttlSeconds: 3600 });
    assert.equal(ttl.status, 201);
    assert.ok(ttl.body!.expiresAt);
    assert.equal((await call('POST', '/v1/serviceaccounts/retail/orders/credentials', admin, { ttlSeconds: -1 })).status, 400);

    const del = await call('DELETE', `/v1/serviceaccounts/retail/orders/credentials/${created.body!.id as string}`, admin);
    assert.equal(del.status, 200);
    assert.equal((await call('GET', '/v1/whoami', orders)).status, 401);
    assert.equal((await call('DELETE', `/v1/serviceaccounts/retail/orders/credentials/${created.body!.id as string}`, admin)).status, 404);
  });

  void it('rotates the signing key', async () => {
    const before = (await call('GET', '/.well-known/jwks.json')).body!.keys.length as number;
    const r = await call('POST', '/v1/auth/keys/rotate', admin);
    assert.equal(r.status, 200);
    assert.equal(typeof r.body!.kid, 'string');
    const jwks = (await call('GET', '/.well-known/jwks.json')).body!;
    assert.equal(jwks.keys.length, before + 1);
    assert.equal(jwks.keys[0].kid, r.body!.kid);
  });

  void it('serves the audit log in pages, validating its parameters', async () => {
    const all = await call('GET', '/v1/audit', admin);
    assert.equal(all.status, 200);
    const items = all.body!.items as { seq: number; action: string; outcome: string; actor: string }[];
    const v = new AuditVerifier();
    for (const e of items) v.push(e as never);
    assert.deepEqual(v.finish(all.body!.head as { seq: number; hash: string }), { ok: true, checked: items.length });
    assert.ok(items.some((e) => e.action === 'login' && e.outcome === 'allowed'));
    assert.ok(items.some((e) => e.action === 'login' && e.outcome === 'denied' && e.actor === 'anonymous'));
    assert.ok(items.some((e) => e.action === 'create' && e.outcome === 'denied' && e.actor === 'ServiceAccount:retail/orders'));
    assert.ok(items.some((e) => e.action === 'create' && e.outcome === 'failed'));
    assert.ok(items.some((e) => e.action === 'delete' && e.outcome === 'allowed'));
    assert.ok(items.some((e) => e.action === 'update' && e.outcome === 'allowed'));

    const page = await call('GET', '/v1/audit?after=2&limit=2', admin);
    assert.deepEqual((page.body!.items as { seq: number }[]).map((e) => e.seq), [3, 4]);
    for (const q of ['limit=0', 'limit=5001', 'limit=abc', 'after=-1', 'after=1.5']) {
      const r = await call('GET', `/v1/audit?${q}`, admin);
      assert.equal(r.status, 400, q);
      assert.equal(r.body!.code, 'invalid_parameter', q);
    }
    assert.equal((await call('GET', '/v1/audit?limit=5000', admin)).status, 200);
  });
});
