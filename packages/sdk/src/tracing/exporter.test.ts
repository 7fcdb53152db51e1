import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { SpanKind } from '@opentelemetry/api';
import { Registry } from 'prom-client';
import { parseTraceparent, type TraceContext } from '../balancing/traceparent.js';
import type { Logger } from '../logger.js';
import { ManualClock } from '../ratelimit/clock.js';
import { TRACING_INVALID_OPTION } from './errors.js';
import { OtlpExporter, retryAfterMs, type OtlpExporterOptions } from './exporter.js';
import { createTracing, startClientSpan, startServerSpan } from './hooks.js';
import type { OtlpTracesRequest } from './otlp-json.js';
import { PlinthTracerProvider } from './tracer.js';

interface Received {
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
  body: OtlpTracesRequest;
}

type Answer = { status: number; headers?: Record<string, string>; body?: string };

/** A collector on loopback answering from a script (then 200), recording every request. */
let server: Server;
let url: string;
let received: Received[] = [];
let script: Answer[] = [];
let onRequest: (() => void) | undefined;
let answerFor: ((headers: IncomingHttpHeaders) => Answer | undefined) | undefined;

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const text = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
      received.push({ method: req.method, url: req.url, headers: req.headers, body: JSON.parse(text) as OtlpTracesRequest });
      const a = answerFor?.(req.headers) ?? script.shift() ?? { status: 200, body: '{}' };
      res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
      res.end(a.body ?? '');
      onRequest?.();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.close();
});

beforeEach(() => {
  received = [];
  script = [];
  onRequest = undefined;
  answerFor = undefined;
});

const quiet: Logger = { warn: () => {}, debug: () => {} };

function exporterWith(o: Partial<OtlpExporterOptions> = {}) {
  const sleeps: number[] = [];
  const exporter = new OtlpExporter({
    url,
    token: 'tok',
    logger: quiet,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...o,
  });
  const provider = new PlinthTracerProvider({ resource: { 'service.name': 'orders' }, sink: exporter });
  const tracer = provider.getTracer('t');
  const spans = (n: number) => {
    for (let i = 0; i < n; i++) tracer.startSpan(`s${i}`).end();
  };
  return { exporter, spans, sleeps };
}

const INCOMING = parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') as TraceContext;

