import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { backends, resource, startTestServer, type TestServer } from '../testing/harness.js';

for (const { backend, skip } of backends()) {
  describe(`resource API (${backend})`, { skip }, () => {
    let s: TestServer;
    before(async () => {
      s = await startTestServer(backend);
    });
    after(async () => {
      await s?.destroy();
    });

    it('creates, leaves an identical document unchanged, and updates with a new revision', async () => {
      const doc = resource('Service', 'retail', 'orders', { team: 'orders', latencyBudgetMs: 200 }, { tier: 'core' });
      const a = await s.api('PUT', '/v1/resources/Service/retail/orders', doc);
      assert.equal(a.status, 201);
      assert.equal(a.headers.get('plinth-result'), 'created');
      const rev1 = a.body.metadata.revision;
      assert.ok(rev1 > 0);
      assert.equal(a.headers.get('etag'), `"${rev1}"`);

      const b = await s.api('PUT', '/v1/resources/Service/retail/orders', doc);
      assert.equal(b.status, 200);
      assert.equal(b.headers.get('plinth-result'), 'unchanged');
      assert.equal(b.body.metadata.revision, rev1);

      const c = await s.api('PUT', '/v1/resources/Service/retail/orders', resource('Service', 'retail', 'orders', { team: 'orders', latencyBudgetMs: 150 }, { tier: 'core' }));
      assert.equal(c.headers.get('plinth-result'), 'updated');
      assert.ok(c.body.metadata.revision > rev1);
      assert.equal(c.body.metadata.createRevision, rev1);

      const g = await s.api('GET', '/v1/resources/Service/retail/orders');
      assert.equal(g.status, 200);
      assert.equal(g.body.spec.latencyBudgetMs, 150);
      const old = await s.api('GET', `/v1/resources/Service/retail/orders?revision=${rev1}`);
      assert.equal(old.body.spec.latencyBudgetMs, 200);
    });

    it('accepts YAML bodies', async () => {
      const yaml = 'apiVersion: plinth.dev/v1\nkind: Service\nmetadata:\n  name: cart\n  namespace: retail\nspec:\n  team: cart\n';
      const r = await s.api('PUT', '/v1/resources/Service/retail/cart', yaml, { 'content-type': 'application/yaml' });
      assert.equal(r.status, 201);
      assert.equal(r.body.spec.team, 'cart');
    });

    it('enforces optimistic concurrency with If-Match and create-only with If-None-Match', async () => {
      const doc = (v: string) => resource('Config', 'retail', 'cc', { format: 'text', content: v });
      const a = await s.api('PUT', '/v1/resources/Config/retail/cc', doc('1'));
      const rev = a.body.metadata.revision;
      const ok = await s.api('PUT', '/v1/resources/Config/retail/cc', doc('2'), { 'if-match': `"${rev}"` });
      assert.equal(ok.status, 200);
      const stale = await s.api('PUT', '/v1/resources/Config/retail/cc', doc('3'), { 'if-match': String(rev) });
      assert.equal(stale.status, 409);
      assert.equal(stale.body.code, 'revision_conflict');
      assert.match(stale.headers.get('content-type') ?? '', /application\/problem\+json/);
      const dup = await s.api('PUT', '/v1/resources/Config/retail/cc', doc('4'), { 'if-none-match': '*' });
      assert.equal(dup.status, 409);
      assert.equal(dup.body.code, 'already_exists');
      const still = await s.api('GET', '/v1/resources/Config/retail/cc');
      assert.equal(still.body.spec.content, '2');
    });

    it('names the exact invalid field', async () => {
      const r = await s.api('PUT', '/v1/resources/Instance/retail/bad', resource('Instance', 'retail', 'bad', { service: 'orders', version: '1', address: '127.0.0.1:1', weight: 'heavy' }));
      assert.equal(r.status, 422);
      assert.equal(r.body.code, 'validation_failed');
      assert.ok(r.body.errors.some((e: any) => e.field === 'spec.weight'), JSON.stringify(r.body));
      const role = await s.api('PUT', '/v1/resources/Role/retail/r', resource('Role', 'retail', 'r', { rules: [{ verbs: ['get'], kinds: ['Config'], namespaces: ['retail'] }, { verbs: ['fly'], kinds: ['Config'], namespaces: ['x'] }] }));
      assert.equal(role.status, 422);
      assert.ok(role.body.errors.some((e: any) => e.field.startsWith('spec.rules[1].verbs')), JSON.stringify(role.body));
      const mismatch = await s.api('PUT', '/v1/resources/Service/retail/x', resource('Service', 'other', 'x', { team: 't' }));
      assert.equal(mismatch.status, 422);
      assert.ok(mismatch.body.errors.some((e: any) => e.field === 'metadata.namespace'));
      const unknown = await s.api('GET', '/v1/resources/Gizmo/retail/x');
      assert.equal(unknown.status, 404);
      assert.equal(unknown.body.code, 'unknown_kind');
    });

    it('lists by namespace and label selector, page by page', async () => {
      for (let i = 0; i < 7; i++) {
        const r = await s.api('PUT', `/v1/resources/Config/paging/c${i}`, resource('Config', 'paging', `c${i}`, { content: String(i) }, { parity: i % 2 ? 'odd' : 'even', n: String(i) }));
        assert.equal(r.status, 201);
      }
      const even = await s.api('GET', '/v1/resources/Config?namespace=paging&selector=' + encodeURIComponent('parity=even,n!=4'));
      assert.deepEqual(even.body.items.map((r: any) => r.metadata.name), ['c0', 'c2', 'c6']);
      assert.ok(even.body.revision >= even.body.items[2].metadata.revision);
      const names: string[] = [];
      let cont: string | undefined;
      let pages = 0;
      do {
        const page = await s.api('GET', `/v1/resources/Config?namespace=paging&limit=3${cont ? `&continue=${cont}` : ''}`);
        assert.equal(page.status, 200);
        names.push(...page.body.items.map((r: any) => r.metadata.name));
        cont = page.body.continue;
        pages++;
      } while (cont);
      assert.equal(pages, 3);
      assert.deepEqual(names, ['c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6']);
      const badSel = await s.api('GET', '/v1/resources/Config?selector=' + encodeURIComponent('a in (b'));
      assert.equal(badSel.status, 400);
      assert.equal(badSel.body.code, 'invalid_selector');
      const badCont = await s.api('GET', '/v1/resources/Config?continue=zzz');
      assert.equal(badCont.body.code, 'invalid_parameter');
    });

    it('keeps history, diffs two revisions and rolls back to an old one as a new revision', async () => {
      const put = (content: string) => s.api('PUT', '/v1/resources/Config/retail/hist', resource('Config', 'retail', 'hist', { format: 'json', content }));
      const r1 = (await put('{"limit":1}')).body.metadata.revision;
      const r2 = (await put('{"limit":2}')).body.metadata.revision;
      const r3 = (await put('{"limit":3}')).body.metadata.revision;
      const h = await s.api('GET', '/v1/resources/Config/retail/hist/history');
      assert.deepEqual(h.body.items.map((e: any) => e.revision), [r3, r2, r1]);
      assert.deepEqual(h.body.items.map((e: any) => e.type), ['MODIFIED', 'MODIFIED', 'ADDED']);
      const d = await s.api('GET', `/v1/resources/Config/retail/hist/diff?from=${r1}&to=${r3}`);
      assert.equal(d.status, 200);
      assert.deepEqual(d.body.changes, [{ path: 'spec.content', op: 'replace', before: '{"limit":1}', after: '{"limit":3}' }]);
      const rb = await s.api('POST', '/v1/resources/Config/retail/hist/rollback', { revision: r1 });
      assert.equal(rb.status, 200);
      assert.ok(rb.body.metadata.revision > r3);
      assert.equal(rb.body.spec.content, '{"limit":1}');
      const missing = await s.api('POST', '/v1/resources/Config/retail/hist/rollback', { revision: 999999 });
      assert.equal(missing.status, 404);
      const bad = await s.api('POST', '/v1/resources/Config/retail/hist/rollback', { revision: 'x' });
      assert.equal(bad.status, 422);
    });

    it('deletes, and a deleted resource is gone', async () => {
      await s.api('PUT', '/v1/resources/Service/retail/tmp', resource('Service', 'retail', 'tmp', { team: 't' }));
      const d = await s.api('DELETE', '/v1/resources/Service/retail/tmp');
      assert.equal(d.status, 200);
      assert.equal(d.body.metadata.name, 'tmp');
      assert.equal((await s.api('GET', '/v1/resources/Service/retail/tmp')).status, 404);
      const again = await s.api('DELETE', '/v1/resources/Service/retail/tmp');
      assert.equal(again.status, 404);
      assert.equal(again.body.code, 'not_found');
    });

    it('validates Config content by format and JSON Schema, including gray variants', async () => {
      const bad = await s.api('PUT', '/v1/resources/Config/retail/j', resource('Config', 'retail', 'j', { format: 'json', content: '{"a":' }));
      assert.equal(bad.status, 422);
      assert.equal(bad.body.errors[0].field, 'spec.content');
      const yamlBad = await s.api('PUT', '/v1/resources/Config/retail/y', resource('Config', 'retail', 'y', { format: 'yaml', content: 'a: [1, 2\nb: 3' }));
      assert.equal(yamlBad.status, 422);
      assert.match(yamlBad.body.errors[0].message, /YAML/);
      const schema = { type: 'object', properties: { maxItems: { type: 'integer', minimum: 1 } }, required: ['maxItems'] };
      const off = await s.api('PUT', '/v1/resources/Config/retail/s', resource('Config', 'retail', 's', { format: 'yaml', content: 'maxItems: 0\n', schema }));
      assert.equal(off.status, 422);
      assert.match(off.body.errors[0].message, /maxItems/);
      const grayOff = await s.api('PUT', '/v1/resources/Config/retail/s', resource('Config', 'retail', 's', {
        format: 'properties', content: 'maxItems=5', schema: { type: 'object', required: ['maxItems'] },
        gray: [{ name: 'canary', match: { lanes: ['canary'] }, content: 'other=1' }],
      }));
      assert.equal(grayOff.status, 422);
      assert.equal(grayOff.body.errors[0].field, 'spec.gray[0].content');
      const ok = await s.api('PUT', '/v1/resources/Config/retail/s', resource('Config', 'retail', 's', {
        format: 'yaml', content: 'maxItems: 5\n', schema, gray: [{ name: 'canary', match: { lanes: ['canary'] }, content: 'maxItems: 9\n' }],
      }));
      assert.equal(ok.status, 201);
      const badSchema = await s.api('PUT', '/v1/resources/Config/retail/t', resource('Config', 'retail', 't', { format: 'json', content: '{}', schema: { type: 'nonsense' } }));
      assert.equal(badSchema.status, 422);
      assert.equal(badSchema.body.errors[0].field, 'spec.schema');
    });
  });
}
