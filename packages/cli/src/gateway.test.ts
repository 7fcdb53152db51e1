/**
 * `plinth gateway` as a user runs it: the built CLI in a child process, a real server and a real upstream in
 * this process. The gateway runs as its own ServiceAccount holding only the role docs/gateway.md gives it.
 * Children are spawned asynchronously: a synchronous spawn would block this event loop, and with it the server.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { connect as connectHttp2 } from 'node:http2';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { startServer, type RunningServer } from '@plinth/server';
import { Agent, request } from 'undici';
import { MAIN, promtool, runCli, type Run } from './cli.test.helpers.js';
import { heldLoad, printed, socketHolder, terminated, type HeldLoad, type HeldProcess } from './socket-holder.test.helpers.js';

const NS = 'gw';
const hasPromtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasPromtool && process.env.CI === 'true') throw new Error('CI=true but promtool is missing: .ci/run installs the prometheus package');
if (!hasPromtool) console.log('# the workers\' summed /metrics is not linted: promtool is not installed (Debian package prometheus)');

let tmp: string;
let server: RunningServer;
let baseEnv: NodeJS.ProcessEnv;
let gatewayToken: string;
let upstream: Server;
let upstreamAddress: string;
/** Requests to /hello/held wait here until the test lets them go. */
const held: (() => void)[] = [];
const children = new Set<ChildProcessWithoutNullStreams>();

const cli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> => runCli(args, { ...baseEnv, ...env });

async function get(url: string): Promise<{ status: number; text: string }> {
  const r = await request(url);
  return { status: r.statusCode, text: await r.body.text() };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The protocol a client offering h2 and HTTP/1.1 is given. */
function alpnOf(url: string, ca: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: u.hostname, port: Number(u.port), ca, ALPNProtocols: ['h2', 'http/1.1'] }, () => {
      resolve(String(s.alpnProtocol));
      s.destroy();
    });
    s.on('error', reject);
  });
}

/** A self-signed certificate for localhost and 127.0.0.1, with its key. */
function selfSigned(keyOut: string, certOut: string): Promise<void> {
  return new Promise<void>((resolve, reject) =>
    execFile('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1', '-keyout', keyOut, '-out', certOut], (err, _o, stderr) =>
      err ? reject(new Error(stderr)) : resolve(),
    ),
  );
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'plinth-cli-gateway-'));
  server = await startServer({ dataDir: join(tmp, 'data'), listen: '127.0.0.1:0', logLevel: 'silent' });
  assert.ok(server.adminTokenFile);
  const admin = (await readFile(server.adminTokenFile, 'utf8')).trim();
  baseEnv = { PATH: process.env['PATH'], HOME: tmp, XDG_CONFIG_HOME: join(tmp, 'xdg'), PLINTH_URL: server.url, PLINTH_TOKEN: admin };

  upstream = createServer((req, res) => {
    const answer = () => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`hello ${req.url} from ${String(req.headers['plinth-caller'])}`);
    };
    if (req.url?.startsWith('/hello/held')) held.push(answer);
    else answer();
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamAddress = `127.0.0.1:${(upstream.address() as AddressInfo).port}`;

  const f = join(tmp, 'gateway.yaml');
  await writeFile(
    f,
    `kind: ServiceAccount
metadata: {namespace: ${NS}, name: edge}
spec: {description: the edge gateway}
---
kind: Role
metadata: {namespace: ${NS}, name: gateway}
spec:
  rules:
    - verbs: [list, watch]
      kinds: [Instance, FaultTolerance, TrafficPolicy, FaultInjection, Route, RoleBinding]
      namespaces: [${NS}]
---
kind: RoleBinding
metadata: {namespace: ${NS}, name: gateway}
spec:
  role: gateway
  subjects: [{kind: ServiceAccount, namespace: ${NS}, name: edge}]
---
kind: Instance
metadata: {namespace: ${NS}, name: hello-1}
spec: {service: hello, version: 1.0.0, address: "${upstreamAddress}", leaseTtlSeconds: 3600}
---
kind: Route
metadata: {namespace: ${NS}, name: hello}
spec:
  match: {path: {prefix: /hello}}
  service: hello
  auth: {mode: anonymous}
`,
  );
  const applied = await cli(['apply', '-f', f]);
  assert.equal(applied.code, 0, applied.stderr);
  const cred = await cli(['serviceaccount', 'create-credential', 'edge', '-n', NS]);
  assert.equal(cred.code, 0, cred.stderr);
  gatewayToken = cred.stdout.trim();
  assert.match(gatewayToken, /^plinth_/);
});

