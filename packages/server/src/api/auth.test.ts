import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { AuditVerifier } from '@plinth/core';
import { backends, resource, startTestServer, type TestServer } from '../testing/harness.js';

for (const { backend, skip } of backends()) {
  describe(`authentication, RBAC and audit (${backend})`, { skip }, () => {
    let s: TestServer;
    let devToken: string;
    const as = async (token: string, method: string, path: string, body?: unknown) => {
      const res = await fetch(s.url + path, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, body: (await res.json().catch(() => undefined)) as any };
    };
    before(async () => {
      s = await startTestServer(backend);
      await s.api('PUT', '/v1/resources/ServiceAccount/team-a/dev', resource('ServiceAccount', 'team-a', 'dev', { description: 'a developer' }));
      await s.api('PUT', '/v1/resources/Role/team-a/config-editor', resource('Role', 'team-a', 'config-editor', {
        rules: [{ verbs: ['get', 'list', 'watch', 'create', 'update'], kinds: ['Config'], namespaces: ['team-a'] }],
      }));
      await s.api('PUT', '/v1/resources/RoleBinding/team-a/dev-edits', resource('RoleBinding', 'team-a', 'dev-edits', {
        role: 'config-editor', subjects: [{ kind: 'ServiceAccount', namespace: 'team-a', name: 'dev' }],
      }));
      const cred = await s.api('POST', '/v1/serviceaccounts/team-a/dev/credentials');
      assert.equal(cred.status, 201, JSON.stringify(cred.body));
      devToken = cred.body.token;
    });
    after(async () => {
      await s?.destroy();
    });

    it('writes the admin token owner-only and requires auth from the first start', async () => {
      assert.equal(statSync(s.adminTokenFile!).mode & 0o077, 0);
      if (backend === 'sqlite') assert.equal(statSync(`${s.dataDir}/plinth.db`).mode & 0o077, 0);
      const none = await fetch(`${s.url}/v1/resources/Config?namespace=x`);
      assert.equal(none.status, 401);
      assert.equal(((await none.json()) as any).code, 'unauthenticated');
      const bad = await as('plinth_nope_nope', 'GET', '/v1/resources/Config?namespace=x');
      assert.equal(bad.status, 401);
      const jwks = await fetch(`${s.url}/.well-known/jwks.json`);
      assert.equal(jwks.status, 200);
      assert.ok(((await jwks.json()) as any).keys.length >= 1);
    });

    it('exchanges a credential for a short-lived JWT that works like it', async () => {
      const t = await fetch(`${s.url}/v1/auth/token`, { method: 'POST', headers: { authorization: `Bearer ${devToken}` } });
      assert.equal(t.status, 200);
      const { access_token, expires_in } = (await t.json()) as any;
      assert.ok(expires_in > 0 && expires_in <= 3600);
      const who = await as(access_token, 'GET', '/v1/whoami');
      assert.equal(who.body.subject, 'ServiceAccount:team-a/dev');
    });

    it('authorizes by role: 403 outside the grant, distinct from 401', async () => {
      const ok = await as(devToken, 'PUT', '/v1/resources/Config/team-a/c', resource('Config', 'team-a', 'c', { content: 'x' }));
      assert.equal(ok.status, 201);
      const otherNs = await as(devToken, 'PUT', '/v1/resources/Config/team-b/c', resource('Config', 'team-b', 'c', { content: 'x' }));
      assert.equal(otherNs.status, 403);
      assert.equal(otherNs.body.code, 'forbidden');
      const del = await as(devToken, 'DELETE', '/v1/resources/Config/team-a/c');
      assert.equal(del.status, 403);
      const secret = await as(devToken, 'GET', '/v1/resources/Secret/team-a/x');
      assert.equal(secret.status, 403);
      // Listing without a namespace shows only what the caller may list.
      await s.api('PUT', '/v1/resources/Config/team-b/hidden', resource('Config', 'team-b', 'hidden', { content: 'x' }));
      const list = await as(devToken, 'GET', '/v1/resources/Config');
      assert.equal(list.status, 200);
      assert.ok(list.body.items.every((r: any) => r.metadata.namespace === 'team-a'));
    });

    it('refuses privilege escalation through roles and bindings', async () => {
      await s.api('PUT', '/v1/resources/Role/team-a/role-admin', resource('Role', 'team-a', 'role-admin', {
        rules: [
          { verbs: ['create', 'update'], kinds: ['Role', 'RoleBinding'], namespaces: ['team-a'] },
          { verbs: ['get'], kinds: ['Role'], namespaces: ['team-a'] },
        ],
      }));
      await s.api('PUT', '/v1/resources/RoleBinding/team-a/dev-roles', resource('RoleBinding', 'team-a', 'dev-roles', {
        role: 'role-admin', subjects: [{ kind: 'ServiceAccount', namespace: 'team-a', name: 'dev' }],
      }));
      const grab = await as(devToken, 'PUT', '/v1/resources/Role/team-a/everything', resource('Role', 'team-a', 'everything', {
        rules: [{ verbs: ['*'], kinds: ['*'], namespaces: ['*'] }],
      }));
      assert.equal(grab.status, 403);
      assert.equal(grab.body.code, 'escalation_denied');
      const modest = await as(devToken, 'PUT', '/v1/resources/Role/team-a/reader', resource('Role', 'team-a', 'reader', {
        rules: [{ verbs: ['get'], kinds: ['Config'], namespaces: ['team-a'] }],
      }));
      assert.equal(modest.status, 201, JSON.stringify(modest.body));
    });

    it('enforces a binding, its removal and a revocation as soon as each response arrives', async () => {
      await s.api('PUT', '/v1/resources/ServiceAccount/team-c/ops', resource('ServiceAccount', 'team-c', 'ops', {}));
      await s.api('PUT', '/v1/resources/Role/team-c/reader', resource('Role', 'team-c', 'reader', {
        rules: [{ verbs: ['get', 'list'], kinds: ['Config'], namespaces: ['team-c'] }],
      }));
      const binding = resource('RoleBinding', 'team-c', 'ops-reads', { role: 'reader', subjects: [{ kind: 'ServiceAccount', namespace: 'team-c', name: 'ops' }] });
      const cred = await s.api('POST', '/v1/serviceaccounts/team-c/ops/credentials');
      // Each round trips the server's verified-token cache and its RBAC index right after a write.
      for (let i = 0; i < 10; i++) {
        assert.equal((await as(cred.body.token, 'GET', '/v1/resources/Config?namespace=team-c')).status, 403, `round ${i}: before the binding`);
        assert.equal((await s.api('PUT', '/v1/resources/RoleBinding/team-c/ops-reads', binding)).status, 201);
        assert.equal((await as(cred.body.token, 'GET', '/v1/resources/Config?namespace=team-c')).status, 200, `round ${i}: with the binding`);
        assert.equal((await s.api('DELETE', '/v1/resources/RoleBinding/team-c/ops-reads')).status, 200);
      }
      for (let i = 0; i < 10; i++) {
        const c = await s.api('POST', '/v1/serviceaccounts/team-c/ops/credentials');
        assert.equal((await as(c.body.token, 'GET', '/v1/whoami')).status, 200);
        assert.equal((await s.api('DELETE', `/v1/serviceaccounts/team-c/ops/credentials/${c.body.id}`)).status, 200);
        assert.equal((await as(c.body.token, 'GET', '/v1/whoami')).status, 401, `round ${i}: after the revocation`);
      }
      assert.equal((await s.api('DELETE', '/v1/resources/ServiceAccount/team-c/ops')).status, 200);
      assert.equal((await as(cred.body.token, 'GET', '/v1/whoami')).status, 401, 'a deleted account keeps no cached session');
    });

    it('records mutations and denials in a hash chain that verifies', async () => {
      const page = await s.api('GET', '/v1/audit?after=0&limit=5000');
      assert.equal(page.status, 200);
      const items: any[] = page.body.items;
      assert.ok(items.some((e) => e.action === 'create' && e.kind === 'Config' && e.namespace === 'team-a' && e.outcome === 'allowed' && e.actor === 'ServiceAccount:team-a/dev'));
      const denied = items.find((e) => e.outcome === 'denied' && e.namespace === 'team-b' && e.actor === 'ServiceAccount:team-a/dev');
      assert.ok(denied, 'denied call not audited');
      const put = items.find((e) => e.action === 'create' && e.kind === 'Config' && e.name === 'c');
      assert.equal(put.revisionBefore, null);
      assert.ok(put.revisionAfter > 0);
      const v = new AuditVerifier();
      for (const e of items) v.push(e);
      assert.deepEqual(v.finish(page.body.head), { ok: true, checked: items.length });
      const forbidden = await as(devToken, 'GET', '/v1/audit');
      assert.equal(forbidden.status, 403);
    });

    it('shows secret values only to identities granted reveal', async () => {
      await s.api('PUT', '/v1/resources/Secret/team-a/db', resource('Secret', 'team-a', 'db', { data: { password: 'p4ss' } }));
      await s.api('PUT', '/v1/resources/Role/team-a/secret-reader', resource('Role', 'team-a', 'secret-reader', {
        rules: [{ verbs: ['get', 'list'], kinds: ['Secret'], namespaces: ['team-a'] }],
      }));
      await s.api('PUT', '/v1/resources/RoleBinding/team-a/dev-secrets', resource('RoleBinding', 'team-a', 'dev-secrets', {
        role: 'secret-reader', subjects: [{ kind: 'ServiceAccount', namespace: 'team-a', name: 'dev' }],
      }));
      const meta = await as(devToken, 'GET', '/v1/resources/Secret/team-a/db');
      assert.equal(meta.status, 200);
      assert.deepEqual(meta.body.spec, { keys: ['password'] });
      const denied = await as(devToken, 'GET', '/v1/resources/Secret/team-a/db?reveal=true');
      assert.equal(denied.status, 403);
      const admin = await s.api('GET', '/v1/resources/Secret/team-a/db?reveal=true');
      assert.equal(admin.body.spec.data.password, 'p4ss');
    });

    it('stops accepting a credential once revoked', async () => {
      const c = await s.api('POST', '/v1/serviceaccounts/team-a/dev/credentials');
      assert.equal((await as(c.body.token, 'GET', '/v1/whoami')).status, 200);
      const r = await s.api('DELETE', `/v1/serviceaccounts/team-a/dev/credentials/${c.body.id}`);
      assert.ok(r.status === 200 || r.status === 204, JSON.stringify(r.body));
      assert.equal((await as(c.body.token, 'GET', '/v1/whoami')).status, 401);
    });
  });
}
