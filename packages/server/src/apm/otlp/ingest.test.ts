import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { context, SpanKind, trace } from '@opentelemetry/api';
import { OTLPTraceExporter as HttpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtobufExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import type { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { SpanRecord } from '../types.js';
import { ExportTraceServiceResponse } from './schema.js';
import { jsonRequest, jsonSpan, MemorySink, startOtlpTestServer, type OtlpTestServer } from './test-helpers.js';

/** A service instrumented with the OpenTelemetry JS SDK, exporting through `exporter`. */
async function runService(exporter: SpanExporter, namespace = 'retail'): Promise<void> {
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'orders', 'service.namespace': namespace }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('orders');
  const server = tracer.startSpan('GET /orders/:id', { kind: SpanKind.SERVER, attributes: { 'http.request.method': 'GET', 'http.route': '/orders/:id', 'http.response.status_code': 200 } });
  tracer.startSpan('SELECT', { kind: SpanKind.CLIENT, attributes: { 'db.system': 'postgresql' } }, trace.setSpan(context.active(), server)).end();
  server.end();
  await provider.forceFlush();
  await provider.shutdown();
}

function sdkSpans(namespace: string, count: number): ReadableSpan[] {
  const mem = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'svc', 'service.namespace': namespace }), spanProcessors: [new SimpleSpanProcessor(mem)] });
  for (let i = 0; i < count; i++) provider.getTracer('t').startSpan(`op${i}`).end();
  return mem.getFinishedSpans() as ReadableSpan[];
}

/** Two resources in one protobuf request: what a collector batching several services sends. */
function protobufBatch(...groups: [namespace: string, count: number][]): Buffer {
  return Buffer.concat(groups.map(([ns, n]) => Buffer.from(ProtobufTraceSerializer.serializeRequest(sdkSpans(ns, n))!)));
}

