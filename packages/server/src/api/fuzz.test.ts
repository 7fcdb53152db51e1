import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { resource, startTestServer, type TestServer } from '../testing/harness.js';

/** Deterministic PRNG so a failing case can be replayed. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

const WEIRD_VALUES: unknown[] = [null, true, -1, 0, 1e308, -0.5, '', 'x'.repeat(5000), [], [[]], {}, { a: { b: { c: {} } } }, '\u0000', '💥', '../../etc', 'DROP TABLE', NaN];
const KINDS = ['Service', 'Instance', 'Config', 'Secret', 'Role', 'RoleBinding', 'ServiceAccount', 'Nope', '..', '%2e%2e', 'x'.repeat(300)];

function mutateJson(text: string, r: () => number): string {
  const chars = [...text];
  const n = 1 + Math.floor(r() * 4);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(r() * chars.length);
    const op = r();
    if (op < 0.33) chars.splice(at, 1);
    else if (op < 0.66) chars.splice(at, 0, String.fromCharCode(Math.floor(r() * 128)));
    else chars[at] = '{[":,]}'[Math.floor(r() * 7)]!;
  }
  return chars.join('');
}

function randomDoc(r: () => number): unknown {
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  const base: any = resource('Instance', 'fuzz', 'i', { service: 'svc', version: '1', address: '127.0.0.1:1' });
  const paths = [
    ['spec', 'weight'], ['spec', 'service'], ['spec', 'leaseTtlSeconds'], ['metadata', 'labels'], ['metadata', 'labels', 'k'],
    ['metadata', 'name'], ['spec'], ['metadata'], ['apiVersion'], ['kind'], ['spec', 'metadata'], ['metadata', 'annotations'],
  ];
  const p = pick(paths);
  let o = base;
  for (let i = 0; i < p.length - 1; i++) {
    if (typeof o[p[i]!] !== 'object' || o[p[i]!] === null) o[p[i]!] = {};
    o = o[p[i]!];
  }
  o[p[p.length - 1]!] = pick(WEIRD_VALUES);
  return r() < 0.1 ? pick(WEIRD_VALUES) : base;
}

function rawRequest(port: number, payload: Buffer | string): Promise<string> {
  return new Promise((ok) => {
    const sock = connect(port, '127.0.0.1');
    let out = '';
    sock.setTimeout(3000, () => sock.destroy());
    sock.on('data', (d) => (out += d.toString('latin1')));
    sock.on('error', () => ok(out));
    sock.on('close', () => ok(out));
    sock.on('connect', () => {
      sock.write(payload);
      sock.end();
    });
  });
}

describe('malformed input never crashes the server nor answers 500', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer('sqlite');
  });
  after(async () => {
    await s?.destroy();
  });

  it('survives thousands of malformed API requests with 4xx problem answers', async () => {
    const r = rng(0xc0ffee);
    const statuses = new Map<number, number>();
    const bad: string[] = [];
    const valid = JSON.stringify(resource('Config', 'fuzz', 'c', { format: 'json', content: '{"a":1}' }));
    const jobs: (() => Promise<void>)[] = [];
    for (let i = 0; i < 3000; i++) {
      jobs.push(async () => {
        const kind = KINDS[Math.floor(r() * KINDS.length)]!;
        const variant = Math.floor(r() * 8);
        let method = 'PUT';
        let path = `/v1/resources/${kind}/fuzz/n${i % 50}`;
        let body: string | undefined;
        const headers: Record<string, string> = { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' };
        switch (variant) {
          case 0:
            body = mutateJson(valid, r);
            break;
          case 1:
            body = JSON.stringify(randomDoc(r));
            path = `/v1/resources/Instance/fuzz/i`;
            break;
          case 2:
            headers['content-type'] = 'application/yaml';
            body = r() < 0.5 ? 'a: &a [*a]\n' : `a: &x ["l","l","l","l"]\nb: &y [*x,*x,*x,*x,*x,*x]\nc: &z [*y,*y,*y,*y,*y,*y]\nd: [*z,*z,*z,*z,*z,*z,*z]\n: : :\n\t- ]`;
            break;
          case 3:
            method = 'GET';
            path = `/v1/resources/${kind}?selector=${encodeURIComponent(mutateJson('a in (b,c),d!=e', r))}&limit=${Math.floor(r() * 5000) - 10}&continue=${mutateJson('abc', r)}`;
            break;
          case 4:
            method = 'GET';
            path = `/v1/resources/%E0%A4%A/${'n'.repeat(Math.floor(r() * 400))}/x`;
            break;
          case 5:
            headers['content-type'] = ['text/plain', 'application/xml', 'multipart/form-data', ''][Math.floor(r() * 4)]!;
            body = valid;
            break;
          case 6:
            // Only bytes a client can put in a header; the server must cope with any of them.
            headers['if-match'] = mutateJson('"12"', r).replace(/[^\x21-\x7e]/g, '') || 'x';
            body = valid;
            path = '/v1/resources/Config/fuzz/c';
            break;
          case 7:
            method = ['PATCH', 'POST', 'DELETE', 'OPTIONS'][Math.floor(r() * 4)]!;
            path = `/v1/${['resources', 'watch', 'leases', 'registry', 'audit'][Math.floor(r() * 5)]}/${kind}`;
            body = r() < 0.5 ? mutateJson(valid, r) : undefined;
            break;
        }
        const res = await fetch(s.url + path, { method, headers, ...(body !== undefined ? { body } : {}) });
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (res.status >= 500) bad.push(`${method} ${path} -> ${res.status} ${text.slice(0, 200)}`);
        else if (res.status >= 400 && !(res.headers.get('content-type') ?? '').includes('application/problem+json')) {
          bad.push(`${method} ${path} -> ${res.status} without problem+json`);
        }
      });
    }
    // Eight requests in flight at a time.
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < jobs.length) await jobs[next++]!();
    }));
    assert.deepEqual(bad.slice(0, 10), [], `statuses: ${JSON.stringify([...statuses])}`);
    assert.ok([...statuses.keys()].some((k) => k >= 400 && k < 500));
  });

  it('answers every route, with any parameters, body and credentials, without a 5xx', async () => {
    const r = rng(Number(process.env.PLINTH_FUZZ_SEED ?? 0xa11));
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    const seg = () => pick(['fuzz', 'default', 'x', '', '%zz', '..', '%2e%2e', 'a'.repeat(300), 'ÿ', '4bf92f3577b34da6a3ce929d0e0e4736', '0', '-1', 'Config', 'Nope']);
    // Every route the server has; `:x` segments are filled with odd values.
    const routes: [string, string][] = [
      ['GET', '/.well-known/jwks.json'], ['POST', '/v1/auth/token'], ['GET', '/v1/whoami'], ['POST', '/v1/serviceaccounts/:ns/:name/credentials'],
      ['DELETE', '/v1/serviceaccounts/:ns/:name/credentials/:id'], ['POST', '/v1/auth/keys/rotate'], ['GET', '/v1/audit'], ['POST', '/v1/traces'],
      ['GET', '/v1/traces/:id'], ['GET', '/v1/traces'], ['GET', '/v1/apm/red'], ['GET', '/v1/apm/topology'], ['GET', '/v1/apm/services'],
      ['GET', '/v1/apm/slos/:ns/:name'], ['GET', '/v1/apm/slos'], ['GET', '/v1/apm/alerts'], ['GET', '/v1/apm/contention'], ['GET', '/v1/watch'],
      ['POST', '/v1/leases/:ns/:name'], ['POST', '/v1/registry/:ns/:name/drain'], ['GET', '/v1/kinds'], ['GET', '/v1/resources/:kind/:ns/:name/history'],
      ['GET', '/v1/resources/:kind/:ns/:name/diff'], ['POST', '/v1/resources/:kind/:ns/:name/rollback'], ['POST', '/v1/secrets/keys/rotate'],
      ['GET', '/healthz'], ['GET', '/readyz'], ['GET', '/metrics'],
    ];
    const PARAMS = ['namespace', 'service', 'endpoint', 'status', 'minDurationMs', 'maxDurationMs', 'tag', 'from', 'to', 'limit', 'group', 'split', 'includeStress', 'kinds', 'selector', 'continue', 'reveal', 'source', 'revision', 'from', 'ttlSeconds', 'timeoutMs', 'since'];
    const VALUES = ['', 'x', '-1', '0', '1e309', 'NaN', '99999999999999999999', 'true', 'yes', 'error', 'lane:gray', 'lane', 'a in (b,c)', '%zz', '2026-12-02T00:00:00Z', 'service', 'endpoint', 'edge', ',,', 'a'.repeat(3000)];
    const bodies = ['', '{}', '[]', 'null', '{"ttlSeconds":-1}', '{"ttlSeconds":1e30,"name":5}', '{"ttlSeconds":"x"}', '{"holder":"a","ttlSeconds":5}', '{"holder":{},"ttlSeconds":5}', '{"resourceSpans":[{"scopeSpans":[{"spans":[{}]}]}]}', '{', '\u0000', 'x'.repeat(5000)];
    const bad: string[] = [];
    const statuses = new Map<number, number>();
    for (let i = 0, n = Number(process.env.PLINTH_FUZZ_CASES ?? 1500); i < n; i++) {
      const [method, template] = pick(routes);
      let path = template.replace(/:[a-z]+/g, () => encodeURIComponent(seg()));
      const n = Math.floor(r() * 4);
      if (n > 0) path += '?' + Array.from({ length: n }, () => `${pick(PARAMS)}=${encodeURIComponent(pick(VALUES))}`).join('&');
      const auth = r() < 0.75 ? `Bearer ${s.token}` : pick(['', 'Bearer', 'Bearer x.y.z', 'Bearer plinth_nope', 'Basic YTpi', `Bearer ${s.token}x`, 'Bearer eyJhbGciOiJub25lIn0.e30.']);
      const headers: Record<string, string> = { 'content-type': pick(['application/json', 'application/json', 'application/x-protobuf', 'text/plain', '']) };
      if (auth !== '') headers.authorization = auth;
      const body = method === 'GET' || method === 'DELETE' ? undefined : pick(bodies);
      // A watch that is accepted streams until told to stop: the answer's head is what this checks.
      const ac = new AbortController();
      const res = await fetch(s.url + path, { method, headers, ...(body !== undefined ? { body } : {}), signal: ac.signal });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const text = template === '/v1/watch' && res.status === 200 ? '' : await res.text();
      ac.abort();
      if (res.status >= 500 && res.status !== 503) bad.push(`${method} ${path} (${auth.slice(0, 20)}) -> ${res.status} ${text.slice(0, 200)}`);
      else if (res.status >= 400 && !(res.headers.get('content-type') ?? '').includes('application/problem+json')) bad.push(`${method} ${path} -> ${res.status} without problem+json`);
    }
    assert.deepEqual(bad.slice(0, 10), [], `statuses: ${JSON.stringify([...statuses])}`);
    if (process.env.PLINTH_FUZZ_DEBUG !== undefined) console.log(JSON.stringify([...statuses].sort()));
    assert.ok((statuses.get(200) ?? 0) > 50 && (statuses.get(400) ?? 0) > 50 && (statuses.get(401) ?? 0) > 50, JSON.stringify([...statuses]));
  });

  it('answers oversized bodies 413, oversized headers 431 and garbage on the socket 400', async () => {
    const big = await fetch(`${s.url}/v1/resources/Config/fuzz/big`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(resource('Config', 'fuzz', 'big', { content: 'x'.repeat(2 * 1024 * 1024) })),
    }).catch((e: unknown) => e);
    if (big instanceof Response) {
      assert.equal(big.status, 413);
      assert.equal(((await big.json()) as any).code, 'payload_too_large');
    }
    const headers = await rawRequest(s.port, `GET /v1/resources/Config HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`);
    assert.match(headers, /^HTTP\/1\.1 431/);
    const r = rng(7);
    for (let i = 0; i < 200; i++) {
      const garbage = Buffer.from(Array.from({ length: 1 + Math.floor(r() * 300) }, () => Math.floor(r() * 256)));
      const out = await rawRequest(s.port, garbage);
      assert.ok(out === '' || /^HTTP\/1\.1 4\d\d/.test(out), out.slice(0, 80));
    }
  });

  it('still serves correct answers afterwards', async () => {
    const put = await s.api('PUT', '/v1/resources/Config/fuzz/after', resource('Config', 'fuzz', 'after', { format: 'json', content: '{"ok":true}' }));
    assert.equal(put.status, 201);
    const got = await s.api('GET', '/v1/resources/Config/fuzz/after');
    assert.equal(got.body.spec.content, '{"ok":true}');
    const health = await fetch(`${s.url}/readyz`);
    assert.equal(health.status, 200);
  });
});
