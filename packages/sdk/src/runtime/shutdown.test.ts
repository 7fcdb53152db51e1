/**
 * Graceful shutdown against a REAL plinth server: in process, and in a child process sent a real SIGTERM.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { request } from 'undici';
import { TestControlPlane, until } from '../testing/control-plane.js';
import { SERVICE_STOPPED } from './index.js';
import { NS, eventsOf, get, refused, serviceOn, spawnChild, untilAsync, watchInstances, readUntilClose } from './testkit.test.helpers.js';

test('shutdown with a request in flight: seen draining, stops accepting, the request completes, then the Instance is deleted', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const w = await watchInstances(cp);
  t.after(() => w.close());
  const svc = serviceOn(cp, { deregisterDelayMs: 1000 });
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let arrived!: () => void;
  const arrival = new Promise<void>((r) => (arrived = r));
  const { port } = await svc.listen((req, res) => {
    if (req.url === '/slow') {
      arrived();
      void held.then(() => res.end('slow done'));
      return;
    }
    res.end('ok');
  });
  await until(() => svc.ready, 'ready');
  const lifecycle: string[] = [];
  for (const e of ['draining', 'stopped'] as const) svc.on(e, () => lifecycle.push(e));

  const slow = request(`http://127.0.0.1:${port}/slow`);
  await arrival;
  assert.equal(svc.inFlight(), 1);

  const stopped = svc.shutdown('test');
  assert.equal(svc.ready, false);
  assert.deepEqual(lifecycle, ['draining']);
  // Within the deregister delay the server still accepts, and tells probes why it is not ready.
  const probe = await get(port, '/readyz');
  assert.deepEqual([probe.status, JSON.parse(probe.text)], [503, { ready: false, reason: 'draining' }]);
  await assert.rejects(svc.listen(() => {}), (e: { code?: string }) => e.code === SERVICE_STOPPED);

  await until(() => eventsOf(w.seen, svc.instanceId).some((e) => e.draining), 'watchers see it draining');
  // A connection that already started a request when accepting stopped is answered 503 and closed.
  const late = connect(port, '127.0.0.1');
  await new Promise((r) => late.once('connect', r));
  late.write('GET /late HTTP/1.1\r\nhost: x\r\n');
  await untilAsync(() => refused(port), 'new connections refused');
  assert.equal(svc.inFlight(), 1, 'the slow request is still running');
  late.write('\r\n');
  const lateAnswer = await readUntilClose(late);
  assert.match(lateAnswer, /^HTTP\/1\.1 503 /);
  assert.match(lateAnswer, /\r\nconnection: close\r\n/i);
  assert.match(lateAnswer, /"code":"unavailable"/);
  assert.ok(!eventsOf(w.seen, svc.instanceId).some((e) => e.type === 'DELETED'), 'not deleted while a request is in flight');

  release();
  const res = await slow;
  assert.equal(res.statusCode, 200);
  assert.equal(await res.body.text(), 'slow done');
  assert.equal(res.headers.connection, 'close', 'its connection is not kept alive');
  await stopped;
  assert.deepEqual(lifecycle, ['draining', 'stopped']);
  assert.equal(svc.inFlight(), 0);
  await until(() => w.client.get('Instance', NS, svc.instanceId) === undefined, 'watchers see it deleted');
  assert.deepEqual(
    eventsOf(w.seen, svc.instanceId).map((e) => `${e.type}${e.draining ? ' draining' : ''}`),
    ['ADDED', 'MODIFIED draining', 'DELETED draining'],
  );
  assert.equal(await svc.shutdown(), undefined, 'shutdown is idempotent');
});

test('the drain timeout bounds a shutdown: a request that never answers has its connection closed', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const svc = serviceOn(cp, { drainTimeoutMs: 100, deregisterDelayMs: 0 });
  let arrived!: () => void;
  const arrival = new Promise<void>((r) => (arrived = r));
  const { port } = await svc.listen(() => arrived()); // never answers
  await until(() => svc.ready, 'ready');
  const hung = request(`http://127.0.0.1:${port}/hang`).then(
    () => 'answered',
    (e: { code?: string }) => e.code,
  );
  await arrival;
  await svc.shutdown();
  assert.equal(await hung, 'UND_ERR_SOCKET');
  assert.ok(svc.logger.warnings.includes('requests still in flight after the drain timeout; closing their connections'));
  assert.deepEqual((await cp.list('Instance', NS)).items, [], 'deregistered all the same');
});

test('a real SIGTERM: the process drains its in-flight request, deregisters and exits 0', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const w = await watchInstances(cp);
  t.after(() => w.close());
  const child = spawnChild({ PLINTH_URL: cp.url, PLINTH_TOKEN: cp.token, PLINTH_NS: NS, PLINTH_TTL: '15' });
  t.after(() => void child.proc.kill('SIGKILL'));
  const { port, instanceId } = await child.waitFor('listening');
  await child.waitFor('registered');

  const slow = request(`http://127.0.0.1:${port}/slow`);
  await child.waitFor('in-flight');
  child.proc.kill('SIGTERM');
  await child.waitFor('draining');
  await until(() => eventsOf(w.seen, instanceId).some((e) => e.draining), 'watchers see it draining');
  assert.equal(child.proc.exitCode, null, 'still running while a request is in flight');
  child.proc.stdin!.write('release\n');

  const res = await slow;
  assert.equal(res.statusCode, 200);
  assert.equal(await res.body.text(), 'slow done');
  assert.deepEqual(await child.exited, { code: 0, signal: null });
  assert.ok(child.lines.some((l) => l.event === 'stopped'));
  await until(() => w.client.get('Instance', NS, instanceId) === undefined, 'watchers see it deleted');
  assert.deepEqual(
    eventsOf(w.seen, instanceId).map((e) => e.type),
    ['ADDED', 'MODIFIED', 'DELETED'],
  );
});
