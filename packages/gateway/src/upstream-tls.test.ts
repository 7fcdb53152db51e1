/**
 * TLS from the gateway to upstream instances registered with https:// addresses, on loopback: real node:https
 * upstreams (one asking for client certificates), throwaway CAs and workload certificates made with openssl,
 * the CA and client certificate reloaded from their files.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import type { StaticGovernance } from '@plinth/sdk';
import { WebSocketServer } from 'ws';
import type { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import { call, certAuthority, clientCertificate, instance, opened, roundTrip, route, staticGateway, until, type Ca, type ClientCertFiles } from './testkit.test.helpers.js';
import { TlsConfigError } from './tls.js';
import { UpstreamTls } from './upstream-tls.js';

const GATEWAY_ID = 'spiffe://mesh.example.com/ns/edge/sa/gateway';
const PAYMENTS_ID = 'spiffe://mesh.example.com/ns/retail/sa/payments';

interface TlsUpstream {
  address: string;
  server: Server;
  /** The client certificate's URI SANs, per request, as the upstream saw them ('' without one). */
  peers: string[];
  close(): Promise<void>;
}

/**
 * An HTTPS upstream answering `<name> <client URI SAN>`; `clientCa` makes it ask for a client certificate and
 * refuse connections without one that verifies. Each answer closes its connection, so every request is a
 * new handshake and a reloaded client certificate shows at once.
 */
async function tlsUpstream(name: string, cert: ClientCertFiles, clientCa?: Ca): Promise<TlsUpstream> {
  const peers: string[] = [];
  const server = createServer(
    { cert: cert.pem, key: cert.keyPem, ...(clientCa !== undefined ? { ca: clientCa.pem, requestCert: true, rejectUnauthorized: true } : {}) },
    (req, res) => {
      const san = (req.socket as TLSSocket).getPeerCertificate().subjectaltname ?? '';
      peers.push(san);
      res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
      res.end(`${name} ${san}`);
    },
  );
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`${name}:${String(m)}`)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    address: `https://127.0.0.1:${port}`,
    server,
    peers,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

async function replace(path: string, content: string): Promise<void> {
  await writeFile(`${path}.new`, content);
  await rename(`${path}.new`, path);
}

