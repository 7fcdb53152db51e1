/**
 * Starting while the control plane is down: readiness waits for current state; a cache file lets the
 * service start and serve meanwhile; registration follows once the server is back.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { TestControlPlane, stillPending, until } from '../testing/control-plane.js';
import { NS, freePort, get, serviceOn, watchInstances } from './testkit.test.helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'plinth-sdk-runtime-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ok = (_req: unknown, res: { end(s: string): void }) => res.end('ok');

/** A control plane on a fixed port that has run once (so its admin token exists) and is now down. */
async function downControlPlane(): Promise<TestControlPlane> {
  const cp = new TestControlPlane();
  cp.port = await freePort();
  await cp.start();
  return cp;
}

test('/readyz is 503 no_snapshot until the first snapshot arrives, then 200 once registered', async (t) => {
  const cp = await downControlPlane();
  t.after(() => cp.destroy());
  await cp.stop();
  const svc = serviceOn(cp);
  t.after(() => svc.shutdown());

  const { port } = await svc.listen(ok);
  assert.equal((await get(port, '/healthz')).status, 200, 'alive, whatever the control plane');
  const before = await get(port, '/readyz');
  assert.deepEqual([before.status, JSON.parse(before.text)], [503, { ready: false, reason: 'no_snapshot' }]);
  assert.equal(await stillPending(svc.started, 100), true, 'no snapshot: neither from the server nor a cache');

  await cp.start();
  await svc.started;
  await until(() => svc.ready, 'ready', 15_000);
  const afterStart = await get(port, '/readyz');
  assert.deepEqual([afterStart.status, JSON.parse(afterStart.text)], [200, { ready: true }]);
});

test('control plane down at start with a cache file: starts from the cache and serves, registers once the server is up', async (t) => {
  const cacheFile = join(tmp, 'orders.json');
  const cp = await downControlPlane();
  t.after(() => cp.destroy());
  await cp.putConfig(NS, 'orders', 'maxItems=50');
  const first = serviceOn(cp, { controlPlane: { url: cp.url, token: cp.token, cacheFile } });
  await first.listen(ok);
  await until(() => first.ready, 'the first run ready');
  await first.shutdown(); // persists the snapshot
  assert.ok(existsSync(cacheFile));
  await cp.stop();

  const svc = serviceOn(cp, { controlPlane: { url: cp.url, token: cp.token, cacheFile } });
  t.after(() => svc.shutdown());
  await svc.started;
  assert.equal(svc.controlPlane!.source, 'cache');
  assert.deepEqual(svc.controlPlane!.get('Config', NS, 'orders')?.spec, { format: 'text', content: 'maxItems=50' });
  const { port } = await svc.listen(ok);
  assert.equal((await get(port, '/')).text, 'ok', 'serving from the cache');
  const probe = await get(port, '/readyz');
  assert.equal(probe.status, 503);
  assert.equal(svc.ready, false, 'a cache is not current state');
  await until(() => svc.logger.warnings.includes('cannot register with the control plane; serving meanwhile and retrying'), 'a failed registration');

  await cp.start();
  await until(() => svc.ready, 'ready', 15_000);
  const w = await watchInstances(cp);
  t.after(() => w.close());
  assert.equal(w.client.get('Instance', NS, svc.instanceId)?.spec.address, `http://127.0.0.1:${port}`);
  assert.equal(w.client.get('Instance', NS, first.instanceId), undefined, 'the first run deregistered');
});
