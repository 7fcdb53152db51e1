/**
 * TLS termination at the edge on loopback: throwaway self-signed certificates made with openssl, a real
 * node:http upstream, undici and node:tls clients, certificate files replaced under a running gateway.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { StaticGovernance } from '@plinth/sdk';
import { Agent, buildConnector, Client, request } from 'undici';
import type { Gateway } from './gateway.js';
import type { StaticFeed } from './feed.js';
import { call, closedAfter, instance, opened, roundTrip, route, selfSigned, sleep, staticGateway, until, upstream, wsUpstream, type CertPair, type Upstream, type WsUpstream } from './testkit.test.helpers.js';
import { TlsConfigError } from './tls.js';

const anon = { auth: { mode: 'anonymous' } };

/** Replaced the way renewal tools do: a new file renamed over the old one. */
async function replace(path: string, content: string | Buffer): Promise<void> {
  await writeFile(`${path}.new`, content);
  await rename(`${path}.new`, path);
}

/** The certificate a fresh connection is shown (no verification: which one is served is the question). */
function servedFingerprint(url: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s: TLSSocket = tlsConnect({ host: u.hostname, port: Number(u.port), servername: 'localhost', rejectUnauthorized: false }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.destroy();
      resolve(fp);
    });
    s.on('error', reject);
  });
}

