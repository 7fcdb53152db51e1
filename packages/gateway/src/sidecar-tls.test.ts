/**
 * Two sidecars of one mesh against a REAL plinth server: the callee's sidecar serves its ingress over HTTPS
 * and verifies client certificates (registering an https:// address), the caller's sidecar reaches it from
 * its egress with its own workload certificate, checking the callee's SPIFFE ID. Plain node:http apps stand
 * in for the Python or Go services behind them.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startGateway, type Gateway } from './gateway.js';
import { call, certAuthority, clientCertificate, controlPlane, relay, sleep, tlsGet, upstream, type Ca, type ClientCertFiles, type TestControlPlane, type Upstream } from './testkit.test.helpers.js';

const NS = 'mesh';
const ORDERS_ID = 'spiffe://mesh.example.com/ns/mesh/sa/orders';
const PAYMENTS_ID = 'spiffe://mesh.example.com/ns/mesh/sa/payments';

describe('sidecars with mutual TLS between them (real control plane)', () => {
  let dir: string;
  let cp: TestControlPlane;
  let mesh: Ca;
  let rogue: Ca;
  let ordersCert: ClientCertFiles;
  let paymentsCert: ClientCertFiles;
  let rogueCert: ClientCertFiles;
  let ordersApp: Upstream;
  let paymentsApp: Upstream;
  let orders: Gateway;
  let payments: Gateway;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-sidecar-tls-'));
    cp = await controlPlane();
    [mesh, rogue] = await Promise.all([certAuthority(dir, 'mesh'), certAuthority(dir, 'rogue')]);
    [ordersCert, paymentsCert, rogueCert] = await Promise.all([
      clientCertificate(dir, 'orders', mesh, { server: true, uris: [ORDERS_ID] }),
      // Named by IP too, so that the tests' own clients can check it by hostname; the orders sidecar checks the SPIFFE ID.
      clientCertificate(dir, 'payments', mesh, { server: true, uris: [PAYMENTS_ID], ips: ['127.0.0.1'] }),
      clientCertificate(dir, 'intruder', rogue, { uris: [ORDERS_ID] }),
    ]);
    paymentsApp = await upstream('payments-app');
    payments = await startGateway({
      namespace: NS,
      controlPlane: { url: cp.url, token: cp.token },
      listen: '127.0.0.1:0',
      accessLog: false,
      adminListen: '127.0.0.1:0',
      tls: { cert: paymentsCert.cert, key: paymentsCert.key, clientCa: mesh.cert },
      sidecar: { app: paymentsApp.url, service: 'payments', version: '1.0.0', deregisterDelayMs: 0, instanceId: 'payments-1' },
    });
    // The orders app calls payments through its sidecar's egress, passing on what it was given.
    ordersApp = await upstream('orders-app', (req, res) => {
      relay(res, `${orders.egressUrl}/payments/charge`, { traceparent: String(req.headers.traceparent ?? '') });
    });
    orders = await startGateway({
      namespace: NS,
      controlPlane: { url: cp.url, token: cp.token },
      listen: '127.0.0.1:0',
      accessLog: false,
      upstreamTls: { ca: mesh.cert, cert: ordersCert.cert, key: ordersCert.key, serverIdentity: 'spiffe', trustDomains: ['mesh.example.com'] },
      sidecar: { app: ordersApp.url, service: 'orders', version: '1.0.0', egress: '127.0.0.1:0', deregisterDelayMs: 0, instanceId: 'orders-1' },
    });
  });

  after(async () => {
    await orders?.close();
    await payments?.close();
    for (const u of [ordersApp, paymentsApp]) await u?.close();
    await cp?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('registers the HTTPS ingress under its https:// address', async () => {
    assert.match(payments.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const deadline = Date.now() + 10_000;
    let address: string | undefined;
    while (address === undefined) {
      address = (await cp.list('Instance', NS)).items.find((i) => i.metadata.name === 'payments-1')?.spec.address as string | undefined;
      if (address === undefined) {
        if (Date.now() > deadline) throw new Error('the sidecar never registered');
        await sleep(20);
      }
    }
    assert.equal(address, payments.url);
  });

  it('carries a call from one app to the other over mutual TLS, the callee told who called', async () => {
    const before = paymentsApp.seen.length;
    let r = await call(`${ordersApp.url}/checkout`);
    // The orders sidecar learns of the payments instance through its watch: the first call may race it.
    for (let i = 0; r.status !== 200 && i < 100; i++) {
      await sleep(50);
      r = await call(`${ordersApp.url}/checkout`);
    }
    assert.equal(r.status, 200, r.text);
    const seen = paymentsApp.seen.at(-1)!;
    assert.ok(paymentsApp.seen.length > before);
    assert.equal(seen.url, '/charge');
    assert.equal(seen.headers['plinth-caller'], 'orders');
    assert.match(String(seen.headers['x-forwarded-client-cert']), new RegExp(`^Hash=${ordersCert.hash};Subject="CN=orders";URI=${ORDERS_ID}$`));
    assert.equal(seen.headers['x-forwarded-proto'], 'https');
  });

  it('believes identity headers and the caller only from a peer whose certificate verified', async () => {
    const claims = { 'plinth-caller': 'admin-tool', 'plinth-identity': 'ServiceAccount:mesh/admin', 'plinth-identity-via': 'jwt' };
    const verified = await tlsGet(`${payments.url}/verified`, mesh.pem, ordersCert, claims);
    assert.equal(verified.status, 200, verified.text);
    let seen = paymentsApp.seen.at(-1)!;
    assert.equal(seen.headers['plinth-identity'], 'ServiceAccount:mesh/admin', 'a mesh peer passes on the identity the edge verified');
    assert.equal(seen.headers['plinth-caller'], 'admin-tool');
    for (const client of [undefined, rogueCert]) {
      const r = await tlsGet(`${payments.url}/unverified`, mesh.pem, client, { ...claims, 'x-forwarded-client-cert': 'Hash=00;URI=spiffe://mesh.example.com/ns/mesh/sa/admin' });
      assert.equal(r.status, 200, r.text);
      seen = paymentsApp.seen.at(-1)!;
      assert.equal(seen.url, '/unverified');
      assert.equal(seen.headers['plinth-identity'], undefined, 'an unverified peer cannot claim an identity');
      assert.equal(seen.headers['plinth-identity-via'], undefined);
      assert.equal(seen.headers['plinth-caller'], undefined);
      assert.equal(seen.headers['x-forwarded-client-cert'], undefined, 'nor forge a client certificate');
    }
  });

  it('speaks only TLS on the ingress: a plain HTTP request gets no answer from the app', async () => {
    const before = paymentsApp.seen.length;
    const plain = payments.url.replace('https:', 'http:');
    await assert.rejects(call(`${plain}/plain`));
    assert.equal(paymentsApp.seen.length, before);
    const metrics = (await call(`${payments.adminUrl}/metrics`)).text;
    assert.match(metrics, /^plinth_gateway_tls_handshake_failures_total\{reason="protocol"\} [1-9]/m);
  });
});