void describe('OTLP/HTTP ingest', () => {
  let s: OtlpTestServer;
  let sink: MemorySink;
  /** token '' sends none. */
  const post = (body: Buffer | string, headers: Record<string, string> = {}, token = s.token) =>
    fetch(`${s.url}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      body,
    });
  const postJson = (doc: unknown, headers: Record<string, string> = {}) => post(JSON.stringify(doc), headers);

  before(async () => {
    sink = new MemorySink();
    s = await startOtlpTestServer(sink, { maxBodyBytes: 256 * 1024, maxDecodedBytes: 1024 * 1024 });
  });
  after(async () => {
    await s?.close();
  });

  void it('takes spans from the OpenTelemetry SDK protobuf exporter, gzip and plain', async () => {
    for (const compression of ['gzip', 'none']) {
      sink.spans.length = 0;
      const exporter = new ProtobufExporter({ url: `${s.url}/v1/traces`, headers: { authorization: `Bearer ${s.token}` }, compression: compression as CompressionAlgorithm });
      await runService(exporter);
      assert.equal(sink.spans.length, 2, compression);
      const server = sink.spans.find((r) => r.kind === 'server')!;
      const client = sink.spans.find((r) => r.kind === 'client')!;
      assert.deepEqual([server.namespace, server.service, server.endpoint, server.httpStatus], ['retail', 'orders', 'GET /orders/:id', 200]);
      assert.deepEqual([client.peer, client.parentSpanId, client.traceId], ['postgresql', server.spanId, server.traceId]);
    }
  });

  void it('takes spans from the OpenTelemetry SDK JSON exporter', async () => {
    sink.spans.length = 0;
    const exporter = new HttpJsonExporter({ url: `${s.url}/v1/traces`, headers: { authorization: `Bearer ${s.token}` }, compression: 'gzip' as CompressionAlgorithm });
    await runService(exporter, 'shop');
    assert.equal(sink.spans.length, 2);
    assert.ok(sink.spans.every((r) => r.namespace === 'shop'));
  });

  void it('answers in the request encoding: an empty message or {} on full success', async () => {
    const pbRes = await post(protobufBatch(['retail', 2]), { 'content-type': 'application/x-protobuf' });
    assert.equal(pbRes.status, 200);
    assert.equal(pbRes.headers.get('content-type'), 'application/x-protobuf');
    assert.equal((await pbRes.arrayBuffer()).byteLength, 0);
    const jsRes = await postJson(jsonRequest({ 'service.namespace': 'retail' }, [jsonSpan()]));
    assert.equal(jsRes.status, 200);
    assert.equal(jsRes.headers.get('content-type'), 'application/json');
    assert.deepEqual(await jsRes.json(), {});
  });

  void it('requires a bearer token', async () => {
    const res = await post(JSON.stringify(jsonRequest({}, [jsonSpan()])), {}, '');
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { code: string }).code, 'unauthenticated');
  });

  void it('refuses the spans of namespaces the caller may not write in a partialSuccess, keeping the rest', async () => {
    sink.spans.length = 0;
    const res = await post(protobufBatch(['retail', 3], ['payments', 2]), { 'content-type': 'application/x-protobuf' });
    assert.equal(res.status, 200);
    const body = ExportTraceServiceResponse.toObject(ExportTraceServiceResponse.decode(new Uint8Array(await res.arrayBuffer())), { longs: Number }) as {
      partialSuccess: { rejectedSpans: number; errorMessage: string };
    };
    assert.equal(body.partialSuccess.rejectedSpans, 2);
    assert.match(body.partialSuccess.errorMessage, /may not create Span in namespace payments/);
    assert.equal(sink.spans.length, 3);
    assert.ok(sink.spans.every((r) => r.namespace === 'retail'));

    const json = await postJson({
      resourceSpans: [...(jsonRequest({ 'service.namespace': 'shop' }, [jsonSpan()]).resourceSpans as unknown[]), ...(jsonRequest({ 'service.namespace': 'payments' }, [jsonSpan()]).resourceSpans as unknown[])],
    });
    const partial = (await json.json()) as { partialSuccess: { rejectedSpans: string } };
    assert.equal(partial.partialSuccess.rejectedSpans, '1');
  });

  void it('answers 403 when no span may be written, and records the denial in the audit log', async () => {
    const before = (await s.store.auditHead()).seq;
    const res = await postJson(jsonRequest({ 'service.namespace': 'payments' }, [jsonSpan()]));
    assert.equal(res.status, 403);
    assert.equal(((await res.json()) as { code: string }).code, 'forbidden');
    const viewer = await post(JSON.stringify(jsonRequest({ 'service.namespace': 'retail' }, [jsonSpan()])), {}, s.viewerToken);
    assert.equal(viewer.status, 403);
    const entries = await s.store.readAudit(before, 100);
    assert.deepEqual(
      entries.map((e) => [e.actor, e.action, e.kind, e.namespace, e.outcome]),
      [
        ['ServiceAccount:retail/collector', 'create', 'Span', 'payments', 'denied'],
        ['ServiceAccount:retail/viewer', 'create', 'Span', 'retail', 'denied'],
      ],
    );
  });

  void it('counts invalid spans in partialSuccess and answers 400 when none is valid', async () => {
    const mixed = await postJson(jsonRequest({ 'service.namespace': 'retail' }, [jsonSpan(), jsonSpan({ spanId: 'not-hex-at-all!!' })]));
    assert.equal(mixed.status, 200);
    const body = (await mixed.json()) as { partialSuccess: { rejectedSpans: string; errorMessage: string } };
    assert.equal(body.partialSuccess.rejectedSpans, '1');
    assert.match(body.partialSuccess.errorMessage, /spans\[1\]\.spanId/);
    const none = await postJson(jsonRequest({ 'service.namespace': 'retail' }, [jsonSpan({ traceId: '00000000000000000000000000000000' })]));
    assert.equal(none.status, 400);
  });

  void it('refuses bad bodies with 4xx problem documents, never a 500', async () => {
    const cases: [Buffer | string, Record<string, string>, number, string][] = [
      ['{"resourceSpans": [', {}, 400, 'malformed_body'],
      [JSON.stringify(jsonRequest({}, [jsonSpan({ name: 5 })])), {}, 400, 'malformed_body'],
      [JSON.stringify(jsonRequest({}, [jsonSpan({ traceId: 'xyz' })])), {}, 400, 'bad_request'],
      [Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), { 'content-type': 'application/x-protobuf' }, 400, 'malformed_body'],
      [Buffer.from('not gzip at all'), { 'content-encoding': 'gzip' }, 400, 'malformed_body'],
      [gzipSync('{"resourceSpans":[]}').subarray(0, 10), { 'content-encoding': 'gzip' }, 400, 'malformed_body'],
      ['{}', { 'content-type': 'text/plain' }, 415, 'unsupported_media_type'],
      ['{}', { 'content-encoding': 'br' }, 415, 'unsupported_media_type'],
      [Buffer.alloc(300 * 1024, 0x20), {}, 413, 'payload_too_large'],
    ];
    for (const [body, headers, status, code] of cases) {
      const res = await post(body, headers);
      assert.equal(res.status, status, `${JSON.stringify(headers)} ${String(body).slice(0, 40)}`);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.equal(((await res.json()) as { code: string }).code, code);
    }
  });

  void it('stops a gzip bomb at the decompressed limit with a 413', async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, 0x20));
    assert.ok(bomb.length < 256 * 1024);
    const res = await post(bomb, { 'content-encoding': 'gzip' });
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { code: string }).code, 'payload_too_large');
  });

  void it('answers random bodies with 200 or 4xx and keeps serving', async () => {
    for (let i = 0; i < 300; i++) {
      const type = i % 2 === 0 ? 'application/x-protobuf' : 'application/json';
      const res = await post(randomBytes(1 + (i % 300)), { 'content-type': type });
      assert.ok(res.status === 200 || (res.status >= 400 && res.status < 500), `status ${res.status}`);
      await res.arrayBuffer();
    }
    const ok = await postJson(jsonRequest({ 'service.namespace': 'retail' }, [jsonSpan()]));
    assert.equal(ok.status, 200);
  });

  void it('answers 503 with Retry-After when the store fails, so clients retry', async () => {
    sink.fail = new Error('disk full');
    try {
      const res = await postJson(jsonRequest({ 'service.namespace': 'retail' }, [jsonSpan()]));
      assert.equal(res.status, 503);
      assert.match(res.headers.get('retry-after') ?? '', /^\d+$/);
      assert.equal(((await res.json()) as { code: string }).code, 'span_store_unavailable');
    } finally {
      sink.fail = undefined;
    }
  });
});

void describe('OTLP/HTTP ingest backpressure', () => {
  let s: OtlpTestServer;
  let sink: MemorySink;
  before(async () => {
    sink = new MemorySink();
    s = await startOtlpTestServer(sink, { queue: { maxSpans: 10 } });
  });
  after(async () => {
    sink.release();
    await s?.close();
  });

  void it('answers 429 with Retry-After while the queue is full, and takes spans again once it drains', async () => {
    const send = (n: number) =>
      fetch(`${s.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
        body: JSON.stringify(jsonRequest({ 'service.namespace': 'retail' }, Array.from({ length: n }, (_, i) => jsonSpan({ spanId: (i + 1).toString(16).padStart(16, '0') })))),
      });
    sink.hold();
    const first = send(10);
    while (s.otlp.queue.size < 10) await new Promise((r) => setImmediate(r));
    const refused = await send(1);
    assert.equal(refused.status, 429);
    assert.match(refused.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
    assert.equal(((await refused.json()) as { code: string }).code, 'ingest_queue_full');
    assert.equal(s.otlp.queue.stats.refused, 0, 'refused before decoding: nothing was offered');
    sink.release();
    assert.equal((await first).status, 200);
    assert.equal((await send(3)).status, 200);
    assert.equal(sink.spans.length, 13);
  });

  void it('refuses a request that does not fit next to what is pending', async () => {
    sink.hold();
    const send = (n: number) =>
      fetch(`${s.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
        body: JSON.stringify(jsonRequest({ 'service.namespace': 'retail' }, Array.from({ length: n }, () => jsonSpan()))),
      });
    const first = send(6);
    while (s.otlp.queue.size < 6) await new Promise((r) => setImmediate(r));
    const refused = await send(5);
    assert.equal(refused.status, 429);
    assert.equal(s.otlp.queue.stats.refused, 5);
    sink.release();
    assert.equal((await first).status, 200);
  });
});

void describe('OTLP/HTTP ingest with forwarding', () => {
  let s: OtlpTestServer;
  const sink = new MemorySink();
  const forwarded: SpanRecord[] = [];
  before(async () => {
    s = await startOtlpTestServer(sink, { forward: { enqueue: (spans) => forwarded.push(...spans) } });
  });
  after(async () => {
    await s?.close();
  });

  void it('forwards what was stored: the permitted namespaces only, nothing when the store failed', async () => {
    const post = () =>
      fetch(`${s.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-protobuf', authorization: `Bearer ${s.token}` },
        body: protobufBatch(['retail', 2], ['payments', 3]),
      });
    assert.equal((await post()).status, 200);
    assert.equal(forwarded.length, 2);
    assert.deepEqual(forwarded, sink.spans);
    sink.fail = new Error('down');
    assert.equal((await post()).status, 503);
    assert.equal(forwarded.length, 2);
  });
});
