/**
 * Sidecar mode against a REAL plinth server: a plain node:http app (standing in for a Python service) is
 * registered through the sidecar, governed by its inbound rules, and calls another service through the
 * egress port with lanes and retries from the engine.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGateway, type Gateway } from './gateway.js';
import { call, controlPlane, relay, sleep, upstream, type TestControlPlane as ControlPlane, type Upstream } from './testkit.test.helpers.js';

const NS = 'side';
const PASS_ON = ['traceparent', 'baggage', 'plinth-timeout-ms', 'x-request-id'];

describe('gateway sidecar (real control plane)', () => {
  let cp: ControlPlane;
  let gw: Gateway;
  let app: Upstream;
  let base: Upstream;
  let gray: Upstream;
  let baseCalls = 0;
  let egress = '';

  const put = (kind: string, name: string, spec: unknown) => cp.api('PUT', `/v1/resources/${kind}/${NS}/${name}`, { spec });

  before(async () => {
    cp = await controlPlane();
    // The "app": answers /hello itself and, for /call, calls payments through the egress, passing on the
    // context headers it received, as an app behind any mesh sidecar does.
    app = await upstream('app', (req, res) => {
      if (!req.url?.startsWith('/call')) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`hi from ${String(req.headers['plinth-caller'] ?? 'nobody')}`);
        return;
      }
      const headers: Record<string, string> = {};
      for (const h of PASS_ON) if (typeof req.headers[h] === 'string') headers[h] = req.headers[h];
      const viaHost = req.url.includes('host=1');
      const target = viaHost ? `${egress}/charge` : `${egress}/payments/charge`;
      if (viaHost) headers.host = 'payments';
      relay(res, target, headers);
    });
    base = await upstream('base', (_req, res) => {
      baseCalls++;
      res.writeHead(baseCalls % 2 === 1 ? 503 : 200);
      res.end(baseCalls % 2 === 1 ? 'busy' : 'base');
    });
    gray = await upstream('gray', (_req, res) => res.end('gray'));
    await put('Instance', 'payments-base', { service: 'payments', version: '1.0.0', address: base.address, leaseTtlSeconds: 3600 });
    await put('Instance', 'payments-gray', { service: 'payments', version: '1.1.0', lane: 'gray', address: gray.address, leaseTtlSeconds: 3600 });
    await put('TrafficPolicy', 'lanes', { lanes: [{ name: 'gray', services: ['payments'], entry: [{ match: { headers: { 'x-lane': { exact: 'gray' } } } }] }] });
    await put('FaultTolerance', 'rules', {
      rules: [
        { name: 'orders-limit', targets: [{ service: 'orders', endpoints: ['/limited'] }], strategies: [{ type: 'rateLimit', threshold: 2, statDurationSec: 60 }] },
        { name: 'payments-retry', targets: [{ service: 'payments' }], strategies: [{ type: 'retry', maxAttempts: 3, backoffBaseMs: 1, backoffCapMs: 5 }] },
      ],
    });
    gw = await startGateway({
      namespace: NS,
      controlPlane: { url: cp.url, token: cp.token },
      listen: '127.0.0.1:0',
      accessLog: false,
      sidecar: { app: app.url, service: 'orders', version: '2.0.0', egress: '127.0.0.1:0', deregisterDelayMs: 0, instanceId: 'orders-sidecar-1' },
      requestId: true,
    });
    egress = gw.egressUrl!;
  });

  after(async () => {
    await gw?.close();
    for (const u of [app, base, gray]) await u?.close();
    await cp?.destroy();
  });

  it('registers the app as an Instance whose address is the sidecar ingress', async () => {
    const deadline = Date.now() + 10_000;
    let found: any;
    while (found === undefined) {
      found = (await cp.list('Instance', NS)).items.find((i) => i.metadata.name === 'orders-sidecar-1');
      if (found === undefined) {
        if (Date.now() > deadline) throw new Error('the sidecar never registered');
        await sleep(20);
      }
    }
    assert.equal(found.spec.service, 'orders');
    assert.equal(found.spec.version, '2.0.0');
    assert.equal(found.spec.address, gw.url);
    assert.equal((await call(`${gw.url}/readyz`)).status, 200);
  });

  it('forwards to the app with the caller as it came', async () => {
    const r = await call(`${gw.url}/hello`, { headers: { 'plinth-caller': 'web' } });
    assert.equal(r.status, 200);
    assert.equal(r.text, 'hi from web');
  });

  it('applies the app service inbound rate limit in front of the app', async () => {
    const before = app.seen.length;
    assert.equal((await call(`${gw.url}/limited`)).status, 200);
    assert.equal((await call(`${gw.url}/limited`)).status, 200);
    const r = await call(`${gw.url}/limited`);
    assert.equal(r.status, 429);
    assert.equal(r.json().code, 'rate_limited');
    assert.equal(app.seen.length, before + 2, 'the refused request never reached the app');
  });

  it('gives egress calls discovery and retries: a 503 from payments is retried', async () => {
    baseCalls = 0;
    const r = await call(`${gw.url}/call`);
    assert.equal(r.status, 200);
    assert.equal(r.text, 'base');
    assert.equal(baseCalls, 2);
    assert.equal(base.seen.at(-1)!.headers['plinth-caller'], 'orders', 'the app calls as its service');
  });

  it('keeps the request ID a caller sent through the app to its own calls, and gives one to a request without', async () => {
    const r = await call(`${gw.url}/call`, { headers: { 'x-request-id': 'checkout-42' } });
    assert.equal(r.headers['x-request-id'], 'checkout-42', 'the caller (another sidecar, the edge) set it: kept');
    assert.equal(app.seen.at(-1)!.headers['x-request-id'], 'checkout-42');
    assert.equal(base.seen.at(-1)!.headers['x-request-id'], 'checkout-42', 'the app passed it on through the egress, which kept it');
    const fresh = await call(`${gw.url}/hello`);
    assert.match(String(fresh.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.equal(app.seen.at(-1)!.headers['x-request-id'], fresh.headers['x-request-id']);
  });

  it('carries the lane entered at the ingress through the app to the lane instance, by path or by Host', async () => {
    assert.equal((await call(`${gw.url}/call`, { headers: { 'x-lane': 'gray' } })).text, 'gray');
    assert.equal((await call(`${gw.url}/call?host=1`, { headers: { 'x-lane': 'gray' } })).text, 'gray');
    assert.match(String(gray.seen.at(-1)!.headers.baggage), /plinth\.lane=gray/);
  });

  it('answers 404 on the egress when no service is named', async () => {
    const r = await call(`${egress}/`);
    assert.equal(r.status, 404);
  });
});

describe('sidecar health probe of its app (real control plane)', () => {
  it('registers the app critical until its probe passes, critical again after failures in a row, passing when it recovers', async () => {
    const cp = await controlPlane();
    let status = 503;
    let probes = 0;
    const app = await upstream('probed', (req, res) => {
      if (req.url === '/health') probes++;
      res.writeHead(req.url === '/health' ? status : 200);
      res.end();
    });
    const gw = await startGateway({
      namespace: NS,
      controlPlane: { url: cp.url, token: cp.token },
      listen: '127.0.0.1:0',
      adminListen: '127.0.0.1:0',
      accessLog: false,
      sidecar: { app: app.url, service: 'probed', version: '1.0.0', deregisterDelayMs: 0, instanceId: 'probed-1', appHealth: { check: { http: '/health' }, intervalMs: 40, timeoutMs: 500, unhealthyThreshold: 2 } },
    });
    try {
      const healthOf = async () => ((await cp.list('Instance', NS)).items.find((i) => i.metadata.name === 'probed-1')?.spec as { health?: string } | undefined)?.health;
      const metric = async () => /^plinth_gateway_app_healthy (\d)$/m.exec((await call(`${gw.adminUrl}/metrics`)).text)?.[1];
      const waitFor = async (what: string, want: string) => {
        const deadline = Date.now() + 10_000;
        while ((await healthOf()) !== want) {
          if (Date.now() > deadline) throw new Error(`${what}: health ${String(await healthOf())}`);
          await sleep(20);
        }
      };
      await waitFor('registered while the app is not healthy yet', 'critical');
      const seen = probes;
      await sleep(200);
      assert.ok(probes > seen, 'probed every interval');
      assert.equal(await healthOf(), 'critical');
      assert.equal(await metric(), '0');
      const notReady = await call(`${gw.url}/readyz`);
      assert.deepEqual([notReady.status, notReady.json().reason], [503, 'unhealthy'], 'the ingress is not ready for a readiness probe either');
      status = 204;
      await waitFor('passing once a probe passes', 'passing');
      assert.equal(await metric(), '1');
      assert.equal((await call(`${gw.url}/readyz`)).status, 200);
      status = 500;
      await waitFor('critical after two failures in a row', 'critical');
      status = 200;
      await waitFor('passing again', 'passing');
      // The app gone: the connection refused fails the probe as a 5xx does.
      await app.close();
      await waitFor('critical when the app is down', 'critical');
    } finally {
      await gw.close();
      await app.close().catch(() => undefined);
      await cp.destroy();
    }
  });

  it('refuses probe options that could never pass, at startup', async () => {
    const cp = await controlPlane();
    try {
      const base = { namespace: NS, controlPlane: { url: cp.url, token: cp.token }, listen: '127.0.0.1:0', accessLog: false as const };
      const app = { app: 'http://127.0.0.1:1', service: 'x', version: '1.0.0' };
      await assert.rejects(startGateway({ ...base, sidecar: { ...app, appHealth: { check: { http: 'health' } } } }), /appHealth.check.http must be a path/);
      await assert.rejects(startGateway({ ...base, sidecar: { ...app, appHealth: { check: { grpc: '' } } } }), /needs appProtocol h2c/);
      await assert.rejects(startGateway({ ...base, sidecar: { ...app, appHealth: { check: { http: '/h' }, intervalMs: 0 } } }), /intervalMs must be a positive integer/);
    } finally {
      await cp.destroy();
    }
  });
});