describe('gateway TLS to upstreams', () => {
  let dir: string;
  let mesh: Ca;
  let rogue: Ca;
  let gatewayCert: ClientCertFiles;
  let rotatedCert: ClientCertFiles;
  /** payments: named by IP and SPIFFE ID, asks for a client certificate. */
  let mtls: TlsUpstream;
  /** named by SPIFFE ID only, as mesh workloads are: no hostname check can pass. */
  let spiffeOnly: TlsUpstream;
  let foreignDomain: TlsUpstream;
  let untrusted: TlsUpstream;
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let clientFiles: { cert: string; key: string };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-upstream-tls-'));
    [mesh, rogue] = await Promise.all([certAuthority(dir, 'mesh'), certAuthority(dir, 'rogue')]);
    const [paymentsCert, spiffeCert, foreignCert, rogueCert] = await Promise.all([
      clientCertificate(dir, 'payments', mesh, { server: true, uris: [PAYMENTS_ID], ips: ['127.0.0.1'] }),
      clientCertificate(dir, 'spiffe-only', mesh, { server: true, uris: [PAYMENTS_ID] }),
      clientCertificate(dir, 'foreign-domain', mesh, { server: true, uris: ['spiffe://other.example.com/ns/retail/sa/payments'] }),
      clientCertificate(dir, 'rogue-server', rogue, { server: true, uris: [PAYMENTS_ID], ips: ['127.0.0.1'] }),
    ]);
    [gatewayCert, rotatedCert] = await Promise.all([
      clientCertificate(dir, 'gateway', mesh, { uris: [GATEWAY_ID] }),
      clientCertificate(dir, 'rotated', mesh, { uris: ['spiffe://mesh.example.com/ns/edge/sa/gateway-next'] }),
    ]);
    // The files the gateway reads and watches: copies, so that the test can replace them.
    clientFiles = { cert: join(dir, 'client.crt'), key: join(dir, 'client.key') };
    await writeFile(clientFiles.cert, gatewayCert.pem);
    await writeFile(clientFiles.key, gatewayCert.keyPem);
    [mtls, spiffeOnly, foreignDomain, untrusted] = await Promise.all([
      tlsUpstream('payments', paymentsCert, mesh),
      tlsUpstream('spiffe-only', spiffeCert, mesh),
      tlsUpstream('foreign', foreignCert),
      tlsUpstream('untrusted', rogueCert),
    ]);
    ({ gw, governance, routes } = await staticGateway({ accessLog: false, upstreamTls: { ca: mesh.cert, ...clientFiles, reloadIntervalMs: 50 } }));
    governance.set({
      instances: [
        instance('payments-1', 'payments', mtls.address),
        instance('spiffe-1', 'spiffe-only', spiffeOnly.address),
        instance('untrusted-1', 'untrusted', untrusted.address),
      ],
    });
    routes.set([
      route('payments', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/pay' } }, service: 'payments' }),
      route('spiffe', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/spiffe' } }, service: 'spiffe-only' }),
      route('untrusted', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/untrusted' } }, service: 'untrusted' }),
    ]);
  });

  after(async () => {
    await gw?.close();
    for (const u of [mtls, spiffeOnly, foreignDomain, untrusted]) await u?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reaches an https:// instance verified against the CA bundle, presenting the client certificate', async () => {
    const r = await call(`${gw.url}/pay/charge`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, `payments URI:${GATEWAY_ID}`);
  });

  it('refuses an upstream whose certificate does not chain to the CA bundle: 502, nothing sent, the gateway unharmed', async () => {
    const r = await call(`${gw.url}/untrusted/x`);
    assert.ok(r.status === 502 || r.status === 503, `${r.status} ${r.text}`);
    assert.match(String(r.headers['content-type']), /application\/problem\+json/);
    assert.equal(untrusted.peers.length, 0, 'no request reached the unverified upstream');
    assert.equal((await call(`${gw.url}/pay/again`)).status, 200);
  });

  it('checks the hostname by default: a certificate naming only a SPIFFE ID is refused for an IP address', async () => {
    const r = await call(`${gw.url}/spiffe/x`);
    assert.ok(r.status === 502 || r.status === 503, `${r.status} ${r.text}`);
    assert.equal(spiffeOnly.peers.length, 0);
  });

  it('takes the SPIFFE ID as the server identity when told, within the accepted trust domains', async () => {
    const { gw: g, governance: gov, routes: rs } = await staticGateway({
      accessLog: false,
      upstreamTls: { ca: mesh.cert, ...clientFiles, serverIdentity: 'spiffe', trustDomains: ['mesh.example.com'] },
    });
    try {
      gov.set({ instances: [instance('spiffe-1', 'spiffe-only', spiffeOnly.address), instance('foreign-1', 'foreign', foreignDomain.address)] });
      rs.set([
        route('spiffe', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/spiffe' } }, service: 'spiffe-only' }),
        route('foreign', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/foreign' } }, service: 'foreign' }),
      ]);
      const ok = await call(`${g.url}/spiffe/x`);
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.text, `spiffe-only URI:${GATEWAY_ID}`);
      const refused = await call(`${g.url}/foreign/x`);
      assert.ok(refused.status === 502 || refused.status === 503, `${refused.status} ${refused.text}`);
      assert.equal(foreignDomain.peers.length, 0, 'an upstream of another trust domain was sent nothing');
    } finally {
      await g.close();
    }
  });

  it('upgrades WebSockets to an https:// instance over TLS with the same certificates', async () => {
    routes.set([
      route('payments', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/pay' } }, service: 'payments' }),
      route('ws', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/ws' } }, service: 'payments' }),
    ]);
    const ws = await opened(`${gw.url.replace('http:', 'ws:')}/ws/feed`);
    try {
      assert.equal(await roundTrip(ws, 'hi'), 'payments:hi');
    } finally {
      ws.close();
    }
  });

  it('presents a renewed client certificate on new connections once its files change', async () => {
    await replace(clientFiles.key, rotatedCert.keyPem);
    await replace(clientFiles.cert, rotatedCert.pem);
    await until('the renewed certificate in use', async () => (await call(`${gw.url}/pay/renewed`)).text.endsWith('gateway-next'));
    // A half-written pair (a key that is not the certificate's) is refused; the last good one stays.
    await writeFile(clientFiles.key, gatewayCert.keyPem);
    await new Promise((r) => setTimeout(r, 300));
    const r = await call(`${gw.url}/pay/still`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, 'payments URI:spiffe://mesh.example.com/ns/edge/sa/gateway-next');
  });

  it('fails to start on unusable files or options, naming what is wrong', async () => {
    const cases: [Parameters<typeof UpstreamTls.load>[0], RegExp][] = [
      [{ cert: gatewayCert.cert }, /both a certificate and its key/],
      [{ ca: join(dir, 'missing.crt') }, /cannot read the upstream TLS CA bundle .*missing\.crt: no such file/],
      [{ ca: gatewayCert.key }, /upstream TLS CA bundle .* holds no PEM certificate/],
      [{ cert: gatewayCert.cert, key: rotatedCert.key }, /upstream TLS key .* does not belong to the certificate/],
      [{ serverIdentity: 'dns' as 'spiffe' }, /serverIdentity is 'hostname' or 'spiffe'/],
      [{ trustDomains: ['mesh.example.com'] }, /trustDomains apply to serverIdentity spiffe only/],
      [{ serverIdentity: 'spiffe', trustDomains: ['Mesh Example'] }, /trust domain "Mesh Example"/],
    ];
    for (const [o, message] of cases) {
      assert.throws(() => UpstreamTls.load(o), (e: unknown) => e instanceof TlsConfigError && message.test(e.message), JSON.stringify(o));
    }
  });
});
