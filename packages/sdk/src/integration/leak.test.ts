/**
 * What a request leaves behind in a service built on the SDK: nothing. A `web` service with the inbound
 * middleware (a rate limit and a concurrency limit that refuse some requests), tracing every request, calls
 * three services through the outbound client (one answers, one fails or resets behind a breaker, one stalls
 * past the per-try timeout; retries everywhere), while clients send odd context headers and leave mid-call.
 * After each round nothing is in flight, and from the end of the warm-up to the end the heap after a full
 * collection and the open file descriptors stay where they were. `PLINTH_LEAK_ROUNDS` (default 5) soaks longer.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { afterRound, assertNoLeak, LEAK_ROUNDS, type AfterRound } from '@plinth/core/testing';
import { Agent, request } from 'undici';
import { createClient, isCallError, type ServiceClient } from '../client/index.js';
import { ft, governance, Upstream } from '../client/testkit.test.helpers.js';
import { plinth } from '../middleware/index.js';
import { createTracing, type Tracing } from '../tracing/index.js';

const PER_ROUND = 3000;
/**
 * 9,000 requests at 120 bytes each. Runs stay within ±0.2 MiB; keeping the middleware's per-request state of
 * one request in ten grows it by 0.6 MiB a round.
 */
const HEAP_SLACK = 1024 * 1024;
/** Sockets whose closing is still on its way. */
const FD_SLACK = 2;


const listen = async (s: Server): Promise<number> => {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as AddressInfo).port;
};

