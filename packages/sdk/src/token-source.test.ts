import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { recordingLogger } from './testing/control-plane.js';
import { TokenSource } from './token-source.js';

/** A stand-in for /v1/auth/token only: the failure modes of an exchange are hard to provoke on a real server. */
async function tokenEndpoint(answer: (req: IncomingMessage) => { status: number; body: unknown }): Promise<{ url: string; calls: string[]; server: Server }> {
  const calls: string[] = [];
  const server = createServer((req, res) => {
    calls.push(`${req.method} ${req.url} ${req.headers.authorization}`);
    const a = answer(req);
    res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.body));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, calls, server };
}

const transport = (url: string) => ({ baseUrl: url, dispatcher: undefined, requestTimeoutMs: 5000 });

test('a JWT is used as is, without any exchange', async () => {
  const t = new TokenSource({ transport: transport('http://127.0.0.1:1'), token: 'eyJ.a.b', logger: recordingLogger() });
  assert.equal(await t.authorization(), 'Bearer eyJ.a.b');
  assert.equal(await t.renew(), false);
  t.close();
});

test('a credential is exchanged once, then the JWT is reused until shortly before it expires', async () => {
  let n = 0;
  const ep = await tokenEndpoint(() => ({ status: 200, body: { access_token: `jwt-${++n}`, token_type: 'Bearer', expires_in: 900 } }));
  let now = 0;
  const t = new TokenSource({ transport: transport(ep.url), token: 'plinth_secret', logger: recordingLogger(), now: () => now });
  const [a, b] = await Promise.all([t.authorization(), t.authorization()]);
  assert.equal(a, 'Bearer jwt-1');
  assert.equal(b, 'Bearer jwt-1', 'concurrent callers share one exchange');
  assert.deepEqual(ep.calls, ['POST /v1/auth/token Bearer plinth_secret']);
  now = 800_000; // past the usable window (900 s minus a 30 s margin is 870 s): still fine
  assert.equal(await t.authorization(), 'Bearer jwt-1');
  now = 880_000; // within the margin before expiry: exchanged again rather than raced against exp
  assert.equal(await t.authorization(), 'Bearer jwt-2');
  // After a 401 the credential is exchanged again at once.
  assert.equal(await t.renew(), true);
  assert.equal(await t.authorization(), 'Bearer jwt-3');
  t.close();
  ep.server.close();
});

test('a failed exchange falls back to the credential itself and retries later', async () => {
  let fail = true;
  const ep = await tokenEndpoint(() =>
    fail ? { status: 503, body: { code: 'unavailable', status: 503, title: 'x' } } : { status: 200, body: { access_token: 'jwt', expires_in: 60 } },
  );
  let now = 0;
  const log = recordingLogger();
  const t = new TokenSource({ transport: transport(ep.url), token: 'plinth_secret', logger: log, now: () => now, retryExchangeAfterMs: 5000 });
  assert.equal(await t.authorization(), 'Bearer plinth_secret');
  assert.equal(log.warnings.length, 1);
  fail = false;
  now = 1000; // too soon to try again: no second round trip in front of the request
  assert.equal(await t.authorization(), 'Bearer plinth_secret');
  assert.equal(ep.calls.length, 1);
  now = 6000;
  assert.equal(await t.authorization(), 'Bearer jwt');
  assert.equal(ep.calls.length, 2);
  t.close();
  ep.server.close();
});

test('an unreachable token endpoint also falls back to the credential', async () => {
  const log = recordingLogger();
  const t = new TokenSource({ transport: transport('http://127.0.0.1:1'), token: 'plinth_secret', logger: log });
  assert.equal(await t.authorization(), 'Bearer plinth_secret');
  assert.equal(log.warnings.length, 1);
  t.close();
});
