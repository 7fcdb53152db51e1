/**
 * The hop span: a gateway with tracing exports its SERVER span (child of the caller's span) and a CLIENT
 * span per upstream try (the upstream's parent), as OTLP JSON to a real collector on loopback.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseTraceparent } from '@plinth/sdk/balancing';
import { createTracing, type OtlpSpan, type Tracing } from '@plinth/sdk/tracing';
import type { Gateway } from './gateway.js';
import { call, instance, route, spanAttribute, spanCollector, staticGateway, upstream, type SpanCollector, type Upstream } from './testkit.test.helpers.js';

const SERVER = 2;
const CLIENT = 3;
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER_SPAN = '00f067aa0ba902b7';
const anon = { auth: { mode: 'anonymous' } };

describe('gateway hop spans', () => {
  let collector: SpanCollector;
  let tracing: Tracing;
  let gw: Gateway;
  let echo: Upstream;
  let flaky: Upstream;
  let flakyCalls = 0;

  before(async () => {
    collector = await spanCollector();
    tracing = createTracing({
      service: 'edge',
      namespace: 'edge',
      sampleRatio: 1,
      useGlobalProvider: 'never',
      exporter: { url: collector.url, flushMs: 20 },
    });
    echo = await upstream('echo');
    flaky = await upstream('flaky', (_req, res) => {
      flakyCalls++;
      res.writeHead(flakyCalls === 1 ? 503 : 200);
      res.end(flakyCalls === 1 ? 'busy' : 'ok');
    });
    const s = await staticGateway({ accessLog: false, tracing, requestId: true });
    gw = s.gw;
    s.governance.set({ instances: [instance('echo-1', 'echo', echo.address), instance('flaky-1', 'flaky', flaky.address)] });
    s.routes.set([
      route('traced', { ...anon, match: { path: { prefix: '/traced' } }, service: 'echo' }),
      route('flaky', { ...anon, match: { path: { prefix: '/flaky' } }, service: 'flaky', retries: { attempts: 2 } }),
    ]);
  });

  after(async () => {
    await gw.close();
    await tracing.shutdown();
    await echo.close();
    await flaky.close();
    await collector.close();
  });

  async function spansOf(traceId: string, n: number): Promise<OtlpSpan[]> {
    const got = await collector.spansOf(tracing, traceId, n);
    assert.ok(got.every((e) => e.service === 'edge'));
    return got.map((e) => e.span);
  }

  it('makes the server span a child of the incoming span and the upstream a child of the try client span', async () => {
    const r = await call(`${gw.url}/traced/orders?id=1`, { headers: { traceparent: `00-${TRACE}-${CALLER_SPAN}-01` } });
    assert.equal(r.status, 200);
    const got = parseTraceparent(String(echo.seen.at(-1)!.headers.traceparent));
    assert.ok(got, 'the upstream received a traceparent');
    assert.equal(got.traceId, TRACE, 'the same trace');

    const spans = await spansOf(TRACE, 2);
    const server = spans.find((s) => s.kind === SERVER);
    const client = spans.find((s) => s.kind === CLIENT);
    assert.ok(server && client, JSON.stringify(spans));
    assert.equal(server.parentSpanId, CALLER_SPAN, 'the hop continues the caller span');
    assert.equal(server.name, 'GET edge/traced');
    assert.equal(spanAttribute(server, 'http.route'), 'edge/traced');
    assert.equal(spanAttribute(server, 'http.response.status_code'), 200);
    assert.equal(spanAttribute(server, 'plinth.request_id'), r.headers['x-request-id'], 'the trace is found by the request ID a user quotes');
    assert.equal(client.parentSpanId, server.spanId, 'the try is a child of the hop');
    assert.equal(got.spanId, client.spanId, "the upstream's parent is the gateway's client span");
    assert.equal(spanAttribute(client, 'peer.service'), 'echo', 'the topology sees edge -> echo');
    assert.equal(spanAttribute(client, 'server.address'), echo.address);
    assert.equal(spanAttribute(client, 'http.response.status_code'), 200);
  });

  it('makes one client span per try, each the parent of what that try sent', async () => {
    const trace = 'a'.repeat(32);
    flakyCalls = 0;
    const r = await call(`${gw.url}/flaky/x`, { headers: { traceparent: `00-${trace}-${CALLER_SPAN}-01` } });
    assert.equal(r.status, 200);
    assert.equal(flakyCalls, 2);
    const sent = flaky.seen.slice(-2).map((s) => parseTraceparent(String(s.headers.traceparent))!);
    const spans = await spansOf(trace, 3);
    const server = spans.find((s) => s.kind === SERVER)!;
    const tries = spans.filter((s) => s.kind === CLIENT);
    assert.equal(tries.length, 2);
    assert.ok(tries.every((t) => t.parentSpanId === server.spanId));
    // The first try was answered 503, the second 200.
    const byStatus = (status: number) => tries.find((t) => spanAttribute(t, 'http.response.status_code') === status)?.spanId;
    assert.deepEqual(
      sent.map((tp) => tp.spanId),
      [byStatus(503), byStatus(200)],
      'each try carried its own span id',
    );
  });
});
