/**
 * Mutual TLS at the edge on loopback: throwaway CAs and client certificates made with openssl (a SPIFFE ID
 * in a URI SAN), real undici, node:http2 and ws clients presenting them, a real node:http upstream.
 */
import assert from 'node:assert/strict';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { RoleBindingSpec } from '@plinth/core';
import type { StaticGovernance } from '@plinth/sdk';
import WebSocket from 'ws';
import { certOutcome, forwardedCert, parseSpiffeId, sansOf, type ClientCert } from './client-cert.js';
import type { CompiledAuth } from './routes.js';
import { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import {
  call,
  certAuthority,
  clientCertificate,
  instance,
  resource,
  roundTrip,
  route,
  selfSigned,
  staticGateway,
  tlsGet,
  until,
  upstream,
  wsUpstream,
  type Ca,
  type CertPair,
  type ClientCertFiles,
  type Got,
  type Upstream,
  type WsUpstream,
} from './testkit.test.helpers.js';
import { TlsConfigError } from './tls.js';

const SPIFFE = 'spiffe://prod.example.com/ns/retail/sa/billing';

async function replace(path: string, content: string): Promise<void> {
  await writeFile(`${path}.new`, content);
  await rename(`${path}.new`, path);
}

/** The mTLS refusal counters on the admin listener, by reason. */
async function refusals(adminUrl: string): Promise<Record<string, number>> {
  const text = (await call(`${adminUrl}/metrics`)).text;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^plinth_gateway_mtls_refusals_total\{reason="(\w+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

async function handshakeFailures(adminUrl: string): Promise<number> {
  const text = (await call(`${adminUrl}/metrics`)).text;
  let n = 0;
  for (const m of text.matchAll(/^plinth_gateway_tls_handshake_failures_total\{reason="\w+"\} (\d+)$/gm)) n += Number(m[1]);
  return n;
}


/** One HTTP/2 request presenting `client`. */
async function get2(url: string, serverCa: string, client: { pem: string; keyPem: string } | undefined, path: string, headers: Record<string, string> = {}): Promise<Got> {
  const session: ClientHttp2Session = http2Connect(url, { ca: serverCa, ...(client ? { cert: client.pem, key: client.keyPem } : {}) });
  try {
    return await new Promise<Got>((resolve, reject) => {
      session.on('error', reject);
      const s = session.request({ ':path': path, ...headers });
      let text = '';
      let status = 0;
      let got: Record<string, string | string[] | undefined> = {};
      s.on('response', (h) => {
        status = Number(h[':status']);
        got = h as Record<string, string | string[] | undefined>;
      });
      s.setEncoding('utf8');
      s.on('data', (d: string) => (text += d));
      s.on('end', () => resolve({ status, headers: got, text }));
      s.on('error', reject);
      s.end();
    });
  } finally {
    session.close();
  }
}

describe('gateway with client certificates (mTLS, request mode)', () => {
  let dir: string;
  let server: CertPair;
  let trusted: Ca;
  let other: Ca;
  let good: ClientCertFiles;
  let foreign: ClientCertFiles;
  let expired: ClientCertFiles;
  let noSpiffe: ClientCertFiles;
  let staging: ClientCertFiles;
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  const bindings = new StaticFeed<RoleBindingSpec>();
  let echo: Upstream;
  let wsEcho: WsUpstream;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-mtls-'));
    [server, trusted, other] = await Promise.all([selfSigned(dir, 'server'), certAuthority(dir, 'trusted'), certAuthority(dir, 'other')]);
    [good, foreign, expired, noSpiffe, staging] = await Promise.all([
      clientCertificate(dir, 'good', trusted, { uris: [SPIFFE], subject: '/O=Plinth, Inc./CN=billing' }),
      clientCertificate(dir, 'foreign', other, { uris: [SPIFFE] }),
      clientCertificate(dir, 'expired', trusted, { uris: [SPIFFE], expired: true }),
      clientCertificate(dir, 'nospiffe', trusted, { uris: ['https://billing.example.com/'] }),
      clientCertificate(dir, 'staging', trusted, { uris: ['spiffe://staging.example.com/ns/retail/sa/billing'] }),
    ]);
    echo = await upstream('echo');
    wsEcho = await wsUpstream('ws');
    ({ gw, governance, routes } = await staticGateway({ tls: { cert: server.cert, key: server.key, clientCa: trusted.cert }, roleBindings: bindings, accessLog: false }));
    governance.set({ instances: [instance('echo-1', 'echo', echo.address), instance('ws-1', 'ws', wsEcho.address)] });
    routes.set([
      route('mtls', { auth: { mode: 'mtls', trustDomains: ['prod.example.com'] }, match: { path: { prefix: '/mtls' } }, service: 'echo' }),
      route('roles', { auth: { mode: 'mtls', requiredRoles: ['payer'] }, match: { path: { prefix: '/roles' } }, service: 'echo' }),
      route('open', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/open' } }, service: 'echo' }),
      route('ws', { auth: { mode: 'mtls' }, match: { path: { prefix: '/ws' } }, service: 'ws' }),
    ]);
  });

  after(async () => {
    await gw?.close();
    await echo?.close();
    await wsEcho?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('takes a verified certificate as the identity and tells the upstream, over HTTP/1.1 and HTTP/2', async () => {
    const xfcc = `Hash=${good.hash};Subject="CN=billing,O=Plinth\\\\, Inc.";URI=${SPIFFE}`;
    for (const r of [await tlsGet(`${gw.url}/mtls/a`, server.pem, good), await get2(gw.url, server.pem, good, '/mtls/b')]) {
      assert.equal(r.status, 200, r.text);
      const seen = echo.seen.at(-1)!.headers;
      assert.equal(seen['plinth-identity'], 'ServiceAccount:retail/billing');
      assert.equal(seen['plinth-identity-via'], 'mtls');
      assert.equal(seen['x-forwarded-client-cert'], xfcc);
      assert.equal(seen['x-forwarded-proto'], 'https');
    }
    assert.deepEqual(
      echo.seen.slice(-2).map((s) => s.url),
      ['/mtls/a', '/mtls/b'],
    );
  });

  it('refuses a connection without a certificate on an mtls route with 401 problem+json, and counts it', async () => {
    const before = await refusals(gw.adminUrl!);
    assert.deepEqual(Object.keys(before).sort(), ['expired', 'invalid', 'no_certificate', 'trust_domain', 'unmapped', 'untrusted']);
    const seen = echo.seen.length;
    for (const r of [await tlsGet(`${gw.url}/mtls/x`, server.pem), await get2(gw.url, server.pem, undefined, '/mtls/y')]) {
      assert.equal(r.status, 401, r.text);
      assert.match(String(r.headers['content-type']), /application\/problem\+json/);
      const body = JSON.parse(r.text) as { code: string; detail: string };
      assert.equal(body.code, 'unauthenticated');
      assert.equal(body.detail, 'this route takes a client certificate (mutual TLS); the connection presented none');
      assert.equal(r.headers['www-authenticate'], undefined, 'no bearer challenge for a certificate route');
    }
    assert.equal(echo.seen.length, seen, 'nothing reached the upstream');
    const after = await refusals(gw.adminUrl!);
    assert.equal(after.no_certificate! - before.no_certificate!, 2);
  });

  it('never takes a certificate of another CA, an expired one, one without a SPIFFE ID or of another trust domain', async () => {
    const before = await refusals(gw.adminUrl!);
    const seen = echo.seen.length;
    const cases: [ClientCertFiles, RegExp][] = [
      [foreign, /^the client certificate is not signed by a CA this gateway trusts \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)$/],
      [expired, /^the client certificate has expired$/],
      [noSpiffe, /^the client certificate names no SPIFFE ID/],
      [staging, /^the client certificate's trust domain staging\.example\.com is not one this route accepts \(prod\.example\.com\)$/],
    ];
    for (const [cert, detail] of cases) {
      const r = await tlsGet(`${gw.url}/mtls/z`, server.pem, cert);
      assert.equal(r.status, 401, r.text);
      assert.match((JSON.parse(r.text) as { detail: string }).detail, detail);
    }
    assert.equal(echo.seen.length, seen, 'nothing reached the upstream');
    const after = await refusals(gw.adminUrl!);
    for (const reason of ['untrusted', 'expired', 'unmapped', 'trust_domain']) assert.equal(after[reason]! - before[reason]!, 1, reason);

    // A certificate that did not verify is not passed on either, even where no identity is needed.
    const open = await tlsGet(`${gw.url}/open/foreign`, server.pem, foreign);
    assert.equal(open.status, 200);
    assert.equal(echo.seen.at(-1)!.headers['x-forwarded-client-cert'], undefined);
  });

  it('applies the route roles to the certificate subject', async () => {
    bindings.set([]);
    const r = await tlsGet(`${gw.url}/roles/pay`, server.pem, good);
    assert.equal(r.status, 403, r.text);
    assert.match(r.text, /ServiceAccount:retail\/billing lacks the role payer/);
    bindings.set([resource('RoleBinding', 'payer', { role: 'payer', subjects: [{ kind: 'ServiceAccount', namespace: 'retail', name: 'billing' }] })]);
    const ok = await tlsGet(`${gw.url}/roles/pay`, server.pem, good);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(echo.seen.at(-1)!.headers['plinth-identity-roles'], 'payer');
  });

  it('strips identity and client-certificate headers sent from outside, keeping only its own', async () => {
    const spoof = { 'x-forwarded-client-cert': 'Hash=00;URI=spiffe://prod.example.com/ns/plinth-system/sa/admin', 'plinth-identity': 'ServiceAccount:plinth-system/admin', 'plinth-identity-via': 'mtls' };
    // No certificate: none of it arrives.
    for (const r of [await tlsGet(`${gw.url}/open/a`, server.pem, undefined, spoof), await get2(gw.url, server.pem, undefined, '/open/b', spoof)]) {
      assert.equal(r.status, 200, r.text);
      const h = echo.seen.at(-1)!.headers;
      assert.equal(h['x-forwarded-client-cert'], undefined);
      assert.equal(h['plinth-identity'], undefined);
      assert.equal(h['plinth-identity-via'], undefined);
    }
    // A verified certificate: the header is the gateway's, once, whatever the client sent.
    for (const r of [await tlsGet(`${gw.url}/mtls/c`, server.pem, good, spoof), await get2(gw.url, server.pem, good, '/mtls/d', spoof)]) {
      assert.equal(r.status, 200, r.text);
      const h = echo.seen.at(-1)!.headers;
      assert.equal(h['x-forwarded-client-cert'], `Hash=${good.hash};Subject="CN=billing,O=Plinth\\\\, Inc.";URI=${SPIFFE}`);
      assert.equal(h['plinth-identity'], 'ServiceAccount:retail/billing');
    }
    // An anonymous route still passes a verified certificate on.
    assert.equal((await tlsGet(`${gw.url}/open/e`, server.pem, good)).status, 200);
    assert.match(String(echo.seen.at(-1)!.headers['x-forwarded-client-cert']), new RegExp(`^Hash=${good.hash};`));
  });

  it('authenticates WebSocket handshakes (wss) with the certificate', async () => {
    const url = `${gw.url.replace('https:', 'wss:')}/ws/room`;
    const ws = new WebSocket(url, { ca: server.pem, cert: good.pem, key: good.keyPem });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    try {
      assert.equal(await roundTrip(ws, 'hi'), 'ws:hi');
      const h = wsEcho.handshakes.at(-1)!.headers;
      assert.equal(h['plinth-identity'], 'ServiceAccount:retail/billing');
      assert.match(String(h['x-forwarded-client-cert']), new RegExp(`^Hash=${good.hash};`));
    } finally {
      ws.terminate();
    }
    const refused = await new Promise<number>((resolve, reject) => {
      const w = new WebSocket(url, { ca: server.pem });
      w.once('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      w.once('open', () => reject(new Error('opened without a certificate')));
      w.once('error', reject);
    });
    assert.equal(refused, 401);
  });
});

describe('gateway with client certificates required at the handshake', () => {
  let dir: string;
  let server: CertPair;
  let trusted: Ca;
  let other: Ca;
  let good: ClientCertFiles;
  let foreign: ClientCertFiles;
  let gw: Gateway;
  let echo: Upstream;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-mtls-req-'));
    [server, trusted, other] = await Promise.all([selfSigned(dir, 'server'), certAuthority(dir, 'trusted'), certAuthority(dir, 'other')]);
    [good, foreign] = await Promise.all([clientCertificate(dir, 'good', trusted, { uris: [SPIFFE] }), clientCertificate(dir, 'foreign', other, { uris: [SPIFFE] })]);
    echo = await upstream('echo');
    let governance: StaticGovernance;
    let routes: StaticFeed;
    ({ gw, governance, routes } = await staticGateway({ tls: { cert: server.cert, key: server.key, clientCa: trusted.cert, clientCert: 'require' }, accessLog: false }));
    governance.set({ instances: [instance('echo-1', 'echo', echo.address)] });
    routes.set([route('open', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/' } }, service: 'echo' })]);
  });

  after(async () => {
    await gw?.close();
    await echo?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses the handshake without a certificate or with one of another CA, and counts why', async () => {
    const before = await refusals(gw.adminUrl!);
    const failuresBefore = await handshakeFailures(gw.adminUrl!);
    await assert.rejects(tlsGet(`${gw.url}/x`, server.pem), /certificate required|other side closed|socket hang up|ECONNRESET/i);
    await assert.rejects(get2(gw.url, server.pem, undefined, '/x'), /certificate required|other side closed|socket hang up|ECONNRESET|closed/i);
    await assert.rejects(tlsGet(`${gw.url}/x`, server.pem, foreign), /other side closed|socket hang up|ECONNRESET|alert/i);
    assert.equal(echo.seen.length, 0);
    await until('the refusals to be counted', async () => {
      const now = await refusals(gw.adminUrl!);
      return now.no_certificate! - before.no_certificate! === 2 && now.untrusted! - before.untrusted! === 1;
    });
    assert.equal(await handshakeFailures(gw.adminUrl!), failuresBefore, 'a refused certificate is an mTLS refusal, not a handshake failure');
    // Anonymous routes still get only verified callers: the handshake saw to it.
    const r = await tlsGet(`${gw.url}/ok`, server.pem, good);
    assert.equal(r.status, 200, r.text);
    assert.match(String(echo.seen.at(-1)!.headers['x-forwarded-client-cert']), new RegExp(`^Hash=${good.hash};`));
    assert.equal(echo.seen.at(-1)!.headers['plinth-identity'], undefined, 'an anonymous route names no identity');
  });
});

describe('client CA bundle reload and configuration', () => {
  let dir: string;
  let server: CertPair;
  let a: Ca;
  let b: Ca;
  let fromA: ClientCertFiles;
  let fromB: ClientCertFiles;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-mtls-conf-'));
    [server, a, b] = await Promise.all([selfSigned(dir, 'server'), certAuthority(dir, 'a'), certAuthority(dir, 'b')]);
    [fromA, fromB] = await Promise.all([clientCertificate(dir, 'from-a', a, { uris: [SPIFFE] }), clientCertificate(dir, 'from-b', b, { uris: [SPIFFE] })]);
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reloads a replaced CA bundle for new connections; a broken one is refused and the served one stays', async () => {
    const live = join(dir, 'live-ca.pem');
    await writeFile(live, a.pem);
    const echo = await upstream('echo');
    const warnings: string[] = [];
    const { gw, governance, routes } = await staticGateway({
      tls: { cert: server.cert, key: server.key, clientCa: live, reloadIntervalMs: 50 },
      accessLog: false,
      logger: { warn: (m, d) => warnings.push(`${m} ${JSON.stringify(d)}`), debug: () => {} },
    });
    try {
      governance.set({ instances: [instance('echo-1', 'echo', echo.address)] });
      routes.set([route('mtls', { auth: { mode: 'mtls' }, match: { path: { prefix: '/' } }, service: 'echo' })]);
      assert.equal((await tlsGet(`${gw.url}/a`, server.pem, fromA)).status, 200);
      assert.equal((await tlsGet(`${gw.url}/b`, server.pem, fromB)).status, 401);

      await replace(live, b.pem);
      await until('the new CA bundle to be used', async () => (await tlsGet(`${gw.url}/b`, server.pem, fromB)).status === 200);
      const r = await tlsGet(`${gw.url}/a`, server.pem, fromA);
      assert.equal(r.status, 401);
      assert.match(r.text, /not signed by a CA this gateway trusts/);

      await replace(live, 'not a certificate\n');
      await until('a warning about the broken bundle', () => warnings.length > 0);
      assert.match(warnings[0]!, /client CA bundle cannot be used; still serving the previous ones/);
      assert.ok(warnings[0]!.includes(`the TLS client CA bundle ${live} holds no PEM certificate`), warnings[0]);
      assert.equal((await tlsGet(`${gw.url}/b`, server.pem, fromB)).status, 200, 'the served bundle stays');

      // Both CAs in one bundle: either is trusted.
      await replace(live, a.pem + b.pem);
      await until('the two-CA bundle to be used', async () => (await tlsGet(`${gw.url}/a`, server.pem, fromA)).status === 200);
      assert.equal((await tlsGet(`${gw.url}/b`, server.pem, fromB)).status, 200);
    } finally {
      await gw.close();
      await echo.close();
    }
  });

  it('refuses to start with a missing or unusable bundle, or a clientCert mode without one, naming the problem', async () => {
    const missing = join(dir, 'missing.pem');
    const garbage = join(dir, 'garbage.pem');
    await writeFile(garbage, 'not pem\n');
    const broken = join(dir, 'broken.pem');
    await writeFile(broken, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const base = { cert: server.cert, key: server.key };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ clientCa: missing }, new RegExp(`^cannot read the TLS client CA bundle ${missing}: no such file$`)],
      [{ clientCa: garbage }, new RegExp(`^the TLS client CA bundle ${garbage} holds no PEM certificate$`)],
      [{ clientCa: broken }, new RegExp(`^the TLS client CA bundle ${broken} has a certificate that does not parse \\(number 1`)],
      [{ clientCert: 'require' }, /^tls\.clientCert needs tls\.clientCa/],
      [{ clientCa: a.cert, clientCert: 'maybe' }, /^tls\.clientCert is 'request' or 'require', not "maybe"$/],
    ];
    for (const [extra, message] of cases) {
      await assert.rejects(staticGateway({ tls: { ...base, ...extra } as never, accessLog: false }), (e: Error) => {
        assert.ok(e instanceof TlsConfigError, String(e));
        assert.match(e.message, message);
        return true;
      });
    }
  });

  it('answers 503 on an mtls route where client certificates are not verified', async () => {
    const echo = await upstream('echo');
    const plain = await staticGateway({ accessLog: false });
    const tlsOnly = await staticGateway({ tls: { cert: server.cert, key: server.key }, accessLog: false });
    try {
      for (const g of [plain, tlsOnly]) {
        g.governance.set({ instances: [instance('echo-1', 'echo', echo.address)] });
        g.routes.set([route('mtls', { auth: { mode: 'mtls' }, match: { path: { prefix: '/' } }, service: 'echo' })]);
      }
      const r1 = await call(`${plain.gw.url}/x`);
      const r2 = await tlsGet(`${tlsOnly.gw.url}/x`, server.pem, fromA);
      for (const r of [r1, r2]) {
        assert.equal(r.status, 503, r.text);
        assert.match(r.text, /this gateway does not verify client certificates/);
      }
      assert.equal(echo.seen.length, 0);
      // Nor does such a gateway pass any client certificate header on.
      for (const g of [plain, tlsOnly]) g.routes.set([route('open', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/' } }, service: 'echo' })]);
      assert.equal((await call(`${plain.gw.url}/o`, { headers: { 'x-forwarded-client-cert': 'Hash=00' } })).status, 200);
      assert.equal(echo.seen.at(-1)!.headers['x-forwarded-client-cert'], undefined);
      assert.equal((await tlsGet(`${tlsOnly.gw.url}/o`, server.pem, fromA)).status, 200);
      assert.equal(echo.seen.at(-1)!.headers['x-forwarded-client-cert'], undefined);
    } finally {
      await plain.gw.close();
      await tlsOnly.gw.close();
      await echo.close();
    }
  });
});

describe('SPIFFE IDs and SANs', () => {
  it('maps spiffe://<trust-domain>/ns/<namespace>/sa/<name> and nothing else', () => {
    assert.deepEqual(parseSpiffeId(SPIFFE), { trustDomain: 'prod.example.com', namespace: 'retail', name: 'billing' });
    for (const bad of [
      'spiffe://prod.example.com/ns/retail/sa/billing/extra',
      'spiffe://prod.example.com/ns/retail/sa/',
      'spiffe://prod.example.com/ns/Retail/sa/billing',
      'spiffe://prod.example.com/sa/billing/ns/retail',
      'spiffe:///ns/retail/sa/billing',
      'spiffe://Prod.example.com/ns/retail/sa/billing',
      'spiffe://prod.example.com/ns/retail/sa/billing?x=1',
      'https://prod.example.com/ns/retail/sa/billing',
    ]) {
      assert.equal(parseSpiffeId(bad), undefined, bad);
    }
  });

  it('reads node\'s SAN text, quoted entries included, so a crafted value cannot pose as two', () => {
    assert.deepEqual(sansOf(`DNS:a.example.com, URI:${SPIFFE}, IP Address:127.0.0.1`, 'URI'), [SPIFFE]);
    assert.deepEqual(sansOf(`URI:"spiffe://x/a, URI:spiffe://evil/ns/a/sa/b", DNS:b`, 'URI'), ['spiffe://x/a, URI:spiffe://evil/ns/a/sa/b']);
    assert.deepEqual(sansOf(`URI:"spiffe://x/a, URI:spiffe://evil/ns/a/sa/b", DNS:b`, 'DNS'), ['b']);
    assert.deepEqual(sansOf(undefined, 'URI'), []);
  });

  it('stops vouching for a certificate at its notAfter, on a connection opened while it was valid', () => {
    const validTo = Date.parse('2030-01-01T00:00:00Z');
    const cert: ClientCert = {
      refusal: undefined,
      detail: '',
      subject: 'ServiceAccount:retail/billing',
      spiffe: { trustDomain: 'prod.example.com', namespace: 'retail', name: 'billing' },
      validTo,
      xfcc: 'Hash=ab;Subject="CN=billing"',
    };
    const auth = { mode: 'mtls' } as unknown as CompiledAuth;
    const before = certOutcome(cert, auth, validTo - 1);
    assert.equal(before.outcome.ok, true);
    assert.equal(forwardedCert(cert, validTo - 1), cert.xfcc);
    const after = certOutcome(cert, auth, validTo + 1);
    assert.deepEqual([after.outcome.ok, after.reason], [false, 'expired']);
    assert.equal(forwardedCert(cert, validTo + 1), undefined);
    assert.equal(forwardedCert({ ...cert, xfcc: undefined, refusal: 'untrusted' }, validTo - 1), undefined);
  });
});
