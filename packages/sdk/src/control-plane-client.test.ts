/**
 * The client against a REAL plinth server (started in-process from the server package's build output).
 * Each test starts its own server on a fresh data dir with a 200 ms heartbeat.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Agent } from 'undici';
import { createControlPlaneClient, isControlPlaneError, type ControlPlaneClient, type ControlPlaneClientOptions } from './index.js';
import { TestControlPlane, nextEvent, recordChanges, recordingLogger, stillPending, until } from './testing/control-plane.js';

const tmp = mkdtempSync(join(tmpdir(), 'plinth-sdk-client-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const clients: ControlPlaneClient[] = [];
after(async () => {
  for (const c of clients) await c.close();
});

function client(s: TestControlPlane, o: Partial<ControlPlaneClientOptions> = {}): ControlPlaneClient {
  const c = createControlPlaneClient({
    url: s.url,
    token: s.token,
    kinds: ['Config'],
    namespace: 'app',
    backoff: { initialMs: 20, maxMs: 200 },
    idleTimeoutMs: 3000,
    logger: recordingLogger(),
    ...o,
  });
  clients.push(c);
  return c;
}

const names = (c: ControlPlaneClient) => c.list('Config').map((r) => `${r.metadata.name}@${r.metadata.revision}`).sort();

test('ready resolves once current state is held: a Config applied before start is there', async (t) => {
  const s = await TestControlPlane.start();
  t.after(() => s.destroy());
  const put = await s.putConfig('app', 'checkout', 'maxItems=50');
  await s.putConfig('elsewhere', 'not-mine', 'x');
  const cp = client(s);
  assert.equal(cp.source, 'empty');
  assert.equal(cp.get('Config', 'app', 'checkout'), undefined);
  await cp.ready;
  await cp.started;
  assert.equal(cp.source, 'server');
  assert.equal(cp.connected, true);
  assert.ok(cp.revision >= put.metadata.revision);
  assert.deepEqual(cp.get('Config', 'app', 'checkout')?.spec, { format: 'text', content: 'maxItems=50' });
  assert.deepEqual(names(cp), [`checkout@${put.metadata.revision}`], 'only the namespace asked for');
});

test('a change reaches the client, and a delete removes it', async (t) => {
  const s = await TestControlPlane.start();
  t.after(() => s.destroy());
  const cp = client(s);
  await cp.ready;
  const added = nextEvent(cp, 'change', (ev) => ev.resource.metadata.name === 'feature');
  const put = await s.putConfig('app', 'feature', 'on', { team: 'orders' });
  const [ev] = await added;
  assert.equal(ev.type, 'ADDED');
  assert.equal(ev.revision, put.metadata.revision);
  assert.equal(cp.get('Config', 'app', 'feature')?.metadata.revision, put.metadata.revision, 'the snapshot holds it when the event fires');
  assert.equal(cp.list('Config', { selector: 'team=orders' }).length, 1);
  assert.equal(cp.list('Config', { selector: 'team=billing' }).length, 0);

  const deleted = nextEvent(cp, 'change', (ev) => ev.type === 'DELETED');
  const gone = await s.delete('Config', 'app', 'feature');
  assert.equal((await deleted)[0].revision, gone.metadata.revision);
  assert.equal(cp.get('Config', 'app', 'feature'), undefined);
});

test('resumes after the server restarts: no change missed or duplicated', async (t) => {
  const s = await TestControlPlane.start();
  t.after(() => s.destroy());
  const first = await s.putConfig('app', 'c1', 'v1');
  const cp = client(s);
  const seen = recordChanges(cp);
  await cp.ready;

  const down = nextEvent(cp, 'disconnected');
  await s.stop();
  await down;
  assert.equal(cp.connected, false);
  // Static stability: the data plane still answers from its snapshot.
  assert.equal(cp.get('Config', 'app', 'c1')?.spec.content, 'v1');

  await s.start();
  const writes = [
    await s.putConfig('app', 'c2', 'v1'),
    await s.putConfig('app', 'c1', 'v2'),
    await s.putConfig('app', 'c3', 'v1'),
    await s.delete('Config', 'app', 'c3'),
  ];
  const last = writes[writes.length - 1]!.metadata.revision;
  await until(() => cp.revision >= last, `revision ${last}`);
  await until(() => cp.connected, 'reconnected');

  const revisions = seen.map((e) => e.revision);
  for (let i = 1; i < revisions.length; i++) assert.ok(revisions[i]! > revisions[i - 1]!, `revisions strictly increase: ${revisions.join(',')}`);
  assert.deepEqual(
    seen.map((e) => [e.type, e.resource.metadata.name, e.revision]),
    [
      ['ADDED', 'c1', first.metadata.revision],
      ['ADDED', 'c2', writes[0]!.metadata.revision],
      ['MODIFIED', 'c1', writes[1]!.metadata.revision],
      ['ADDED', 'c3', writes[2]!.metadata.revision],
      ['DELETED', 'c3', writes[3]!.metadata.revision],
    ],
  );
  const server = await s.list('Config', 'app');
  assert.deepEqual(names(cp), server.items.map((r) => `${r.metadata.name}@${r.metadata.revision}`).sort());
});

test('starts from the cache while the server is down; ready waits for the server', async (t) => {
  const s = await TestControlPlane.start();
  t.after(() => s.destroy());
  const cacheFile = join(tmp, 'start-from-cache', 'snapshot.json');
  await s.putConfig('app', 'a', 'cached');
  const cp1 = client(s, { cacheFile });
  await cp1.ready;
  await cp1.close(); // persists the snapshot
  const later = await s.putConfig('app', 'b', 'made while no client ran');
  await s.stop();

  const cp2 = client(s, { cacheFile });
  await cp2.started;
  assert.equal(cp2.source, 'cache');
  assert.equal(cp2.get('Config', 'app', 'a')?.spec.content, 'cached');
  assert.equal(cp2.get('Config', 'app', 'b'), undefined);
  assert.ok(await stillPending(cp2.ready, 400), 'ready must not resolve from a cache alone');
  assert.equal(cp2.connected, false);

  await s.start();
  await cp2.ready;
  assert.equal(cp2.source, 'server');
  assert.ok(cp2.revision >= later.metadata.revision);
  assert.equal(cp2.get('Config', 'app', 'b')?.spec.content, 'made while no client ran');
});

test('RESYNC: a cache older than the compaction point ends with exactly the server’s state', async (t) => {
  const s = await TestControlPlane.start({ retainRevisions: 5 });
  t.after(() => s.destroy());
  const cacheFile = join(tmp, 'resync', 'snapshot.json');
  for (const n of ['keep', 'change', 'drop']) await s.putConfig('app', n, 'v1');
  const cp1 = client(s, { cacheFile });
  await cp1.ready;
  await cp1.close();

  for (let i = 2; i <= 7; i++) await s.putConfig('app', 'change', `v${i}`);
  await s.putConfig('app', 'new', 'v1');
  await s.delete('Config', 'app', 'drop');
  // A start compacts right away (the periodic compaction would too, within a second).
  await s.stop();
  await s.start();

  const log = recordingLogger();
  const cp2 = client(s, { cacheFile, logger: log });
  const seen = recordChanges(cp2);
  await cp2.ready;
  assert.ok(log.debugs.includes('the watch revision was compacted; relisting'), `resynced: ${log.debugs.join(' | ')}`);
  const server = await s.list('Config', 'app');
  assert.deepEqual(names(cp2), server.items.map((r) => `${r.metadata.name}@${r.metadata.revision}`).sort());
  assert.equal(cp2.get('Config', 'app', 'drop'), undefined);
  assert.equal(cp2.get('Config', 'app', 'change')?.spec.content, 'v7');
  // The relist is announced as the differences from the cached snapshot.
  const relisted = seen.slice(3); // the first three are the cache being loaded
  assert.deepEqual(relisted.map((e) => `${e.type} ${e.resource.metadata.name}`).sort(), ['ADDED new', 'DELETED drop', 'MODIFIED change']);
});

test('a corrupt cache is ignored with a warning and replaced', async (t) => {
  const s = await TestControlPlane.start();
  t.after(() => s.destroy());
  const cacheFile = join(tmp, 'corrupt.json');
  writeFileSync(cacheFile, '{"version":1,"revision":12,"items":[{"kind":');
  await s.putConfig('app', 'a', 'x');
  const log = recordingLogger();
  const cp = client(s, { cacheFile, logger: log });
  await cp.ready;
  assert.equal(cp.source, 'server');
  assert.ok(log.warnings.some((w) => w.includes('corrupt')), log.warnings.join(' | '));
  assert.equal(cp.get('Config', 'app', 'a')?.spec.content, 'x');
  await cp.close();
  const saved = JSON.parse(readFileSync(cacheFile, 'utf8')) as { revision: number; items: { metadata: { name: string } }[] };
  assert.equal(saved.revision, cp.revision);
  assert.deepEqual(saved.items.map((i) => i.metadata.name), ['a']);
});

test('a credential is exchanged for a JWT, refreshed at 2/3 of its lifetime', async (t) => {
  const s = await TestControlPlane.start({ tokenTtlSeconds: 3 });
  t.after(() => s.destroy());
  const calls: { path: string; auth: string }[] = [];
  const agent = new Agent();
  t.after(() => agent.close());
  const dispatcher = agent.compose((dispatch) => (opts, handler) => {
    const headers = opts.headers as Record<string, string> | undefined;
    calls.push({ path: `${opts.method} ${opts.path.split('?')[0]}`, auth: headers?.authorization ?? '' });
    return dispatch(opts, handler);
  });
  assert.ok(s.token.startsWith('plinth_'));
  const cp = client(s, { dispatcher });
  await cp.ready;
  assert.equal(calls[0]?.path, 'POST /v1/auth/token');
  assert.equal(calls[0]?.auth, `Bearer ${s.token}`);
  const api = calls.filter((c) => !c.path.startsWith('POST /v1/auth/token'));
  assert.ok(api.length >= 2 && api.every((c) => c.auth.startsWith('Bearer eyJ')), 'list and watch carry the JWT, not the credential');
  await until(() => calls.filter((c) => c.path === 'POST /v1/auth/token').length >= 2, 'a refresh about 2 s in', 5000);
});

test('a rejected token keeps the client retrying with backoff, and says so', async (t) => {
  const s = await TestControlPlane.start();
  t.after(() => s.destroy());
  const log = recordingLogger();
  const cp = client(s, { token: 'eyJhbGciOiJFUzI1NiJ9.e30.bogus', logger: log });
  const failures: { status: number; failures: number; retryInMs: number }[] = [];
  cp.on('syncFailed', ({ error, failures: n, retryInMs }) => failures.push({ status: isControlPlaneError(error) ? error.status : 0, failures: n, retryInMs }));
  assert.ok(await stillPending(cp.ready, 400));
  assert.ok(log.warnings.some((w) => w.includes('cannot sync')), log.warnings.join(' | '));
  assert.ok(log.debugs.length >= 1, 'and kept trying');
  // Every failed round is an event with the server's status, counted, with the delay before the next.
  assert.ok(failures.length >= 2, JSON.stringify(failures));
  assert.deepEqual(failures.map((f) => [f.status, f.failures]).slice(0, 2), [[401, 1], [401, 2]]);
  assert.ok(failures.every((f) => f.retryInMs >= 0));
});
