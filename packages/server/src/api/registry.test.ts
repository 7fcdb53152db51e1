import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { backends, resource, startTestServer, type TestServer } from '../testing/harness.js';
import { SseClient } from '../testing/sse.js';

const instance = (name: string, extra: Record<string, unknown> = {}) =>
  resource('Instance', 'shop', name, { service: 'orders', version: '1.2.0', address: '127.0.0.1:9000', zone: 'a', leaseTtlSeconds: 1, ...extra });

for (const { backend, skip } of backends()) {
  describe(`registry (${backend})`, { skip }, () => {
    let s: TestServer;
    let w: SseClient;
    before(async () => {
      s = await startTestServer(backend);
      w = new SseClient(`${s.url}/v1/watch?kinds=Instance&namespace=shop&selector=${encodeURIComponent('plinth.dev/service=orders')}`, s.token);
      await w.waitFor((ev) => ev.some((e) => e.event === 'BOOKMARK'));
    });
    after(async () => {
      w?.close();
      await s?.destroy();
    });

    it('labels instances by service and lane so discovery is a selector', async () => {
      const r = await s.api('PUT', '/v1/resources/Instance/shop/o-1', instance('o-1', { lane: 'canary', leaseTtlSeconds: 30 }));
      assert.equal(r.status, 201);
      assert.equal(r.body.metadata.labels['plinth.dev/service'], 'orders');
      assert.equal(r.body.metadata.labels['plinth.dev/lane'], 'canary');
      const list = await s.api('GET', '/v1/resources/Instance?namespace=shop&selector=' + encodeURIComponent('plinth.dev/service=orders,plinth.dev/lane=canary'));
      assert.deepEqual(list.body.items.map((i: any) => i.metadata.name), ['o-1']);
      await w.waitFor(() => w.changes().some((e) => e.data.resource.metadata.name === 'o-1'));
    });

    it('keeps a renewed instance and removes one whose lease lapses; watchers see it go', async () => {
      await s.api('PUT', '/v1/resources/Instance/shop/live', instance('live'));
      await s.api('PUT', '/v1/resources/Instance/shop/dies', instance('dies'));
      const start = Date.now();
      let renewals = 0;
      while (Date.now() - start < 2500) {
        const r = await s.api('POST', '/v1/leases/shop/live');
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.equal(r.body.ttlSeconds, 1);
        renewals++;
        await new Promise((ok) => setTimeout(ok, 250));
      }
      assert.ok(renewals > 3);
      await w.waitFor(() => w.changes().some((e) => e.event === 'DELETED' && e.data.resource.metadata.name === 'dies'), 5000);
      assert.equal((await s.api('GET', '/v1/resources/Instance/shop/dies')).status, 404);
      assert.equal((await s.api('GET', '/v1/resources/Instance/shop/live')).status, 200);
      const late = await s.api('POST', '/v1/leases/shop/dies');
      assert.equal(late.status, 404);
      assert.equal(late.body.code, 'lease_not_found');
      // Renewals write no revisions: watchers saw only the registrations and the expiry.
      assert.equal(w.changes().filter((e) => e.data.resource.metadata.name === 'live').length, 1);
    });

    it('marks an instance draining, visible to watchers, and deregisters it', async () => {
      await s.api('PUT', '/v1/resources/Instance/shop/d-1', instance('d-1', { leaseTtlSeconds: 60 }));
      const d = await s.api('POST', '/v1/registry/shop/d-1/drain');
      assert.equal(d.status, 200);
      assert.equal(d.body.spec.draining, true);
      await w.waitFor(() => w.changes().some((e) => e.event === 'MODIFIED' && e.data.resource.metadata.name === 'd-1' && e.data.resource.spec.draining));
      assert.equal((await s.api('DELETE', '/v1/resources/Instance/shop/d-1')).status, 200);
      await w.waitFor(() => w.changes().some((e) => e.event === 'DELETED' && e.data.resource.metadata.name === 'd-1'));
      assert.equal((await s.api('POST', '/v1/leases/shop/d-1')).status, 404);
    });
  });
}