describe('OtlpExporter', () => {
  it('posts OTLP/HTTP JSON per the spec mapping, gzipped, with the bearer token', async () => {
    const clock = new ManualClock(1_700_000_000_000.25);
    const tracing = createTracing({
      service: 'orders',
      namespace: 'shop',
      version: '1.4.2',
      region: 'eu-west-1',
      instanceId: 'orders-7f9c',
      clock,
      useGlobalProvider: 'never',
      exporter: { url: `${url}/`, token: () => Promise.resolve('tok-fn'), logger: quiet, compression: 'gzip' },
    });
    const server = startServerSpan(tracing, { method: 'GET', route: '/orders/:id', traceparent: INCOMING, lane: 'canary', stress: true, caller: 'web' });
    const client = startClientSpan(tracing, { callee: 'payments', address: 'payments:80', method: 'POST', parent: server.traceContext });
    clock.advance(3.5);
    client.end(200);
    clock.advance(8.5);
    server.end(500, new Error('boom'));
    await tracing.forceFlush();

    assert.equal(received.length, 1);
    const r = received[0] as Received;
    assert.equal(r.method, 'POST');
    assert.equal(r.url, '/v1/traces');
    assert.equal(r.headers.authorization, 'Bearer tok-fn');
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers['content-encoding'], 'gzip');
    assert.equal(r.body.resourceSpans.length, 1);
    const rs = r.body.resourceSpans[0] as OtlpTracesRequest['resourceSpans'][number];
    const resource = Object.fromEntries(rs.resource.attributes.map((kv) => [kv.key, kv.value]));
    assert.deepEqual(
      {
        name: resource['service.name'],
        ns: resource['service.namespace'],
        version: resource['service.version'],
        region: resource['cloud.region'],
        instance: resource['service.instance.id'],
      },
      {
        name: { stringValue: 'orders' },
        ns: { stringValue: 'shop' },
        version: { stringValue: '1.4.2' },
        region: { stringValue: 'eu-west-1' },
        instance: { stringValue: 'orders-7f9c' },
      },
    );
    assert.equal(rs.scopeSpans.length, 1);
    assert.deepEqual(rs.scopeSpans[0]?.scope, { name: '@plinth/sdk' });
    const [c, s] = rs.scopeSpans[0]?.spans ?? [];
    assert.ok(c && s);
    const serverSpanId = (server.traceContext as TraceContext).spanId;
    assert.deepEqual(
      { ...s, events: undefined },
      {
        traceId: INCOMING.traceId,
        spanId: serverSpanId,
        parentSpanId: INCOMING.spanId,
        flags: 0x301, // sampled, with a remote parent (and the "is remote is known" bit)
        name: 'GET /orders/:id',
        kind: 2,
        startTimeUnixNano: '1700000000000250000',
        endTimeUnixNano: '1700000000012250000',
        attributes: [
          { key: 'http.request.method', value: { stringValue: 'GET' } },
          { key: 'http.route', value: { stringValue: '/orders/:id' } },
          { key: 'plinth.lane', value: { stringValue: 'canary' } },
          { key: 'plinth.stress', value: { stringValue: 'true' } },
          { key: 'plinth.caller', value: { stringValue: 'web' } },
          { key: 'http.response.status_code', value: { intValue: '500' } },
          { key: 'error.type', value: { stringValue: 'Error' } },
        ],
        status: { code: 2, message: 'boom' },
        events: undefined,
      },
    );
    assert.equal(s.events?.length, 1);
    assert.equal(s.events?.[0]?.name, 'exception');
    assert.equal(s.events?.[0]?.timeUnixNano, '1700000000012250000');
    assert.deepEqual(s.events?.[0]?.attributes.slice(0, 2), [
      { key: 'exception.type', value: { stringValue: 'Error' } },
      { key: 'exception.message', value: { stringValue: 'boom' } },
    ]);
    assert.deepEqual(c, {
      traceId: INCOMING.traceId,
      spanId: c.spanId,
      parentSpanId: serverSpanId,
      flags: 0x101,
      name: 'POST payments',
      kind: 3,
      startTimeUnixNano: '1700000000000250000',
      endTimeUnixNano: '1700000000003750000',
      attributes: [
        { key: 'peer.service', value: { stringValue: 'payments' } },
        { key: 'http.request.method', value: { stringValue: 'POST' } },
        { key: 'server.address', value: { stringValue: 'payments:80' } },
        { key: 'http.response.status_code', value: { intValue: '200' } },
      ],
      status: { code: 0 },
    });
    assert.match(c.spanId, /^[0-9a-f]{16}$/);
    assert.equal(tracing.exporter?.exported, 2);
    await tracing.shutdown();
  });

  it('encodes every attribute type, links and, by default, a plain body without gzip', async () => {
    const { exporter } = exporterWith();
    const provider = new PlinthTracerProvider({ resource: { 'service.name': 'x' }, sink: exporter });
    const t = provider.getTracer('lib', '2.0.0');
    const other = t.startSpan('other');
    const span = t.startSpan('s', { kind: SpanKind.CONSUMER, links: [{ context: other.spanContext(), attributes: { why: 'batch' } }] });
    span.setAttributes({ d: 1.5, b: false, arr: ['a', 'b'], big: 2 ** 60 });
    span.end();
    await exporter.forceFlush();
    const r = received[0] as Received;
    assert.equal(r.headers['content-encoding'], undefined);
    const out = r.body.resourceSpans[0]?.scopeSpans[0];
    assert.deepEqual(out?.scope, { name: 'lib', version: '2.0.0' });
    const s = out?.spans[0];
    assert.equal(s?.kind, 5);
    assert.deepEqual(s?.attributes, [
      { key: 'd', value: { doubleValue: 1.5 } },
      { key: 'b', value: { boolValue: false } },
      { key: 'arr', value: { arrayValue: { values: [{ stringValue: 'a' }, { stringValue: 'b' }] } } },
      { key: 'big', value: { doubleValue: 2 ** 60 } },
    ]);
    assert.deepEqual(s?.links, [{ traceId: other.spanContext().traceId, spanId: other.spanContext().spanId, attributes: [{ key: 'why', value: { stringValue: 'batch' } }], flags: 0x101 }]);
    await exporter.shutdown();
  });

  it('writes valid JSON for any text, and repeated attributes identically', async () => {
    const { exporter } = exporterWith({ compression: 'none' });
    const provider = new PlinthTracerProvider({ resource: { 'service.name': 'x"y' }, sink: exporter });
    const t = provider.getTracer('lib');
    const odd = 'quote " backslash \\ newline \n tab \t nul \u0000 é 🚀 lone \ud800';
    for (let i = 0; i < 2; i++) t.startSpan(odd, { attributes: { [odd]: odd, route: '/a', nan: Number.NaN, inf: Number.NEGATIVE_INFINITY } }).end();
    await exporter.forceFlush();
    const r = received[0] as Received;
    assert.deepEqual(r.body.resourceSpans[0]?.resource.attributes, [{ key: 'service.name', value: { stringValue: 'x"y' } }]);
    const spans = r.body.resourceSpans[0]?.scopeSpans[0]?.spans ?? [];
    assert.equal(spans.length, 2);
    for (const s of spans) {
      assert.deepEqual(s.attributes, [
        { key: odd, value: { stringValue: odd } },
        { key: 'route', value: { stringValue: '/a' } },
        { key: 'nan', value: { doubleValue: 'NaN' } },
        { key: 'inf', value: { doubleValue: '-Infinity' } },
      ]);
      assert.equal(s.name, odd);
    }
    await exporter.shutdown();
  });

  it('retries a 503 after the Retry-After it was given', async () => {
    script = [{ status: 503, headers: { 'retry-after': '2' } }, { status: 429, headers: { 'retry-after': '1' } }];
    const { exporter, spans, sleeps } = exporterWith();
    spans(3);
    await exporter.forceFlush();
    assert.equal(received.length, 3);
    assert.deepEqual(sleeps, [2000, 1000]);
    assert.equal(exporter.exported, 3);
    assert.equal(exporter.failed, 0);
    assert.deepEqual(received[0]?.body, received[2]?.body, 'the same batch is sent again');
    await exporter.shutdown();
  });

  it('gives up after maxAttempts, and at once on an answer not worth repeating', async () => {
    script = [{ status: 503 }, { status: 503 }, { status: 503 }];
    const { exporter, spans, sleeps } = exporterWith({ maxAttempts: 3, maxRetryDelayMs: 50 });
    spans(2);
    await exporter.forceFlush();
    assert.equal(received.length, 3);
    assert.equal(sleeps.length, 2);
    assert.ok(sleeps.every((ms) => ms >= 0 && ms <= 50));
    assert.equal(exporter.failed, 2);
    assert.equal(exporter.exported, 0);
    script = [{ status: 400, body: '{"code":"bad"}' }];
    spans(1);
    await exporter.forceFlush();
    assert.equal(received.length, 4);
    assert.equal(exporter.failed, 3);
    await exporter.shutdown();
  });

  it('renews the token once after a 401', async () => {
    let token = 'old';
    const source = {
      authorization: () => Promise.resolve(`Bearer ${token}`),
      renew: () => {
        token = 'new';
        return Promise.resolve(true);
      },
    };
    answerFor = (h) => (h.authorization === 'Bearer new' ? { status: 200 } : { status: 401 });
    const { exporter, spans } = exporterWith({ token: source, maxAttempts: 1 });
    spans(1);
    await exporter.forceFlush();
    assert.deepEqual(
      received.map((r) => r.headers.authorization),
      ['Bearer old', 'Bearer new'],
    );
    assert.equal(exporter.exported, 1);
    await exporter.shutdown();
  });

  it('drops and counts past the queue bound instead of waiting', async () => {
    const { exporter, spans } = exporterWith({ maxQueueSize: 4 });
    spans(10);
    assert.equal(exporter.queued, 4);
    assert.equal(exporter.dropped, 6);
    await exporter.forceFlush();
    assert.equal(exporter.exported, 4);
    assert.equal(received[0]?.body.resourceSpans[0]?.scopeSpans[0]?.spans.length, 4);
    await exporter.shutdown();
  });

  it('sends a full batch without waiting for the flush interval', async () => {
    const { exporter, spans } = exporterWith({ maxBatchSize: 2, flushMs: 3_600_000 });
    const arrived = new Promise<void>((r) => (onRequest = r));
    spans(2);
    await arrived;
    assert.equal(received[0]?.body.resourceSpans[0]?.scopeSpans[0]?.spans.length, 2);
    await exporter.shutdown();
  });

  it('splits the queue into batches of maxBatchSize', async () => {
    const { exporter, spans } = exporterWith({ maxBatchSize: 3, flushMs: 3_600_000 });
    spans(7);
    await exporter.forceFlush();
    assert.deepEqual(
      received.map((r) => r.body.resourceSpans[0]?.scopeSpans[0]?.spans.length),
      [3, 3, 1],
    );
    await exporter.shutdown();
  });

  it('counts spans the collector rejected in a partial success', async () => {
    script = [{ status: 200, body: '{"partialSuccess":{"rejectedSpans":"2","errorMessage":"too old"}}' }];
    const { exporter, spans } = exporterWith();
    spans(5);
    await exporter.forceFlush();
    assert.equal(exporter.exported, 3);
    assert.equal(exporter.failed, 2);
    await exporter.shutdown();
  });

  it('flushes on shutdown and takes nothing after', async () => {
    const { exporter, spans } = exporterWith({ flushMs: 3_600_000 });
    spans(3);
    await exporter.shutdown();
    assert.equal(exporter.exported, 3);
    spans(1);
    assert.equal(exporter.dropped, 1);
    assert.equal(received.length, 1);
  });

  it('shows its counters in a prom-client registry', async () => {
    const registry = new Registry();
    script = [{ status: 400 }];
    const { exporter, spans } = exporterWith({ registry, maxQueueSize: 2 });
    spans(3);
    await exporter.forceFlush();
    spans(1);
    await exporter.forceFlush();
    const text = await registry.metrics();
    assert.match(text, /^plinth_tracing_spans_exported_total 1$/m);
    assert.match(text, /^plinth_tracing_spans_dropped_total 1$/m);
    assert.match(text, /^plinth_tracing_spans_failed_total 2$/m);
    assert.match(text, /^plinth_tracing_queue_spans 0$/m);
    await exporter.shutdown();
  });

  it('rejects bad options with a code', () => {
    assert.throws(() => new OtlpExporter({ url: 'ftp://x' }), { code: TRACING_INVALID_OPTION });
    assert.throws(() => new OtlpExporter({ url, maxQueueSize: 0 }), { code: TRACING_INVALID_OPTION });
    assert.throws(() => createTracing({ service: 's', namespace: 'n', sampleRatio: 2 }), { code: TRACING_INVALID_OPTION });
  });

  it('reads Retry-After as seconds or as a date', () => {
    const now = Date.parse('Wed, 21 Oct 2026 07:28:00 GMT');
    assert.equal(retryAfterMs('3'), 3000);
    assert.equal(retryAfterMs('Wed, 21 Oct 2026 07:28:05 GMT', now), 5000);
    assert.equal(retryAfterMs('Wed, 21 Oct 2026 07:27:00 GMT', now), 0);
    assert.equal(retryAfterMs(undefined), undefined);
    assert.equal(retryAfterMs('soon'), undefined);
  });
});
