/**
 * Registration and leases against a REAL plinth server (TestControlPlane, lease sweep every second).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { createClient } from '../client/index.js';
import { createControlPlaneClient } from '../control-plane-client.js';
import { StaticGovernance } from '../governance/source.js';
import { TestControlPlane, recordingLogger, until } from '../testing/control-plane.js';
import { ALREADY_LISTENING, createService, type Service } from './index.js';
import { FAST_BACKOFF, NS, eventsOf, get, serviceOn, spawnChild, watchInstances } from './testkit.test.helpers.js';

const execFileAsync = promisify(execFile);
const ok = (_req: unknown, res: { end(s: string): void }) => res.end('ok');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function stopAll(...services: Service[]): Promise<void> {
  for (const s of services) await s.shutdown('test done');
}

test('registers: the Instance appears to a watcher with its version, lane, zone, address; the probes answer', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const w = await watchInstances(cp);
  t.after(() => w.close());
  const svc = serviceOn(cp, { lane: 'gray', zone: 'eu-1a', region: 'eu-1', weight: 40, metadata: { build: '77' } });
  t.after(() => stopAll(svc));
  const registered = new Promise<void>((r) => svc.on('registered', r));

  assert.equal(svc.ready, false);
  const { port, address } = await svc.listen(ok);
  assert.equal(address, `http://127.0.0.1:${port}`);
  await registered;
  await until(() => w.client.get('Instance', NS, svc.instanceId) !== undefined, 'the watcher sees the instance');

  const inst = w.client.get('Instance', NS, svc.instanceId)!;
  assert.equal(inst.metadata.labels['plinth.dev/service'], 'orders');
  assert.equal(inst.metadata.labels['plinth.dev/lane'], 'gray');
  assert.deepEqual(
    { ...(inst.spec as object) },
    { service: 'orders', version: '1.4.2', lane: 'gray', zone: 'eu-1a', region: 'eu-1', weight: 40, address, metadata: { build: '77' }, health: 'passing', draining: false, leaseTtlSeconds: 15 },
  );
  assert.match(svc.instanceId, /^orders-[a-z0-9.-]+-\d+-[0-9a-f]{6}$/);

  await until(() => svc.ready, 'ready');
  assert.deepEqual(await get(port, '/readyz').then((r) => [r.status, JSON.parse(r.text)]), [200, { ready: true }]);
  assert.equal((await get(port, '/healthz')).status, 200);
  assert.equal((await get(port, '/anything')).text, 'ok', 'other paths reach the handler');
  assert.equal(svc.inFlight(), 0, 'finished requests are no longer counted');
  await assert.rejects(svc.listen(ok), (e: { code?: string }) => e.code === ALREADY_LISTENING);
});

test('setHealth changes the registered health: a critical instance is not routed to, a passing one again', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const w = await watchInstances(cp);
  t.after(() => w.close());
  const svc = serviceOn(cp, { health: 'critical', leaseTtlSeconds: 2 });
  t.after(() => stopAll(svc));
  const healthOf = () => (w.client.get('Instance', NS, svc.instanceId)?.spec as { health?: string } | undefined)?.health;
  // Changed before the registration went out: the registration carries it.
  svc.setHealth('warning');
  const { port } = await svc.listen(ok);
  await until(() => healthOf() === 'warning', 'registered as warning');
  svc.setHealth('critical');
  assert.equal(svc.currentHealth, 'critical');
  await until(() => healthOf() === 'critical', 'critical at the server');
  await until(() => svc.governance.endpoints('orders').all.items.length === 0, "the service's own view: nothing routable");
  assert.equal(svc.ready, false, 'a critical service is not ready');
  assert.deepEqual(await get(port, '/readyz').then((r) => [r.status, JSON.parse(r.text)]), [503, { ready: false, reason: 'unhealthy' }]);
  const caller = createClient({ self: 'web', governance: svc.governance });
  t.after(() => caller.close());
  const once = { maxAttempts: 1, retryOn: [] };
  await assert.rejects(caller.request('orders', { method: 'GET', path: '/x', retry: once }), (e: { code?: string }) => e.code === 'no_endpoint', 'a critical instance is not called');
  svc.setHealth('passing');
  await until(() => healthOf() === 'passing', 'passing again');
  await until(() => svc.governance.endpoints('orders').all.items.length === 1 && svc.ready, 'routable and ready again');
  assert.equal((await caller.request('orders', { method: 'GET', path: '/x' })).text(), 'ok');
  // Past the TTL: the health PUT revived the lease and renewals go on.
  await sleep(2500);
  assert.equal(healthOf(), 'passing');
  assert.throws(() => svc.setHealth('dead' as never), /health must be one of/);
});

test('lease renewals keep the instance alive past its TTL', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const w = await watchInstances(cp);
  t.after(() => w.close());
  const svc = serviceOn(cp, { leaseTtlSeconds: 2 });
  t.after(() => stopAll(svc));
  await svc.listen(ok);
  await until(() => svc.ready, 'ready');

  await sleep(5000); // 2.5 TTLs: without renewals the sweeper would have removed it
  assert.deepEqual(eventsOf(w.seen, svc.instanceId).map((e) => e.type), ['ADDED']);
  assert.ok((await cp.list('Instance', NS)).items.some((r) => r.metadata.name === svc.instanceId));
  assert.equal(svc.ready, true);
});

test('a crashed process (SIGKILL) stops renewing: the lease lapses and watchers see DELETED', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const w = await watchInstances(cp);
  t.after(() => w.close());
  const child = spawnChild({ PLINTH_URL: cp.url, PLINTH_TOKEN: cp.token, PLINTH_NS: NS, PLINTH_TTL: '1' });
  t.after(() => void child.proc.kill('SIGKILL'));
  const { instanceId } = await child.waitFor('listening');
  await child.waitFor('registered');
  await until(() => w.client.get('Instance', NS, instanceId) !== undefined, 'the watcher sees the instance');

  child.proc.kill('SIGKILL');
  assert.equal((await child.exited).signal, 'SIGKILL');
  await until(() => w.client.get('Instance', NS, instanceId) === undefined, 'the lease to lapse');
  const events = eventsOf(w.seen, instanceId);
  assert.deepEqual(
    events.map((e) => e.type),
    ['ADDED', 'DELETED'],
  );
  assert.equal(events[1]!.draining, false, 'removed by the lease sweeper, not drained');
});

test('a lost lease (the Instance deleted by an operator) is noticed at the next renewal: it registers again', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const w = await watchInstances(cp);
  t.after(() => w.close());
  const svc = serviceOn(cp, { leaseTtlSeconds: 1 });
  t.after(() => stopAll(svc));
  const events: string[] = [];
  svc.on('registered', () => events.push('registered'));
  svc.on('lease_lost', () => events.push('lease_lost'));
  await svc.listen(ok);
  await until(() => svc.ready, 'ready');

  await cp.delete('Instance', NS, svc.instanceId);
  await until(() => events.length >= 3, 'lease_lost then registered');
  assert.deepEqual(events, ['registered', 'lease_lost', 'registered']);
  await until(() => w.client.get('Instance', NS, svc.instanceId) !== undefined, 'the watcher sees it again');
  assert.deepEqual(
    eventsOf(w.seen, svc.instanceId).map((e) => e.type),
    ['ADDED', 'DELETED', 'ADDED'],
  );
  await until(() => svc.ready, 'ready again');
});

test('renewals failing while the control plane is down are retried: the service keeps serving and stays registered', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const svc = serviceOn(cp, { leaseTtlSeconds: 3 });
  t.after(() => stopAll(svc));
  const { port } = await svc.listen(ok);
  await until(() => svc.ready, 'ready');

  await cp.stop();
  await until(() => svc.logger.warnings.includes('cannot renew the instance lease; retrying'), 'a failed renewal');
  assert.equal((await get(port, '/')).text, 'ok');
  assert.equal(svc.ready, true, 'a control-plane outage does not make the fleet unready');

  await cp.start();
  // Renewed in time or, if the lease lapsed meanwhile, registered again: either way it is back.
  await until(() => svc.ready, 'ready');
  const w = await watchInstances(cp);
  t.after(() => w.close());
  await until(() => w.client.get('Instance', NS, svc.instanceId) !== undefined, 'the instance registered at the server', 15_000);
});

test('a client built elsewhere serves governance; with `registry` the service registers through it', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const client = createControlPlaneClient({ url: cp.url, token: cp.token, kinds: ['Instance', 'FaultTolerance', 'TrafficPolicy', 'FaultInjection'], namespace: NS, backoff: FAST_BACKOFF, logger: recordingLogger() });
  t.after(() => client.close());
  const svc = serviceOn(cp, { controlPlane: client, registry: { url: cp.url, token: cp.token } });
  assert.equal(svc.controlPlane, client);
  await svc.listen(ok);
  await until(() => svc.ready, 'ready');
  await until(() => svc.governance.endpoints('orders').size === 1, 'its own instance in governance');
  await svc.shutdown();
  await until(() => client.get('Instance', NS, svc.instanceId) === undefined, 'deregistered');
  assert.equal(client.connected, true, 'the caller still owns (and uses) its client');
});

test('standalone (no control plane): static governance, ready once listening, shutdown without any call', async (t) => {
  const svc = createService({ name: 'orders', version: '1', namespace: NS, handleSignals: false, deregisterDelayMs: 0 });
  t.after(() => svc.shutdown());
  assert.ok(svc.governance instanceof StaticGovernance);
  assert.equal(svc.controlPlane, undefined);
  await svc.started;
  const { port } = await svc.listen(ok);
  assert.equal(svc.ready, true);
  assert.equal((await get(port, '/readyz')).status, 200);
  const stopped = new Promise<void>((r) => svc.on('stopped', r));
  await svc.shutdown();
  await stopped;
  assert.equal(svc.ready, false);
});

test('options the server would reject fail at construction', () => {
  assert.throws(() => createService({ name: 'Orders', version: '1', namespace: NS, handleSignals: false }), TypeError);
  assert.throws(() => createService({ name: 'orders', version: '1', namespace: NS, lane: 'Gray Lane', handleSignals: false }), TypeError);
  assert.throws(() => createService({ name: 'orders', version: '1', namespace: NS, weight: 20_000, handleSignals: false }), TypeError);
  assert.throws(() => createService({ name: 'orders', version: '1', namespace: NS, leaseTtlSeconds: 0, handleSignals: false }), RangeError);
});

test('/readyz is 503 registering while the snapshot is current but registration keeps failing', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const client = createControlPlaneClient({ url: cp.url, token: cp.token, kinds: ['Instance'], namespace: NS, backoff: FAST_BACKOFF, logger: recordingLogger() });
  t.after(() => client.close());
  const svc = serviceOn(cp, { controlPlane: client, registry: { url: cp.url, token: 'not-a-valid-token' } });
  t.after(() => svc.shutdown());
  const { port } = await svc.listen(ok);
  await client.ready;
  await until(() => svc.logger.warnings.includes('cannot register with the control plane; serving meanwhile and retrying'), 'a refused registration');
  const probe = await get(port, '/readyz');
  assert.deepEqual([probe.status, JSON.parse(probe.text)], [503, { ready: false, reason: 'registering' }]);
  assert.equal(svc.ready, false);
});

test('serves HTTPS with tls, registers its https:// address, and a client with the CA and a certificate calls it by name', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'plinth-sdk-tls-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const certFile = join(dir, 'svc.crt');
  const keyFile = join(dir, 'svc.key');
  // One self-signed certificate serves as the service's, as its CA for client certificates and as the client's.
  await execFileAsync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=orders', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1', '-keyout', keyFile, '-out', certFile]);
  const cert = await readFile(certFile, 'utf8');
  const key = await readFile(keyFile, 'utf8');
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const w = await watchInstances(cp);
  t.after(() => w.close());
  const svc = serviceOn(cp);
  t.after(() => stopAll(svc));

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    res.end(`verified ${String((req.socket as TLSSocket).authorized)}`);
  };
  const { port, address } = await svc.listen(handler, { tls: { cert, key, ca: cert, requestCert: true, rejectUnauthorized: true } });
  assert.equal(address, `https://127.0.0.1:${port}`);
  await until(() => (w.client.get('Instance', NS, svc.instanceId)?.spec as { address?: string } | undefined)?.address === address, 'the https:// address registered');
  await until(() => svc.ready, 'ready');
  await until(() => svc.governance.endpoints('orders').all.items.length > 0, 'the clients see the instance');

  const client = createClient({ self: 'web', governance: svc.governance, tls: { ca: cert, cert, key } });
  t.after(() => client.close());
  const r = await client.request('orders', { method: 'GET', path: '/hello' });
  assert.equal(r.status, 200);
  assert.equal(r.text(), 'verified true');
  // Without the CA the service is not trusted; without a certificate the service refuses the handshake.
  const once = { maxAttempts: 1, retryOn: [] };
  for (const tls of [undefined, { ca: cert }]) {
    const other = createClient({ self: 'web', governance: svc.governance, ...(tls ? { tls } : {}) });
    t.after(() => other.close());
    await assert.rejects(other.request('orders', { method: 'GET', path: '/hello', retry: once }), JSON.stringify(Object.keys(tls ?? {})));
  }
  assert.throws(() => createClient({ self: 'web', governance: svc.governance, tls: { cert } }), /tls.cert and tls.key go together/);
});