/** The handshake-failure counters on the admin listener, by reason. */
async function handshakeFailures(adminUrl: string): Promise<Record<string, number>> {
  const text = (await call(`${adminUrl}/metrics`)).text;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^plinth_gateway_tls_handshake_failures_total\{reason="(\w+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

const hasPromtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;

async function get(url: string, dispatcher: Agent | Client): Promise<{ status: number; text: string }> {
  const r = await request(url, { dispatcher });
  return { status: r.statusCode, text: await r.body.text() };
}

describe('gateway with TLS', () => {
  let dir: string;
  let a: CertPair;
  let b: CertPair;
  let c: CertPair;
  let live: { cert: string; key: string };
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let echo: Upstream;
  let wsEcho: WsUpstream;
  const warnings: string[] = [];
  const debug: { message: string; details?: Record<string, unknown> }[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-tls-'));
    [a, b, c] = await Promise.all([selfSigned(dir, 'a'), selfSigned(dir, 'b'), selfSigned(dir, 'c')]);
    live = { cert: join(dir, 'live.crt'), key: join(dir, 'live.key') };
    await writeFile(live.cert, a.pem);
    await writeFile(live.key, await readFile(a.key));
    echo = await upstream('echo');
    wsEcho = await wsUpstream('ws');
    ({ gw, governance, routes } = await staticGateway({
      tls: { ...live, reloadIntervalMs: 50 },
      server: { headersTimeoutMs: 500, connectionsCheckingIntervalMs: 50 },
      logger: {
        warn: (m, d) => warnings.push(`${m} ${JSON.stringify(d)}`),
        debug: (message, details) => debug.push({ message, ...(details ? { details } : {}) }),
      },
    }));
    governance.set({ instances: [instance('echo-1', 'echo', echo.address), instance('ws-1', 'ws', wsEcho.address)] });
    routes.set([route('api', { ...anon, match: { path: { prefix: '/api' } }, service: 'echo' }), route('ws', { ...anon, match: { path: { prefix: '/ws' } }, service: 'ws' })]);
  });

  after(async () => {
    await gw?.close();
    await echo?.close();
    await wsEcho?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves https and tells the upstream the request came over https', async () => {
    assert.match(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const agent = new Agent({ connect: { ca: a.pem } });
    try {
      const r = await get(`${gw.url}/api/hello`, agent);
      assert.equal(r.status, 200, r.text);
      const seen = echo.seen.at(-1)!;
      assert.equal(seen.url, '/api/hello');
      assert.equal(seen.headers['x-forwarded-proto'], 'https');
      assert.match(String(seen.headers['forwarded']), /;proto=https$/);
      // Without trustProxy, what the client claims is replaced.
      const spoofed = await request(`${gw.url}/api/spoof`, { dispatcher: agent, headers: { 'x-forwarded-proto': 'http', forwarded: 'proto=http' } });
      await spoofed.body.text();
      assert.equal(echo.seen.at(-1)!.headers['x-forwarded-proto'], 'https');
      assert.doesNotMatch(String(echo.seen.at(-1)!.headers['forwarded']), /proto=http(?!s)/);
    } finally {
      await agent.close();
    }
  });

  it('proxies WebSockets over wss, with X-Forwarded-Proto https', async () => {
    const ws = await opened(`${gw.url.replace('https:', 'wss:')}/ws/room`, {}, a.pem);
    try {
      assert.equal(await roundTrip(ws, 'hi'), 'ws:hi');
      assert.equal(wsEcho.handshakes.at(-1)!.headers['x-forwarded-proto'], 'https');
    } finally {
      ws.terminate();
    }
  });

  it('survives handshake garbage, plain HTTP and silent clients on the TLS port, then serves the next request', async () => {
    const before = debug.length;
    const failuresBefore = await handshakeFailures(gw.adminUrl!);
    assert.deepEqual(Object.keys(failuresBefore).sort(), ['other', 'protocol', 'timeout']);
    const garbage = Buffer.alloc(4096);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) & 0xff;
    // A record header that claims to be a ClientHello, followed by nonsense.
    const fakeHello = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c]), Buffer.alloc(60, 0xee)]);
    await Promise.all([closedAfter(gw.url, garbage), closedAfter(gw.url, fakeHello), closedAfter(gw.url, 'GET /api/x HTTP/1.1\r\nhost: localhost\r\n\r\n')]);
    // Connected and silent: dropped after the headers timeout (500 ms here), not held for node's 120 s.
    const silentMs = await closedAfter(gw.url);
    assert.ok(silentMs < 3000, `a silent client was held ${silentMs} ms`);
    await until('the failed handshakes to be logged', () => debug.slice(before).filter((d) => d.message === 'TLS handshake failed').length >= 4);
    // Garbage, the fake hello and plain HTTP are protocol failures; the silent client is a timeout.
    const failures = await handshakeFailures(gw.adminUrl!);
    assert.ok(failures.protocol! - failuresBefore.protocol! >= 3, JSON.stringify({ failuresBefore, failures }));
    assert.equal(failures.timeout! - failuresBefore.timeout!, 1, JSON.stringify({ failuresBefore, failures }));
    if (hasPromtool) {
      const text = (await call(`${gw.adminUrl}/metrics`)).text;
      const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      assert.equal(r.status, 0, `promtool check metrics: ${r.stdout}${r.stderr}`);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'promtool has no complaints about the gateway');
    }

    const agent = new Agent({ connect: { ca: a.pem } });
    try {
      assert.equal((await get(`${gw.url}/api/after-garbage`, agent)).status, 200);
    } finally {
      await agent.close();
    }
  });

  it('answers garbage after the handshake with 400 problem+json, as over plain HTTP', async () => {
    const u = new URL(gw.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ host: u.hostname, port: Number(u.port), ca: a.pem, servername: 'localhost' }, () => s.write('NOT HTTP AT ALL\r\n\r\n'));
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString()));
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /application\/problem\+json/);
  });

  it('reloads a replaced certificate for new connections; a kept-alive connection carries on; broken replacements are refused', async () => {
    assert.equal(await servedFingerprint(gw.url), a.fingerprint);
    // One connection, kept alive across the rotation.
    const connector = buildConnector({ ca: a.pem });
    let connections = 0;
    let keptFingerprint = '';
    const client = new Client(gw.url, {
      connect: (opts, cb) => {
        connections++;
        connector(opts, (err, socket) => {
          if (socket !== null) keptFingerprint = (socket as TLSSocket).getPeerCertificate().fingerprint256;
          cb(err as Error, socket as never);
        });
      },
      keepAliveTimeout: 30_000,
    });
    try {
      assert.equal((await get(`${gw.url}/api/before`, client)).status, 200);

      await Promise.all([replace(live.cert, b.pem), replace(live.key, await readFile(b.key))]);
      await until('the new certificate to be served', async () => (await servedFingerprint(gw.url)) === b.fingerprint);
      const agentB = new Agent({ connect: { ca: b.pem } });
      const agentA = new Agent({ connect: { ca: a.pem } });
      try {
        assert.equal((await get(`${gw.url}/api/new`, agentB)).status, 200);
        await assert.rejects(get(`${gw.url}/api/old-trust`, agentA), /self[- ]signed|certificate/i);
      } finally {
        await agentA.close();
        await agentB.close();
      }

      assert.equal((await get(`${gw.url}/api/kept`, client)).status, 200, 'the connection opened before the rotation still serves');
      assert.equal(connections, 1);
      assert.equal(keptFingerprint, a.fingerprint);

      // A key that does not belong to the certificate: refused, the current pair stays.
      warnings.length = 0;
      await replace(live.key, await readFile(c.key));
      await until('a warning about the mismatched key', () => warnings.length > 0);
      assert.match(warnings[0]!, /still serving the previous pair/);
      assert.match(warnings[0]!, /does not belong to the certificate/);
      assert.ok(warnings[0]!.includes(live.key), warnings[0]);
      assert.equal(await servedFingerprint(gw.url), b.fingerprint);

      // Put the right key back, then an unparsable certificate.
      await replace(live.key, await readFile(b.key));
      await sleep(300);
      warnings.length = 0;
      await replace(live.cert, 'this is not a certificate\n');
      await until('a warning about the unparsable certificate', () => warnings.length > 0);
      assert.match(warnings[0]!, /is not a PEM certificate/);
      assert.equal(await servedFingerprint(gw.url), b.fingerprint);

      // The watcher outlives a refused pair: a good one later is picked up.
      await Promise.all([replace(live.cert, c.pem), replace(live.key, await readFile(c.key))]);
      await until('the third certificate to be served', async () => (await servedFingerprint(gw.url)) === c.fingerprint);
      const agentC = new Agent({ connect: { ca: c.pem } });
      try {
        assert.equal((await get(`${gw.url}/api/third`, agentC)).status, 200);
      } finally {
        await agentC.close();
      }
    } finally {
      await client.close();
    }
  });
});

