import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { backends, resource, startTestServer, type TestServer } from '../testing/harness.js';
import { SseClient } from '../testing/sse.js';

const PLAIN = 'hunter2-very-secret-value';

for (const { backend, skip } of backends()) {
  describe(`secrets (${backend})`, { skip }, () => {
    let s: TestServer;
    before(async () => {
      s = await startTestServer(backend);
    });
    after(async () => {
      await s?.destroy();
    });

    it('never shows values in reads, lists, history or watch; reveals them only on request', async () => {
      const w = new SseClient(`${s.url}/v1/watch?kinds=Secret&namespace=pay`, s.token);
      await w.waitFor((ev) => ev.some((e) => e.event === 'BOOKMARK'));
      const put = await s.api('PUT', '/v1/resources/Secret/pay/psp', resource('Secret', 'pay', 'psp', { type: 'api-key', data: { key: PLAIN, user: 'shop' } }));
      assert.equal(put.status, 201);
      assert.deepEqual(put.body.spec, { type: 'api-key', keys: ['key', 'user'] });
      const texts = [
        JSON.stringify(put.body),
        JSON.stringify((await s.api('GET', '/v1/resources/Secret/pay/psp')).body),
        JSON.stringify((await s.api('GET', '/v1/resources/Secret?namespace=pay')).body),
        JSON.stringify((await s.api('GET', '/v1/resources/Secret/pay/psp/history')).body),
      ];
      await w.waitFor(() => w.changes().length > 0);
      texts.push(JSON.stringify(w.events));
      w.close();
      for (const t of texts) {
        assert.ok(!t.includes(PLAIN), 'value leaked');
        assert.ok(!t.includes('sealed'), 'ciphertext leaked');
      }
      const shown = await s.api('GET', '/v1/resources/Secret/pay/psp?reveal=true');
      assert.equal(shown.status, 200);
      assert.deepEqual(shown.body.spec.data, { key: PLAIN, user: 'shop' });
      const again = await s.api('PUT', '/v1/resources/Secret/pay/psp', resource('Secret', 'pay', 'psp', { type: 'api-key', data: { key: PLAIN, user: 'shop' } }));
      assert.equal(again.headers.get('plinth-result'), 'unchanged');
    });

    if (backend === 'sqlite') {
      it('stores values encrypted at rest', async () => {
        await s.api('PUT', '/v1/resources/Secret/pay/at-rest', resource('Secret', 'pay', 'at-rest', { data: { v: PLAIN } }));
        const files = readdirSync(s.dataDir).filter((f) => f.startsWith('plinth.db'));
        assert.ok(files.length > 0);
        for (const f of files) assert.ok(!readFileSync(join(s.dataDir, f)).includes(Buffer.from(PLAIN)), `${f} holds the plain value`);
      });
    }

    it('rotates the sealing key, re-sealing every secret, with reads working throughout', async () => {
      for (let i = 0; i < 5; i++) await s.api('PUT', `/v1/resources/Secret/rot/s${i}`, resource('Secret', 'rot', `s${i}`, { data: { n: String(i) } }));
      const rot = await s.api('POST', '/v1/secrets/keys/rotate');
      assert.equal(rot.status, 200, JSON.stringify(rot.body));
      assert.notEqual(rot.body.kid, rot.body.previous);
      assert.ok(rot.body.resealed >= 5);
      for (let i = 0; i < 5; i++) {
        const r = await s.api('GET', `/v1/resources/Secret/rot/s${i}?reveal=true`);
        assert.equal(r.body.spec.data.n, String(i));
      }
      // A server restarted on the same key file still reads everything.
      s = await s.restart();
      const r = await s.api('GET', '/v1/resources/Secret/rot/s3?reveal=true');
      assert.equal(r.body.spec.data.n, '3');
    });

    it('rolls a secret back to an old value', async () => {
      const a = await s.api('PUT', '/v1/resources/Secret/pay/rb', resource('Secret', 'pay', 'rb', { data: { v: 'one' } }));
      await s.api('PUT', '/v1/resources/Secret/pay/rb', resource('Secret', 'pay', 'rb', { data: { v: 'two' } }));
      const rb = await s.api('POST', '/v1/resources/Secret/pay/rb/rollback', { revision: a.body.metadata.revision });
      assert.equal(rb.status, 200);
      assert.equal((await s.api('GET', '/v1/resources/Secret/pay/rb?reveal=true')).body.spec.data.v, 'one');
    });
  });
}