describe('what a request leaves behind in an SDK service', () => {
  let healthy: Upstream;
  let flaky: Upstream;
  let sink: Server;
  let tracing: Tracing;
  let client: ServiceClient | undefined;
  let newClient: () => void = () => {};
  let web: Server;
  let webPort = 0;
  let inFlight = 0;
  let close: () => void = () => {};

  before(async () => {
    healthy = await Upstream.start((_q, s) => s.end('{"ok":true}'));
    flaky = await Upstream.start((q, s) => {
      if (q.url === '/fail') return void s.writeHead(503).end('busy');
      if (q.url === '/slow') return void setTimeout(() => s.end('late'), 150);
      if (q.url === '/reset') return void q.socket.destroy();
      s.end('{"ok":true}');
    });
    sink = createServer((q, s) => {
      q.resume();
      q.on('end', () => s.end('{}'));
    });
    const sinkPort = await listen(sink);
    tracing = createTracing({ service: 'web', namespace: 'app', sampleRatio: 1, useGlobalProvider: 'never', exporter: { url: `http://127.0.0.1:${sinkPort}`, flushMs: 20 } });
    const gov = governance({
      instances: [
        { metadata: { name: 'orders-a' }, spec: { service: 'orders', version: '1.0.0', address: healthy.address } },
        { metadata: { name: 'flaky-a' }, spec: { service: 'flaky', version: '1.0.0', address: flaky.address } },
        { metadata: { name: 'slow-a' }, spec: { service: 'slow', version: '1.0.0', address: flaky.address } },
      ],
      faultTolerance: [
        ft('orders', {
          rules: [
            { name: 'calls', targets: [{ service: 'orders' }, { service: 'slow' }], strategies: [{ type: 'retry', maxAttempts: 2, backoffBaseMs: 1, backoffCapMs: 2 }, { type: 'timeout', timeoutMs: 60 }] },
            {
              name: 'guarded',
              targets: [{ service: 'flaky' }],
              strategies: [{ type: 'retry', maxAttempts: 2, backoffBaseMs: 1, backoffCapMs: 2 }, { type: 'timeout', timeoutMs: 60 }, { type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 20, recoveryTimeoutMs: 100 }],
            },
          ],
        }),
        ft('web', {
          rules: [
            { name: 'limited', targets: [{ service: 'web', endpoints: ['/limited'] }], strategies: [{ type: 'rateLimit', threshold: 100 }] },
            { name: 'busy', targets: [{ service: 'web', endpoints: ['/busy'] }], strategies: [{ type: 'concurrencyLimit', maxConcurrency: 1, maxQueue: 0 }] },
          ],
        }),
      ],
    });
    newClient = () => (client = createClient({ self: 'web', governance: gov, tracing }));
    const handler = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
      inFlight++;
      try {
        // /busy holds its one slot for a slow call, so that the concurrency limit refuses the others.
        const path = req.url === '/busy' ? '/slow' : req.url === '/limited' ? '/ok' : (req.url ?? '/');
        let status: number;
        try {
          status = (await client!.request(path === '/ok' ? 'orders' : path === '/slow' ? 'slow' : 'flaky', { path })).status;
        } catch (e) {
          status = isCallError(e) ? e.status : 500;
        }
        res.writeHead(status === 200 ? 200 : 502).end(String(status));
      } finally {
        inFlight--;
      }
    };
    const listener = plinth(handler, { service: 'web', governance: gov, tracing, route: (q) => q.url });
    close = () => listener.close();
    web = createServer(listener);
    webPort = await listen(web);
  });

  after(async () => {
    close();
    await client?.close().catch(() => {});
    web?.closeAllConnections();
    web?.close();
    await tracing?.shutdown();
    await healthy?.close();
    await flaky?.close();
    sink?.close();
  });

  /** Request `i` of a round: each kind in turn, the same mix every round. */
  async function send(agent: Agent, i: number): Promise<string> {
    const kind = i % 10;
    const paths = ['/ok', '/ok', '/fail', '/slow', '/reset', '/limited', '/busy', '/slow', '/ok', '/ok'];
    const headers: Record<string, string> = {};
    // Odd context from outside: none of it may stay with the service.
    if (kind === 8) Object.assign(headers, { traceparent: `00-${'f'.repeat(32)}-zz-01`, baggage: `k${i}=${'v'.repeat(200)},=,;;`, 'plinth-timeout-ms': 'soon' });
    if (kind === 9) Object.assign(headers, { traceparent: `00-${String(i).padStart(32, '1')}-${'2'.repeat(16)}-01`, 'plinth-timeout-ms': '40' });
    const signal = kind === 7 ? AbortSignal.timeout(20) : undefined;
    try {
      const r = await request(`http://127.0.0.1:${webPort}${paths[kind]!}`, { dispatcher: agent, headers, ...(signal ? { signal } : {}) });
      if (r.statusCode !== 429) {
        await r.body.dump();
        return String(r.statusCode);
      }
      return `429 ${String(((await r.body.json()) as { code?: unknown }).code)}`;
    } catch (e) {
      return kind === 7 ? 'left' : `error ${(e as Error).message}`;
    }
  }

  it('leaves no memory, socket or request behind, round after round', async () => {
    const rounds: AfterRound[] = [];
    const statuses = new Map<string, number>();
    for (let round = 0; round < LEAK_ROUNDS; round++) {
      // Each round's connections, the clients' to web and web's to its upstreams, are closed at its end: what is
      // still open then was leaked.
      const agent = new Agent({ connections: 16 });
      newClient();
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < PER_ROUND) {
            const s = await send(agent, next++);
            statuses.set(s, (statuses.get(s) ?? 0) + 1);
          }
        }),
      );
      await agent.close();
      for (let t = 0; t < 400 && inFlight > 0; t++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(inFlight, 0, 'every handler finished');
      await client!.close();
      await tracing.forceFlush();
      // What the test's upstreams keep is not the service's.
      healthy.received.length = 0;
      flaky.received.length = 0;
      rounds.push(await afterRound());
    }
    const seen = JSON.stringify([...statuses].sort());
    // The mix did what it is for: answered, failed upstream, refused by the limits, left by the client.
    for (const s of ['200', '502', '429 rate_limited', '429 concurrency_limited', 'left']) assert.ok(statuses.has(s), `${s} in ${seen}`);
    assert.ok(![...statuses.keys()].some((s) => s === '500' || s.startsWith('error')), seen);
    assertNoLeak(rounds, { unit: 'requests', perRound: PER_ROUND, heapSlackBytes: HEAP_SLACK, fdSlack: FD_SLACK });
  });
});