describe('gateway TLS configuration', () => {
  let dir: string;
  let a: CertPair;
  let b: CertPair;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-tls-conf-'));
    [a, b] = await Promise.all([selfSigned(dir, 'a'), selfSigned(dir, 'b')]);
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses to start with a missing, unparsable or mismatched file, naming it', async () => {
    const garbage = join(dir, 'garbage.pem');
    await writeFile(garbage, 'not pem\n');
    const missing = join(dir, 'missing.pem');
    const cases: [{ cert: string; key: string }, RegExp][] = [
      [{ cert: missing, key: a.key }, new RegExp(`^cannot read the TLS certificate ${missing}: no such file$`)],
      [{ cert: a.cert, key: missing }, new RegExp(`^cannot read the TLS key ${missing}: no such file$`)],
      [{ cert: dir, key: a.key }, /^cannot read the TLS certificate .*: is a directory$/],
      [{ cert: garbage, key: a.key }, new RegExp(`^the TLS certificate ${garbage} is not a PEM certificate`)],
      [{ cert: a.cert, key: garbage }, new RegExp(`^the TLS key ${garbage} is not a PEM private key`)],
      [{ cert: a.cert, key: b.key }, new RegExp(`^the TLS key ${b.key} does not belong to the certificate ${a.cert}$`)],
    ];
    for (const [tls, message] of cases) {
      await assert.rejects(staticGateway({ tls }), (e: Error) => {
        assert.ok(e instanceof TlsConfigError, String(e));
        assert.match(e.message, message);
        return true;
      });
    }
  });

  it('refuses a TLS sidecar ingress without HTTP/2 in front of an app spoken to in h2c', async () => {
    await assert.rejects(
      staticGateway({ tls: { cert: a.cert, key: a.key, http2: false }, sidecar: { app: 'http://127.0.0.1:1', appProtocol: 'h2c', service: 's', version: '1.0.0' } }),
      /appProtocol h2c needs HTTP\/2 on the ingress/,
    );
  });

  it('accepts TLS 1.2 by default and only TLS 1.3 with minVersion TLSv1.3; offers h2 unless http2 is false', async () => {
    const handshake = (url: string, maxVersion: 'TLSv1.2' | 'TLSv1.3'): Promise<string> => {
      const u = new URL(url);
      return new Promise((resolve, reject) => {
        const s = tlsConnect({ host: u.hostname, port: Number(u.port), ca: a.pem, servername: 'localhost', maxVersion }, () => {
          const v = s.getProtocol() ?? '';
          const alpn = s.alpnProtocol;
          s.destroy();
          resolve(`${v} ${String(alpn)}`);
        });
        s.on('error', reject);
      });
    };
    const { gw: plain } = await staticGateway({ tls: { cert: a.cert, key: a.key }, accessLog: false });
    const { gw: strict } = await staticGateway({ tls: { cert: a.cert, key: a.key, minVersion: 'TLSv1.3' }, accessLog: false });
    const { gw: http1Only } = await staticGateway({ tls: { cert: a.cert, key: a.key, http2: false }, accessLog: false });
    try {
      assert.equal(await handshake(plain.url, 'TLSv1.2'), 'TLSv1.2 false');
      assert.equal(await handshake(plain.url, 'TLSv1.3'), 'TLSv1.3 false');
      await assert.rejects(handshake(strict.url, 'TLSv1.2'), /protocol version|alert/i);
      assert.equal(await handshake(strict.url, 'TLSv1.3'), 'TLSv1.3 false');
      // An HTTP/2 client gets HTTP/2, unless it is turned off; an HTTP/1.1-only client gets HTTP/1.1.
      const alpn = (url: string, offered: string[]): Promise<string> => {
        const u = new URL(url);
        return new Promise<string>((resolve, reject) => {
          const s = tlsConnect({ host: u.hostname, port: Number(u.port), ca: a.pem, servername: 'localhost', ALPNProtocols: offered }, () => {
            resolve(String(s.alpnProtocol));
            s.destroy();
          });
          s.on('error', reject);
        });
      };
      assert.equal(await alpn(plain.url, ['h2', 'http/1.1']), 'h2');
      assert.equal(await alpn(plain.url, ['http/1.1']), 'http/1.1');
      assert.equal(await alpn(http1Only.url, ['h2', 'http/1.1']), 'http/1.1');
    } finally {
      await plain.close();
      await strict.close();
      await http1Only.close();
    }
  });
});
