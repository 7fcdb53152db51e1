/**
 * The control plane runs for months: nothing a request leaves behind may outlive it. Rounds of what clients
 * do all day (reads, lists, writes that change a Config and writes that change nothing, watch streams opened
 * and dropped, OTLP spans ingested, instances heartbeating) and of what outsiders send (forged tokens, bad
 * JSON, unknown kinds, malformed HTTP, broken OTLP bodies), then: the heap after a full collection and the
 * open file descriptors where they were after the warm-up rounds. `PLINTH_LEAK_ROUNDS` (default 5) soaks longer.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { afterRound, assertNoLeak, LEAK_ROUNDS, type AfterRound } from '@plinth/core/testing';
import { Agent, request } from 'undici';
import { jsonRequest, jsonSpan } from '../apm/otlp/test-helpers.js';
import { resource, startTestServer, type TestServer } from '../testing/harness.js';

const PER_ROUND = 1200;
/**
 * 3,600 requests at 300 bytes each. Runs stay within 0.4 MiB (V8's own warm-up, slowing round after round);
 * watch streams whose subscription outlives the client (100 a round) grow it by 0.8 MiB a round.
 */
const HEAP_SLACK = 1024 * 1024;
/** Sockets whose closing is still on its way. */
const FD_SLACK = 2;


/** The status of one raw exchange, '' when the server closed without one. */
function rawStatus(port: number, data: string): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    let got = '';
    sock.setTimeout(3000, () => sock.destroy());
    sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => resolve(/^HTTP\/1\.1 (\d{3}) /.exec(got)?.[1] ?? ''));
    sock.on('connect', () => sock.end(data));
  });
}

describe('what a request leaves behind in the server', () => {
  let s: TestServer;

  before(async () => {
    s = await startTestServer('sqlite');
    assert.equal((await s.api('PUT', '/v1/resources/Service/retail/orders', resource('Service', 'retail', 'orders', { team: 'orders' }))).status, 201);
    for (const n of ['orders-1', 'orders-2']) {
      const r = await s.api('PUT', `/v1/resources/Instance/retail/${n}`, resource('Instance', 'retail', n, { service: 'orders', version: '1.0.0', address: '127.0.0.1:9' }));
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
  });

  after(async () => {
    await s?.destroy();
  });

  /** Request `i` of a round: each kind in turn, the same mix every round. */
  async function send(agent: Agent, i: number): Promise<string> {
    const auth = { authorization: `Bearer ${s.token}` };
    const call = async (method: 'GET' | 'PUT' | 'POST', path: string, body?: string, headers: Record<string, string> = {}): Promise<string> => {
      const r = await request(s.url + path, { dispatcher: agent, method, headers: { ...auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers }, body: body ?? null });
      await r.body.dump();
      return String(r.statusCode);
    };
    const now = BigInt(Date.now()) * 1_000_000n;
    switch (i % 12) {
      case 0:
        return call('GET', '/v1/resources/Service/retail/orders');
      case 1:
        return call('GET', '/v1/resources/Instance?namespace=retail');
      case 2:
        // A write that changes the Config each time: a new revision, an event for every watcher.
        return call('PUT', '/v1/resources/Config/retail/checkout', JSON.stringify(resource('Config', 'retail', 'checkout', { format: 'json', content: JSON.stringify({ n: i }) })));
      case 3:
        // A write that changes nothing.
        return call('PUT', '/v1/resources/Service/retail/orders', JSON.stringify(resource('Service', 'retail', 'orders', { team: 'orders' })));
      case 4:
        return call('PUT', '/v1/resources/Config/retail/broken', '{"apiVersion": "plinth.dev/v1", "kind":');
      case 5:
        return call('GET', '/v1/resources/Service/retail/orders', undefined, { authorization: `Bearer ${randomBytes(24).toString('base64url')}.x.y` });
      case 6:
        return call('GET', `/v1/resources/Nope/retail/x${i}`);
      case 7: {
        // A watch stream: its first events read, then the client leaves.
        const ac = new AbortController();
        const r = await request(`${s.url}/v1/watch?kinds=Config&namespace=retail`, { dispatcher: agent, headers: auth, signal: ac.signal });
        const status = String(r.statusCode);
        for await (const _chunk of r.body) break;
        ac.abort();
        await r.body.dump().catch(() => {});
        return status;
      }
      case 8: {
        const spans = Array.from({ length: 5 }, (_, k) =>
          jsonSpan({ traceId: randomBytes(16).toString('hex'), spanId: randomBytes(8).toString('hex'), parentSpanId: '', name: `GET /orders/${k}`, startTimeUnixNano: String(now), endTimeUnixNano: String(now + 2_000_000n) }),
        );
        return call('POST', '/v1/traces', JSON.stringify(jsonRequest({ 'service.name': 'orders', 'service.namespace': 'retail' }, spans)));
      }
      case 9:
        return call('POST', '/v1/traces', '\x0a\xff\xff\xff\xff\x0f', { 'content-type': 'application/x-protobuf' });
      case 10:
        // An instance renewing its lease.
        return call('POST', '/v1/leases/retail/orders-1');
      default:
        return rawStatus(s.port, 'GET /v1/resources HTTP/1.1\r\nhost: x\r\nno colon\r\n\r\n');
    }
  }

  it('leaves no memory, socket or watcher behind, round after round', async () => {
    const rounds: AfterRound[] = [];
    const statuses = new Map<string, number>();
    for (let round = 0; round < LEAK_ROUNDS; round++) {
      const agent = new Agent({ connections: 8 });
      let next = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < PER_ROUND) {
            const i = next++;
            const st = await send(agent, i).catch((e: Error) => `error ${e.message}`);
            statuses.set(`${i % 12} ${st}`, (statuses.get(`${i % 12} ${st}`) ?? 0) + 1);
          }
        }),
      );
      // The round's connections close with it: what is still open then was leaked.
      await agent.close();
      rounds.push(await afterRound());
    }
    const seen = JSON.stringify([...statuses].sort());
    for (const k of ['0 200', '1 200', '2 200', '3 200', '4 400', '5 401', '6 404', '7 200', '8 200', '9 400', '10 200', '11 400']) assert.ok(statuses.has(k), `${k} in ${seen}`);
    assert.ok(![...statuses.keys()].some((k) => / (5\d\d|error.*)$/.test(k)), seen);
    assertNoLeak(rounds, { unit: 'requests', perRound: PER_ROUND, heapSlackBytes: HEAP_SLACK, fdSlack: FD_SLACK });
  });
});
