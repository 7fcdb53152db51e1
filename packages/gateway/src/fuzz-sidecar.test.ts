/**
 * The sidecar under fuzzing, on a real control plane: its ingress takes hostile requests from the mesh
 * (forged identity and caller headers, odd baggage, every method and path) in front of an app that
 * misbehaves on purpose, and its egress takes the app's calls with odd Host headers and first path segments
 * (the service they name) to a real service and to names that are none. No 500, nothing in flight, serving
 * on. Requests are the HTTP/1.1 fuzzer's grammar, without the byte damage (the listeners are the edge's).
 *
 * `PLINTH_FUZZ_CASES` (default 600) and `PLINTH_FUZZ_SEED` run a longer campaign.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { BAD_ANSWERS, bytes, campaign, header, int, METHODS, misbehaving, pick } from './fuzz.test.helpers.js';
import { startGateway, type Gateway } from './gateway.js';
import { controlPlane, sleep, until, upstream, type TestControlPlane, type Upstream } from './testkit.test.helpers.js';

const NS = 'fuzz-sidecar';

describe('fuzzing the sidecar: its ingress from the mesh, its egress from the app', () => {
  let cp: TestControlPlane;
  let gw: Gateway;
  let app: Awaited<ReturnType<typeof misbehaving>>;
  let payments: Upstream;

  before(async () => {
    cp = await controlPlane();
    app = await misbehaving();
    payments = await upstream('payments');
    await cp.api('PUT', `/v1/resources/Instance/${NS}/payments-1`, { spec: { service: 'payments', version: '1.0.0', address: payments.address, leaseTtlSeconds: 3600 } });
    gw = await startGateway({
      namespace: NS,
      controlPlane: { url: cp.url, token: cp.token },
      listen: '127.0.0.1:0',
      accessLog: false,
      sidecar: { app: `http://${app.address}`, service: 'orders', version: '2.0.0', egress: '127.0.0.1:0', deregisterDelayMs: 0 },
      server: { headersTimeoutMs: 1000, requestTimeoutMs: 3000 },
    });
    await sleep(100);
  });

  after(async () => {
    await gw?.close();
    app?.server.close();
    await payments?.close();
    await cp?.destroy();
  });

  it('answers every request on both sides cleanly and serves on, with nothing left in flight', async () => {
    const seed = Number(process.env.PLINTH_FUZZ_SEED ?? 0x51de);
    const cases = Number(process.env.PLINTH_FUZZ_CASES ?? 600);
    const statuses = new Map<string, number>();
    const failures: string[] = [];
    await campaign(seed, cases, 6, async (i, r) => {
      const egress = r() < 0.5;
      const method = pick(r, METHODS.slice(0, 8));
      const service = pick(r, ['payments', 'payments', 'nowhere', 'Payments', 'payments.example', '..', '%70ayments', 'a'.repeat(300), '']);
      const rest = `${pick(r, ['/charge', '/', '', '/a/../b', '/%2e%2e/x', '/' + String(int(r, BAD_ANSWERS.length))])}${r() < 0.3 ? `?x=${pick(r, ['1', '%zz', ''])}` : ''}`;
      const path = egress ? (r() < 0.5 ? `/${service}${rest}` : rest || '/') : `/orders${rest}/${int(r, BAD_ANSWERS.length)}`;
      const headers: Record<string, string> = {};
      if (egress && r() < 0.5) headers.host = service || 'x';
      for (let h = 0, n = int(r, 5); h < n; h++) {
        const [k, v] = header(r, 'x.y.z');
        if (k.startsWith(':') || k === 'host' || k === 'content-length' || k === 'transfer-encoding' || k === 'connection' || k === 'upgrade' || k === 'expect' || v.length > 4000 || /[^\x20-\x7e]/.test(v)) continue;
        headers[k] = v;
      }
      const body = method === 'POST' || method === 'PUT' ? bytes(r, int(r, 5000)) : undefined;
      let status: string;
      try {
        const res = await request(`${egress ? gw.egressUrl : gw.url}${path}`, { method: method as 'GET', headers, body: body ?? null, headersTimeout: 5000, bodyTimeout: 5000 });
        await res.body.dump();
        status = String(res.statusCode);
      } catch (e) {
        // A reply the sidecar cut after it began (the app broke off its answer) is allowed.
        status = `error ${(e as { code?: string }).code ?? ''}`;
      }
      statuses.set(`${egress ? 'egress' : 'ingress'} ${status}`, (statuses.get(`${egress ? 'egress' : 'ingress'} ${status}`) ?? 0) + 1);
      if (status === '500') failures.push(`case ${i} (seed ${seed}): ${method} ${egress ? 'egress' : 'ingress'} ${path} ${JSON.stringify(headers).slice(0, 300)}`);
    });
    if (process.env.PLINTH_FUZZ_DEBUG !== undefined) console.log(JSON.stringify([...statuses].sort()));
    assert.deepEqual(failures.slice(0, 5), [], JSON.stringify([...statuses]));
    assert.ok((statuses.get('egress 200') ?? 0) > 0 && (statuses.get('ingress 200') ?? 0) > 0, JSON.stringify([...statuses]));
    await until('nothing left in flight', () => gw.inFlight() === 0, 5000);
    const r = await request(`${gw.egressUrl}/payments/after`);
    await r.body.dump();
    assert.equal(r.statusCode, 200, 'the egress serves on');
  });
});
