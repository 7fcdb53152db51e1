import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServer, type RunningServer } from '../server.js';
import { newSchema, postgresUrl, resource, startTestServer, type TestServer } from '../testing/harness.js';
import { SseClient } from '../testing/sse.js';

const url = postgresUrl();

describe('several servers on one PostgreSQL', { skip: url ? false : 'PLINTH_TEST_POSTGRES_URL is not set' }, () => {
  let a: TestServer;
  let b: RunningServer;
  let bDir: string;
  const schema = newSchema();
  const onB = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(b.url + path, {
      method,
      headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as any };
  };

  before(async () => {
    a = await startTestServer('postgres', { schema });
    bDir = mkdtempSync(join(tmpdir(), 'plinth-b-'));
    b = await startServer({
      dataDir: bDir,
      listen: '127.0.0.1:0',
      logLevel: 'silent',
      store: `${url}?schema=${schema}`,
      secretKeyFile: join(a.dataDir, 'secret.keys'),
      heartbeatMs: 200,
      leaseSweepMs: 100,
    });
  });
  after(async () => {
    await b?.close();
    rmSync(bDir, { recursive: true, force: true });
    await a?.destroy();
  });

  it('bootstraps once: the second server finds the admin and creates no token of its own', () => {
    assert.ok(a.adminTokenFile);
    assert.equal(b.adminTokenFile, undefined);
  });

  it('a write on one server reaches watchers on the other, in order', async () => {
    const w = new SseClient(`${b.url}/v1/watch?kinds=Config&namespace=ha`, a.token);
    try {
      await w.waitFor((ev) => ev.some((e) => e.event === 'BOOKMARK'));
      const revs: number[] = [];
      for (let i = 0; i < 20; i++) {
        const target = i % 2 === 0 ? a.url : b.url;
        const res = await fetch(`${target}/v1/resources/Config/ha/c${i}`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(resource('Config', 'ha', `c${i}`, { content: String(i) })),
        });
        assert.equal(res.status, 201);
        revs.push(((await res.json()) as any).metadata.revision);
      }
      await w.waitFor(() => w.changes().length >= 20, 5000);
      assert.deepEqual(w.changes().map((e) => e.data.revision), revs);
    } finally {
      w.close();
    }
  });

  it('shares identity, secrets and leases across servers', async () => {
    await a.api('PUT', '/v1/resources/Secret/ha/s', resource('Secret', 'ha', 's', { data: { k: 'v' } }));
    const shown = await onB('GET', '/v1/resources/Secret/ha/s?reveal=true');
    assert.equal(shown.status, 200);
    assert.equal(shown.body.spec.data.k, 'v');
    const jwt = await fetch(`${a.url}/v1/auth/token`, { method: 'POST', headers: { authorization: `Bearer ${a.token}` } });
    const { access_token } = (await jwt.json()) as any;
    const who = await fetch(`${b.url}/v1/whoami`, { headers: { authorization: `Bearer ${access_token}` } });
    assert.equal(who.status, 200);
    await a.api('PUT', '/v1/resources/Instance/ha/i1', resource('Instance', 'ha', 'i1', { service: 'svc', version: '1', address: '127.0.0.1:1', leaseTtlSeconds: 1 }));
    for (let i = 0; i < 6; i++) {
      const r = await onB('POST', '/v1/leases/ha/i1');
      assert.equal(r.status, 200);
      await new Promise((ok) => setTimeout(ok, 300));
    }
    assert.equal((await a.api('GET', '/v1/resources/Instance/ha/i1')).status, 200);
  });
});