after(async () => {
  // A failed test must not leave a gateway behind, holding this process open.
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const h of held) h();
  upstream?.closeAllConnections();
  upstream?.close();
  await server?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** A running `plinth gateway`, once it printed its addresses. */
async function startGatewayProcess(extra: string[] = []): Promise<{ child: ChildProcessWithoutNullStreams; url: string; admin: string; output: () => { stdout: string; stderr: string }; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [MAIN, 'gateway', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '-n', NS, ...extra], { env: { ...baseEnv, PLINTH_TOKEN: gatewayToken } });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      if (/admin on \S+/.test(stdout)) resolve();
    });
    child.on('exit', (code) => reject(new Error(`gateway exited early (${code}): ${stderr}`)));
    setTimeout(() => reject(new Error(`gateway did not start within 20s: ${stdout} ${stderr}`)), 20_000).unref();
  });
  const url = /listening on (https?:\/\/\S+)/.exec(stdout)?.[1];
  const admin = /admin on (http:\/\/\S+)/.exec(stdout)?.[1];
  assert.ok(url && admin, stdout);
  return { child, url, admin, output: () => ({ stdout, stderr }), exited };
}

async function heldDir(name: string): Promise<string> {
  const dir = join(tmp, name);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** Waits until a gateway the socket holder started prints its admin address. */
const heldUp = (p: HeldProcess): Promise<void> => printed(p, /admin on \S+/);

/**
 * Gateways started with `args` on a socket held for them, under load from four clients throughout: `body`
 * starts them (each waited for until up) and stops them; no request may fail.
 */
async function onHeldSocket(name: string, args: string[], body: (h: { start(): Promise<HeldProcess>; load: HeldLoad; base: string }) => Promise<void>): Promise<void> {
  const holder = await socketHolder(await heldDir(name));
  const env = { ...baseEnv, PLINTH_TOKEN: gatewayToken };
  const argv = [process.execPath, MAIN, 'gateway', ...args, '--admin', '127.0.0.1:0', '-n', NS];
  const base = `http://127.0.0.1:${holder.port}`;
  const load = heldLoad((k, i) => `${base}/hello/socket-${k}-${i}`);
  const start = async (): Promise<HeldProcess> => {
    const p = await holder.start(argv, env);
    await heldUp(p);
    return p;
  };
  try {
    await body({ start, load, base });
    assert.deepEqual(await load.stop(), [], 'no request failed');
  } finally {
    await load.stop();
    await holder.close();
  }
}

void describe('plinth gateway against a real server', () => {
  void it('serves a Route to a registered Instance, is ready on the admin port, and drains on SIGTERM', async () => {
    const gw = await startGatewayProcess();
    try {
      let ready = await get(`${gw.admin}/readyz`);
      for (let i = 0; i < 100 && ready.status !== 200; i++) {
        await sleep(50);
        ready = await get(`${gw.admin}/readyz`);
      }
      assert.equal(ready.status, 200, ready.text);
      assert.deepEqual(JSON.parse(ready.text), { ready: true });

      const r = await get(`${gw.url}/hello/world?x=1`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, 'hello /hello/world?x=1 from gateway');
      const none = await get(`${gw.url}/nowhere`);
      assert.equal(none.status, 404);
      assert.equal((JSON.parse(none.text) as { code: string }).code, 'route_not_found');
      assert.match((await get(`${gw.admin}/metrics`)).text, /plinth_gateway_requests_total\{route="gw\/hello",status_class="2xx"\} 1/);

      // A request in flight when SIGTERM arrives is finished before the process exits.
      const inFlight = get(`${gw.url}/hello/held`).catch((e: Error) => e);
      while (held.length === 0) await sleep(5);
      gw.child.kill('SIGTERM');
      let draining = await get(`${gw.admin}/readyz`);
      for (let i = 0; i < 400 && draining.status === 200; i++) {
        await sleep(5);
        draining = await get(`${gw.admin}/readyz`);
      }
      assert.equal(draining.status, 503, 'not ready while draining, so a load balancer stops sending');
      assert.equal((JSON.parse(draining.text) as { reason: string }).reason, 'draining');
      held.shift()!();
      const last = await inFlight;
      assert.ok(!(last instanceof Error), `the request in flight failed: ${String(last)}`);
      assert.equal(last.status, 200);
      assert.equal(last.text, 'hello /hello/held from gateway');
      assert.equal(await gw.exited, 0, gw.output().stderr);
      const { stdout, stderr } = gw.output();
      assert.match(stderr, /stopped/);
      const access = stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { path: string; route?: string; status: number });
      assert.ok(
        access.some((a) => a.path === '/hello/held' && a.route === 'gw/hello' && a.status === 200),
        `the access log is flushed on exit: ${stdout}`,
      );
    } finally {
      if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGKILL');
    }
  });

  void it('a single gateway drains on SIGHUP instead of dying on the spot', async () => {
    const gw = await startGatewayProcess();
    try {
      const inFlight = request(`${gw.url}/hello/held`).then(async (r) => [r.statusCode, await r.body.text()]);
      while (held.length === 0) await sleep(5);
      gw.child.kill('SIGHUP');
      for (let i = 0; i < 200 && !/SIGTERM: shutting down/.test(gw.output().stderr); i++) await sleep(10);
      held.shift()!();
      assert.deepEqual(await inFlight, [200, 'hello /hello/held from gateway']);
      assert.equal(await gw.exited, 0, gw.output().stderr);
      assert.match(gw.output().stderr, /SIGHUP: a single gateway cannot reload \(run it with --workers for that\); draining as for SIGTERM/);
    } finally {
      if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGKILL');
    }
  });

  void it('bad flags exit 2 with a message naming the flag', async () => {
    const cases: [string[], RegExp][] = [
      [['--listen', 'nowhere'], /^error: --listen expects host:port, fd:N or systemd\[:NAME\], not "nowhere"$/m],
      [['--admin', 'fd:x'], /^error: --admin expects host:port, fd:N or systemd\[:NAME\], not "fd:x"$/m],
      [['--admin', '127.0.0.1'], /^error: --admin expects host:port/m],
      [['--trust-proxy', 'some'], /^error: --trust-proxy expects a number of hops/m],
      [['--app', 'http://127.0.0.1:5000'], /^error: --app only apply with --sidecar$/m],
      [['--sidecar', '--app', 'http://127.0.0.1:5000', '--service', 'hello'], /^error: --sidecar needs --app-version$/m],
      [['--tls-cert', 'c.pem'], /^error: --tls-cert and --tls-key go together$/m],
      [['--tls-key', 'k.pem'], /^error: --tls-cert and --tls-key go together$/m],
      [['--upstream-cert', 'c.pem'], /^error: --upstream-cert and --upstream-key go together$/m],
      [['--upstream-server-identity', 'dns'], /^error: --upstream-server-identity expects hostname or spiffe, not "dns"$/m],
      [['--upstream-trust-domains', 'mesh.example.com'], /^error: --upstream-trust-domains applies with --upstream-server-identity spiffe$/m],
      [['--upstream-ca', '/nonexistent/ca.pem'], /^error: cannot read the upstream TLS CA bundle \/nonexistent\/ca\.pem: no such file$/m],
      [['--advertise', 'https://10.0.0.7:8443'], /^error: --advertise only apply with --sidecar$/m],
      [['--sidecar', '--app', 'http://127.0.0.1:5000', '--service', 'hello', '--app-version', '1.0.0', '--app-protocol', 'grpc'], /^error: --app-protocol expects http or h2c, not "grpc"$/m],
      [['--no-http2'], /^error: --no-http2 applies with --tls-cert and --tls-key/m],
      [['--app-health', '/healthz'], /^error: --app-health only apply with --sidecar$/m],
      [['--sidecar', '--app', 'http://127.0.0.1:5000', '--service', 'hello', '--app-version', '1.0.0', '--app-health', 'healthz'], /^error: --app-health expects an HTTP path \(\/healthz\), grpc or grpc:<service>, not "healthz"$/m],
      [['--sidecar', '--app', 'http://127.0.0.1:5000', '--service', 'hello', '--app-version', '1.0.0', '--app-health', '/healthz', '--app-health-interval', 'often'], /^error: --app-health-interval expects milliseconds/m],
      [['--sidecar', '--app', 'http://127.0.0.1:5000', '--service', 'hello', '--app-version', '1.0.0', '--app-health', 'grpc'], /^error: sidecar appHealth.check.grpc needs appProtocol h2c/m],
      [['--stream-idle-timeout', '0'], /^error: --stream-idle-timeout expects milliseconds, a positive integer, not "0"$/m],
      [['--tls-client-ca', 'ca.pem'], /^error: --tls-client-ca applies with --tls-cert and --tls-key/m],
      [['--h2c', '--tls-cert', 'c.pem', '--tls-key', 'k.pem'], /^error: --h2c is cleartext HTTP\/2; with --tls-cert, HTTP\/2 is offered through TLS already$/m],
      [['--h2c', '--sidecar', '--app', 'http://127.0.0.1:5000', '--service', 'hello', '--app-version', '1.0.0'], /^error: --h2c applies to the edge gateway, not --sidecar$/m],
      [['--tls-cert', 'c.pem', '--tls-key', 'k.pem', '--tls-client-cert', 'require'], /^error: --tls-client-cert applies with --tls-client-ca$/m],
      [['--tls-cert', 'c.pem', '--tls-key', 'k.pem', '--tls-client-ca', 'ca.pem', '--tls-client-cert', 'always'], /^error: --tls-client-cert expects request or require, not "always"$/m],
      [['--workers', '0'], /^error: --workers expects a number of processes from 1 to 256, or auto, not "0"$/m],
      [['--workers', 'some'], /^error: --workers expects a number of processes from 1 to 256, or auto, not "some"$/m],
      [['--workers', '2', '--sidecar', '--app', 'http://127.0.0.1:5000', '--service', 'hello', '--app-version', '1.0.0'], /^error: --workers applies to the edge gateway: a sidecar registers its one app from one process$/m],
    ];
    const runs = await Promise.all(cases.map(([args]) => cli(['gateway', ...args])));
    runs.forEach((r, i) => {
      assert.equal(r.code, 2, `${cases[i]![0].join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, cases[i]![1]);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
    const noToken = await cli(['gateway'], { PLINTH_TOKEN: '' });
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /no token: set \$PLINTH_TOKEN/);
  });

  void it('serves HTTPS with --tls-cert and --tls-key, and refuses a missing or mismatched file before connecting', async () => {
    const dir = join(tmp, 'tls');
    const cert = join(dir, 'c.pem');
    const key = join(dir, 'k.pem');
    const other = join(dir, 'other-k.pem');
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    await selfSigned(key, cert);
    await selfSigned(other, join(dir, 'other-c.pem'));

    const missing = join(dir, 'missing.pem');
    const runs = await Promise.all([
      cli(['gateway', '--listen', '127.0.0.1:0', '-n', NS, '--tls-cert', missing, '--tls-key', key], { PLINTH_TOKEN: gatewayToken }),
      cli(['gateway', '--listen', '127.0.0.1:0', '-n', NS, '--tls-cert', cert, '--tls-key', missing], { PLINTH_TOKEN: gatewayToken }),
      cli(['gateway', '--listen', '127.0.0.1:0', '-n', NS, '--tls-cert', cert, '--tls-key', other], { PLINTH_TOKEN: gatewayToken }),
    ]);
    const expected = [
      `error: cannot read the TLS certificate ${missing}: no such file`,
      `error: cannot read the TLS key ${missing}: no such file`,
      `error: the TLS key ${other} does not belong to the certificate ${cert}`,
    ];
    runs.forEach((r, i) => {
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim(), expected[i]);
      assert.equal(r.stdout, '');
    });

    const gw = await startGatewayProcess(['--tls-cert', cert, '--tls-key', key]);
    const agent = new Agent({ connect: { ca: await readFile(cert, 'utf8') } });
    try {
      assert.match(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      let r = { status: 0, text: '' };
      for (let i = 0; i < 100 && r.status !== 200; i++) {
        if (i > 0) await sleep(50);
        const res = await request(`${gw.url}/hello/tls`, { dispatcher: agent });
        r = { status: res.statusCode, text: await res.body.text() };
      }
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, 'hello /hello/tls from gateway');
      // HTTP/2 is offered by default.
      assert.equal(await alpnOf(gw.url, await readFile(cert, 'utf8')), 'h2');
      gw.child.kill('SIGTERM');
      assert.equal(await gw.exited, 0, gw.output().stderr);
    } finally {
      await agent.close();
      if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGKILL');
    }

    const http1 = await startGatewayProcess(['--tls-cert', cert, '--tls-key', key, '--no-http2']);
    try {
      assert.equal(await alpnOf(http1.url, await readFile(cert, 'utf8')), 'http/1.1');
      http1.child.kill('SIGTERM');
      assert.equal(await http1.exited, 0, http1.output().stderr);
    } finally {
      if (http1.child.exitCode === null && http1.child.signalCode === null) http1.child.kill('SIGKILL');
    }
  });

  void it('serves cleartext HTTP/2 beside HTTP/1.1 with --h2c', async () => {
    const gw = await startGatewayProcess(['--h2c']);
    const session = connectHttp2(gw.url);
    try {
      const ask = () =>
        new Promise<{ status: number; text: string }>((resolve, reject) => {
          const s = session.request({ ':path': '/hello/h2c' });
          let status = 0;
          let text = '';
          s.on('response', (h) => (status = Number(h[':status'])));
          s.setEncoding('utf8');
          s.on('data', (d: string) => (text += d));
          s.on('end', () => resolve({ status, text }));
          s.on('error', reject);
        });
      let r = await ask();
      for (let i = 0; i < 100 && r.status !== 200; i++) {
        await sleep(50);
        r = await ask();
      }
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, 'hello /hello/h2c from gateway');
      assert.equal((await get(`${gw.url}/hello/h1`)).text, 'hello /hello/h1 from gateway');
      session.close();
      gw.child.kill('SIGTERM');
      assert.equal(await gw.exited, 0, gw.output().stderr);
    } finally {
      session.destroy();
      if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGKILL');
    }
  });

  void it('verifies client certificates with --tls-client-ca, requires them with --tls-client-cert require, and refuses a bad bundle', async () => {
    const dir = join(tmp, 'mtls');
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    const openssl = (args: string[]) => new Promise<void>((resolve, reject) => execFile('openssl', args, (err, _o, stderr) => (err ? reject(new Error(stderr)) : resolve())));
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    const [cert, key, ca, caKey, client, clientKey, csr, ext] = ['c.pem', 'k.pem', 'ca.pem', 'ca-key.pem', 'client.pem', 'client-key.pem', 'client.csr', 'client.ext'].map((f) => join(dir, f)) as [string, string, string, string, string, string, string, string];
    await openssl(['req', '-x509', ...ec, '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert]);
    await openssl(['req', '-x509', ...ec, '-subj', '/CN=test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-days', '1', '-keyout', caKey, '-out', ca]);
    await openssl(['req', '-new', ...ec, '-subj', '/CN=billing', '-keyout', clientKey, '-out', csr]);
    await writeFile(ext, `subjectAltName=URI:spiffe://test/ns/${NS}/sa/billing\nextendedKeyUsage=clientAuth\n`);
    await openssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-set_serial', '7', '-days', '1', '-extfile', ext, '-out', client]);

    const missing = join(dir, 'missing.pem');
    const bad = await Promise.all([
      cli(['gateway', '--listen', '127.0.0.1:0', '-n', NS, '--tls-cert', cert, '--tls-key', key, '--tls-client-ca', missing], { PLINTH_TOKEN: gatewayToken }),
      cli(['gateway', '--listen', '127.0.0.1:0', '-n', NS, '--tls-cert', cert, '--tls-key', key, '--tls-client-ca', key], { PLINTH_TOKEN: gatewayToken }),
    ]);
    assert.deepEqual(
      bad.map((r) => [r.code, r.stderr.trim(), r.stdout]),
      [
        [2, `error: cannot read the TLS client CA bundle ${missing}: no such file`, ''],
        [2, `error: the TLS client CA bundle ${key} holds no PEM certificate`, ''],
      ],
    );

    const gw = await startGatewayProcess(['--tls-cert', cert, '--tls-key', key, '--tls-client-ca', ca, '--tls-client-cert', 'require']);
    const serverCa = await readFile(cert, 'utf8');
    const withCert = new Agent({ connect: { ca: serverCa, cert: await readFile(client, 'utf8'), key: await readFile(clientKey, 'utf8') } });
    const without = new Agent({ connect: { ca: serverCa } });
    try {
      let r = { status: 0, text: '' };
      for (let i = 0; i < 100 && r.status !== 200; i++) {
        if (i > 0) await sleep(50);
        const res = await request(`${gw.url}/hello/mtls`, { dispatcher: withCert });
        r = { status: res.statusCode, text: await res.body.text() };
      }
      assert.equal(r.status, 200, r.text);
      await assert.rejects(request(`${gw.url}/hello/mtls`, { dispatcher: without }), /certificate required|other side closed|socket hang up|ECONNRESET/i);
      assert.match((await get(`${gw.admin}/metrics`)).text, /^plinth_gateway_mtls_refusals_total\{reason="no_certificate"\} 1$/m);
      gw.child.kill('SIGTERM');
      assert.equal(await gw.exited, 0, gw.output().stderr);
    } finally {
      await withCert.close();
      await without.close();
      if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGKILL');
    }
  });

  void it('serves from --workers 2, replaces them on SIGHUP with no failed request and its counters kept, replaces a crashed worker, and drains on SIGTERM', async () => {
    const gw = await startGatewayProcess(['--workers', '2']);
    const workersOf = async (): Promise<number[]> => (JSON.parse((await get(`${gw.admin}/healthz`)).text) as { workers: number[] }).workers;
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const twoxx = async (): Promise<number> => Number(/^plinth_gateway_requests_total\{route="gw\/hello",status_class="2xx"\} (\d+)$/m.exec((await get(`${gw.admin}/metrics`)).text)?.[1] ?? 0);
    try {
      const first = /\(namespace gw, 2 workers: (\d+) (\d+)\)/.exec(gw.output().stdout);
      assert.ok(first, gw.output().stdout);
      const original = [Number(first[1]), Number(first[2])];
      assert.deepEqual((await workersOf()).sort(), [...original].sort());
      let ready = await get(`${gw.admin}/readyz`);
      for (let i = 0; i < 100 && ready.status !== 200; i++) {
        await sleep(50);
        ready = await get(`${gw.admin}/readyz`);
      }
      assert.equal(ready.status, 200, ready.text);

      // A new connection per request: each one is accepted by whichever worker the kernel hands it to.
      let served = 0;
      const failures: string[] = [];
      const once = async (path: string): Promise<void> => {
        try {
          const r = await request(`${gw.url}${path}`, { reset: true });
          const text = await r.body.text();
          if (r.statusCode === 200 && text === `hello ${path} from gateway`) served++;
          else failures.push(`${r.statusCode} ${text}`);
        } catch (e) {
          failures.push(String(e));
        }
      };
      for (let i = 0; i < 20; i++) await once(`/hello/${i}`);
      assert.deepEqual(failures, []);
      assert.equal(await twoxx(), 20, 'the primary sums the workers\' counters');
      const table = await get(`${gw.admin}/routes`);
      assert.equal(table.status, 200, 'a worker answers for its route table');
      assert.deepEqual((JSON.parse(table.text) as { routes: { id: string }[] }).routes.map((r) => r.id), ['gw/hello']);

      // A request in flight on an old worker, then a reload under load.
      const keepAlive = new Agent();
      const inFlight = request(`${gw.url}/hello/held`, { dispatcher: keepAlive }).then(async (r) => ({ status: r.statusCode, text: await r.body.text() }));
      while (held.length === 0) await sleep(5);
      gw.child.kill('SIGHUP');
      let loading = true;
      const load = Promise.all(
        Array.from({ length: 4 }, async (_, k) => {
          for (let i = 0; loading; i++) await once(`/hello/load-${k}-${i}`);
        }),
      );
      // Once neither original worker serves, both are draining: the held request's one is waiting for it.
      for (let i = 0; i < 400 && (await workersOf()).some((p) => original.includes(p)); i++) await sleep(25);
      const replaced = await workersOf();
      assert.equal(replaced.length, 2);
      assert.ok(!replaced.some((p) => original.includes(p)), `new workers ${replaced.join(' ')}, old ${original.join(' ')}`);
      assert.ok(original.some(alive), 'the worker holding the request is still draining');
      held.shift()!();
      assert.deepEqual(await inFlight, { status: 200, text: 'hello /hello/held from gateway' });
      for (let i = 0; i < 400 && !/reloaded: workers/.test(gw.output().stderr); i++) await sleep(25);
      loading = false;
      await load;
      await keepAlive.close();
      assert.match(gw.output().stderr, /SIGHUP: replacing the workers one by one/);
      assert.match(gw.output().stderr, new RegExp(`reloaded: workers (${replaced.join('|')}) (${replaced.join('|')})`));
      assert.deepEqual(failures, [], 'no request failed during the reload');
      assert.ok(served > 40, `requests served during the reload: ${served - 20}`);
      assert.ok(!original.some(alive), 'the old workers exited');
      // The retired workers' counts are kept: the counter goes on from where it was.
      assert.equal(await twoxx(), served + 1);
      const metrics = (await get(`${gw.admin}/metrics`)).text;
      assert.match(metrics, /^plinth_gateway_reloads_total\{outcome="done"\} 1$/m);
      if (hasPromtool) {
        const lint = await promtool(metrics);
        assert.deepEqual([lint.code, lint.output.trim()], [0, ''], 'the summed exposition passes promtool check metrics');
      }
      assert.match(metrics, /^plinth_gateway_workers 2$/m);

      // A worker killed outright is replaced; the other serves meanwhile.
      const [victim, survivor] = replaced as [number, number];
      process.kill(victim, 'SIGKILL');
      for (let i = 0; i < 10; i++) await once(`/hello/after-crash-${i}`);
      assert.deepEqual(failures, [], 'the surviving worker serves');
      let now = await workersOf();
      for (let i = 0; i < 400 && now.length < 2; i++) {
        await sleep(25);
        now = await workersOf();
      }
      assert.equal(now.length, 2);
      assert.ok(now.includes(survivor) && !now.includes(victim), now.join(' '));
      assert.match(gw.output().stderr, /a gateway worker exited unasked; starting another/);
      assert.match((await get(`${gw.admin}/metrics`)).text, /^plinth_gateway_worker_restarts_total 1$/m);

      gw.child.kill('SIGTERM');
      assert.equal(await gw.exited, 0, gw.output().stderr);
      assert.ok(!now.some(alive), 'no worker outlives the primary');
      assert.match(gw.output().stderr, /stopped/);
      // Four processes wrote access-log lines to one pipe: each line is whole.
      const lines = gw.output().stdout.split('\n').filter((l) => l !== '' && !/^(plinth gateway listening|admin on) /.test(l));
      const entries = lines.map((l) => JSON.parse(l) as { path: string; status: number });
      // (the worker killed outright may have lost the lines it had not written yet)
      assert.ok(entries.length > 20, `${entries.length} access-log lines`);
      assert.ok(entries.some((e) => e.path === '/hello/held' && e.status === 200), 'a drained worker flushed its log');
    } finally {
      if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGKILL');
    }
  });

  void it('--workers: a worker that cannot start fails the start with its exit code; a reload whose new worker cannot start leaves the running ones serving', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    try {
      const r = await cli(['gateway', '--listen', `127.0.0.1:${(busy.address() as AddressInfo).port}`, '-n', NS, '--workers', '2'], { PLINTH_TOKEN: gatewayToken });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^error: cannot start the gateway: an address is already in use/m, 'the worker says why');
      assert.match(r.stderr, /^error: cannot start the gateway: a gateway worker exited with code 1 before it was up$/m);
      assert.equal(r.stdout, '');
    } finally {
      busy.close();
    }

    // The upstream CA bundle is read at start: a new worker without it cannot start, the running ones keep theirs.
    const dir = join(tmp, 'reload');
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    const ca = join(dir, 'ca.pem');
    await selfSigned(join(dir, 'ca-key.pem'), ca);
    const gw = await startGatewayProcess(['--workers', '2', '--upstream-ca', ca]);
    try {
      const original = (JSON.parse((await get(`${gw.admin}/healthz`)).text) as { workers: number[] }).workers;
      const bundle = await readFile(ca, 'utf8');
      await rm(ca);
      gw.child.kill('SIGHUP');
      for (let i = 0; i < 400 && !/reload failed/.test(gw.output().stderr); i++) await sleep(25);
      assert.match(gw.output().stderr, /cannot read the upstream TLS CA bundle/);
      assert.match(gw.output().stderr, new RegExp(`reload failed: workers (${original.join('|')}) (${original.join('|')}) serve on`));
      assert.deepEqual((JSON.parse((await get(`${gw.admin}/healthz`)).text) as { workers: number[] }).workers.sort(), [...original].sort());
      const r = await request(`${gw.url}/hello/still`, { reset: true });
      assert.deepEqual([r.statusCode, await r.body.text()], [200, 'hello /hello/still from gateway']);
      assert.match((await get(`${gw.admin}/metrics`)).text, /^plinth_gateway_reloads_total\{outcome="failed"\} 1$/m);

      await writeFile(ca, bundle);
      gw.child.kill('SIGHUP');
      for (let i = 0; i < 400 && !/reloaded: workers/.test(gw.output().stderr); i++) await sleep(25);
      const now = (JSON.parse((await get(`${gw.admin}/healthz`)).text) as { workers: number[] }).workers;
      assert.equal(now.length, 2);
      assert.ok(!now.some((p) => original.includes(p)), 'once the bundle is back, a reload replaces both');
      gw.child.kill('SIGTERM');
      assert.equal(await gw.exited, 0, gw.output().stderr);
    } finally {
      if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGKILL');
    }
  });

  void it('--request-id: every answer carries an ID under the header named; a header the gateway owns is refused', async () => {
    const gw = await startGatewayProcess(['--request-id', 'X-Correlation-Id']);
    try {
      const r = await request(`${gw.url}/hello/rid`);
      assert.equal(await r.body.text(), 'hello /hello/rid from gateway');
      assert.match(String(r.headers['x-correlation-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      gw.child.kill('SIGTERM');
      assert.equal(await gw.exited, 0, gw.output().stderr);
      const line = gw.output().stdout.split('\n').find((l) => l.includes('/hello/rid'));
      assert.equal((JSON.parse(line ?? '{}') as { requestId?: string }).requestId, r.headers['x-correlation-id'], 'the access log has it');
    } finally {
      if (gw.child.exitCode === null && gw.child.signalCode === null) gw.child.kill('SIGKILL');
    }
    const bad = await cli(['gateway', '--request-id', 'traceparent', '--listen', '127.0.0.1:0', '-n', NS], { PLINTH_TOKEN: gatewayToken });
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /^error: requestId\.header: traceparent is a header the gateway sets or strips itself$/m);
  });

  void it('--listen systemd: a gateway restarts on a socket its service manager holds without refusing a connection, the old and the new one sharing it, or across a gap', async () => {
    await onHeldSocket('held', ['--listen', 'systemd'], async ({ start, load, base }) => {
      const a = await start();
      assert.match(a.output().stdout, new RegExp(`^plinth gateway listening on ${base} \\(namespace ${NS}\\)$`, 'm'), 'the URL is the held socket\'s');
      await load.more(20);
      // A new gateway starts on the same socket before the old one drains: both accept for a while.
      const b = await start();
      await terminated(a);
      await load.more(20);
      // A gap, as when systemd restarts a unit: nothing accepts, and the clients' connections wait in the backlog.
      await load.acrossGap(() => terminated(b), async () => void (await start()));
    });
  });

  void it('--workers with --listen systemd: the primary shares the held socket with its workers; SIGHUP reloads on it, and the whole gateway restarts across a gap', async () => {
    await onHeldSocket('held-workers', ['--workers', '2', '--listen', 'systemd'], async ({ start, load, base }) => {
      const first = await start();
      assert.match(first.output().stdout, new RegExp(`^plinth gateway listening on ${base} \\(namespace ${NS}, 2 workers: \\d+ \\d+\\)$`, 'm'));
      await load.more(20);
      process.kill(first.pid, 'SIGHUP');
      for (let i = 0; i < 800 && !/reloaded: workers/.test(first.output().stderr); i++) await sleep(25);
      assert.match(first.output().stderr, /reloaded: workers \d+ \d+/);
      await load.more(20);
      await load.acrossGap(() => terminated(first), async () => void (await start()));
    });
  });

  void it('--sidecar --listen systemd: the ingress on the held socket, registered at its address', async () => {
    const holder = await socketHolder(await heldDir('held-sidecar'));
    try {
      // The admin's token: a sidecar registers its app, which the edge gateway's role does not allow.
      const sc = await holder.start([process.execPath, MAIN, 'gateway', '--sidecar', '--listen', 'systemd', '--app', `http://${upstreamAddress}`, '--service', 'hello-sc', '--app-version', '1.0.0', '--admin', '127.0.0.1:0', '-n', NS], baseEnv);
      await heldUp(sc);
      assert.match(sc.output().stdout, new RegExp(`listening on http://127\\.0\\.0\\.1:${holder.port} `), sc.output().stderr);
      let listed = '';
      for (let i = 0; i < 200 && !listed.includes(`127.0.0.1:${holder.port}`); i++) {
        listed = (await cli(['get', 'Instance', '-n', NS, '-l', 'plinth.dev/service=hello-sc', '-o', 'json'])).stdout;
        await sleep(25);
      }
      assert.match(listed, new RegExp(`"address": "http://127\\.0\\.0\\.1:${holder.port}"`), 'registered at the held socket\'s address');
      const r = await request(`http://127.0.0.1:${holder.port}/hello/sc`);
      assert.deepEqual([r.statusCode, await r.body.text()], [200, 'hello /hello/sc from undefined']);
      await terminated(sc);
    } finally {
      await holder.close();
    }
  });

  void it('--listen systemd without a socket passed, or passed to another process, and a descriptor that is no listening socket: refused before anything starts', async () => {
    const none = await cli(['gateway', '--listen', 'systemd', '-n', NS], { PLINTH_TOKEN: gatewayToken });
    assert.equal(none.code, 2, none.stderr);
    assert.match(none.stderr, /^error: "systemd": no socket was passed \(LISTEN_FDS is not set\): start it from a systemd socket unit$/m);
    const wrapped = await cli(['gateway', '--check', '--listen', 'systemd', '-n', NS], { PLINTH_TOKEN: gatewayToken, LISTEN_FDS: '1', LISTEN_PID: '1' });
    assert.equal(wrapped.code, 2, wrapped.stderr);
    assert.match(wrapped.stderr, /the sockets were passed to process 1, not to this one \(\d+\): run node directly as the service's command/);
    const pool = await cli(['gateway', '--workers', '2', '--listen', 'systemd', '-n', NS], { PLINTH_TOKEN: gatewayToken });
    assert.equal(pool.code, 2, pool.stderr);
    assert.match(pool.stderr, /^error: "systemd": no socket was passed/m, 'the primary checks before it forks');
    const notSocket = await cli(['gateway', '--listen', 'fd:9', '-n', NS], { PLINTH_TOKEN: gatewayToken });
    assert.notEqual(notSocket.code, 0);
    assert.match(notSocket.stderr, /fd:9: descriptor 9 is not a listening socket this process holds/);
  });

  void it('--workers: no worker outlives its primary: killed outright, its workers drain and exit; told twice to stop, they are killed', async () => {
    const pidsOf = async (admin: string): Promise<number[]> => (JSON.parse((await get(`${admin}/healthz`)).text) as { workers: number[] }).workers;
    const someAlive = (pids: number[]): boolean =>
      pids.some((p) => {
        try {
          process.kill(p, 0);
          return true;
        } catch {
          return false;
        }
      });
    const gone = async (pids: number[]): Promise<boolean> => {
      for (let i = 0; i < 200; i++) {
        if (!someAlive(pids)) return true;
        await sleep(25);
      }
      return false;
    };
    // The orphaned workers finish the request in flight (node's cluster alone would exit them at once).
    const killed = await startGatewayProcess(['--workers', '2']);
    try {
      const first = await pidsOf(killed.admin);
      const inFlight = request(`${killed.url}/hello/held-orphaned`).then(
        async (r) => ({ status: r.statusCode, text: await r.body.text() }),
        (e: Error) => e,
      );
      while (held.length === 0) await sleep(5);
      killed.child.kill('SIGKILL');
      for (let i = 0; i < 200 && (killed.output().stderr.match(/the primary is gone; draining/g) ?? []).length < 2; i++) await sleep(25);
      assert.equal((killed.output().stderr.match(/the primary is gone; draining, then exiting/g) ?? []).length, 2, killed.output().stderr);
      assert.ok(someAlive(first), 'the worker holding a request drains');
      held.shift()!();
      assert.deepEqual(await inFlight, { status: 200, text: 'hello /hello/held-orphaned from gateway' });
      assert.ok(await gone(first), 'workers exit once drained when their primary is killed');
      assert.doesNotMatch(killed.output().stderr, /error/i, 'the orphans drained and left cleanly');
    } finally {
      held.shift()?.();
    }

    // A second SIGTERM while a request holds the drain: exit 130 at once, the workers killed.
    const told = await startGatewayProcess(['--workers', '2']);
    try {
      const second = await pidsOf(told.admin);
      const inFlight = request(`${told.url}/hello/held`).catch((e: Error) => e);
      while (held.length === 0) await sleep(5);
      told.child.kill('SIGTERM');
      for (let i = 0; i < 200 && !/SIGTERM: shutting down/.test(told.output().stderr); i++) await sleep(10);
      told.child.kill('SIGTERM');
      assert.equal(await told.exited, 130, told.output().stderr);
      assert.match(told.output().stderr, /SIGTERM again: exiting without draining/);
      assert.ok(await gone(second), 'the workers are killed with it');
      assert.ok((await inFlight) instanceof Error, 'the request held in flight was cut');
    } finally {
      held.shift()?.();
      if (told.child.exitCode === null && told.child.signalCode === null) told.child.kill('SIGKILL');
    }
  });

  void it('--check: exit 0 when a start would succeed and every Route compiles, without binding; the start\'s own errors otherwise', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    try {
      const ok = await cli(['gateway', '--check', '--listen', `127.0.0.1:${(busy.address() as AddressInfo).port}`, '-n', NS, '--workers', '2'], { PLINTH_TOKEN: gatewayToken });
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, 'configuration OK: 1 Route in namespace gw\n');
    } finally {
      busy.close();
    }
    const missing = join(tmp, 'no-such-cert.pem');
    const tls = await cli(['gateway', '--check', '-n', NS, '--tls-cert', missing, '--tls-key', missing], { PLINTH_TOKEN: gatewayToken });
    assert.deepEqual([tls.code, tls.stderr.trim(), tls.stdout], [2, `error: cannot read the TLS certificate ${missing}: no such file`, '']);
    const forged = await cli(['gateway', '--check', '-n', NS], { PLINTH_TOKEN: 'plinth_forged' });
    assert.equal(forged.code, 4, forged.stderr);
    assert.match(forged.stderr, /^error: the gateway would not start: the control plane refuses the token \(.*401.*\)$/m);
  });
});
