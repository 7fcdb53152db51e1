import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { context, SpanKind, SpanStatusCode, trace, type HrTime } from '@opentelemetry/api';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { PlinthError } from '@plinth/core';
import { decodeJsonTraces, decodeProtobufTraces } from './decode.js';
import { encodeExportResponse } from './encode.js';
import { ExportTraceServiceRequest, ExportTraceServiceResponse } from './schema.js';

/** Spans as the OpenTelemetry JS SDK records them; both serializers below are its real OTLP encoders. */
function recordSpans(): ReadableSpan[] {
  const mem = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'orders', 'service.namespace': 'retail', 'service.version': '1.4.2', 'cloud.region': 'eu-west-1', 'process.pid': 4242 }),
    spanProcessors: [new SimpleSpanProcessor(mem)],
  });
  const tracer = provider.getTracer('orders-lib', '0.3.0');
  const server = tracer.startSpan('GET /orders/:id', {
    kind: SpanKind.SERVER,
    attributes: {
      'http.request.method': 'GET',
      'http.route': '/orders/:id',
      'http.response.status_code': 200,
      'plinth.lane': 'canary',
      'plinth.stress': true,
      'plinth.caller': 'gateway',
      tags: ['a', 'b'],
      ratio: 0.25,
      big: 2 ** 40,
    },
  });
  const client = tracer.startSpan(
    'SELECT orders',
    { kind: SpanKind.CLIENT, attributes: { 'db.system': 'postgresql', 'db.namespace': 'shop' } },
    trace.setSpan(context.active(), server),
  );
  client.addEvent('retry', { attempt: 2 });
  client.setStatus({ code: SpanStatusCode.ERROR, message: 'timeout' });
  client.end();
  server.end();
  return mem.getFinishedSpans() as ReadableSpan[];
}

const hrMs = (t: HrTime) => t[0] * 1000 + Math.floor(t[1] / 1e6) + (t[1] % 1e6) / 1e6;
const only400 = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof PlinthError) || e.status !== 400) throw e;
  }
};

void describe('OTLP decoding', () => {
  const spans = recordSpans();
  const pb = Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!);
  const json = Buffer.from(JsonTraceSerializer.serializeRequest(spans)!);

  void it('decodes the OpenTelemetry SDK protobuf encoding into span records', () => {
    const { spans: records, rejected } = decodeProtobufTraces(pb);
    assert.equal(rejected, 0);
    assert.equal(records.length, 2);
    const server = records.find((r) => r.kind === 'server')!;
    const client = records.find((r) => r.kind === 'client')!;
    const sdkServer = spans.find((s) => s.kind === SpanKind.SERVER)!;
    assert.equal(server.traceId, sdkServer.spanContext().traceId);
    assert.equal(server.spanId, sdkServer.spanContext().spanId);
    assert.equal(server.parentSpanId, undefined);
    assert.equal(client.parentSpanId, server.spanId);
    assert.equal(client.traceId, server.traceId);
    assert.equal(server.startMs, hrMs(sdkServer.startTime));
    assert.ok(Math.abs(server.durationMs - hrMs(sdkServer.duration)) < 1e-9);
    assert.deepEqual(
      [server.namespace, server.service, server.version, server.region, server.endpoint, server.httpStatus, server.lane, server.stress, server.caller],
      ['retail', 'orders', '1.4.2', 'eu-west-1', 'GET /orders/:id', 200, 'canary', true, 'gateway'],
    );
    assert.equal(server.attributes.tags, '["a","b"]');
    assert.equal(server.attributes.ratio, 0.25);
    assert.equal(server.attributes.big, 2 ** 40);
    assert.equal(server.attributes['otel.scope.name'], 'orders-lib');
    assert.equal(server.resource['process.pid'], 4242);
    assert.deepEqual([client.peer, client.status, client.statusMessage], ['postgresql/shop', 'error', 'timeout']);
    assert.equal(client.events.length, 1);
    assert.deepEqual(client.events[0]!.attributes, { attempt: 2 });
    // One resource object for every span of a ResourceSpans, not a copy each.
    assert.equal(server.resource, client.resource);
  });

  void it('decodes the SDK JSON encoding to exactly the same records', () => {
    const fromJson = decodeJsonTraces(json);
    const fromPb = decodeProtobufTraces(pb);
    assert.deepEqual(fromJson, fromPb);
  });

  void it('encodes responses the SDK can read back (empty on full success, partialSuccess otherwise)', () => {
    assert.equal(encodeExportResponse('protobuf', 0, undefined).length, 0);
    const partial = ExportTraceServiceResponse.toObject(ExportTraceServiceResponse.decode(encodeExportResponse('protobuf', 3, 'no')), { longs: Number });
    assert.deepEqual(partial, { partialSuccess: { rejectedSpans: 3, errorMessage: 'no' } });
    assert.deepEqual(JSON.parse(encodeExportResponse('json', 0, undefined).toString()), {});
    assert.deepEqual(JSON.parse(encodeExportResponse('json', 2, 'x').toString()), { partialSuccess: { rejectedSpans: '2', errorMessage: 'x' } });
  });

  void it('refuses truncated protobuf with a 400, at every cut point', () => {
    let failures = 0;
    for (let cut = 1; cut < pb.length; cut++) {
      try {
        decodeProtobufTraces(pb.subarray(0, cut));
      } catch (e) {
        assert.ok(e instanceof PlinthError && e.code === 'malformed_body', String(e));
        failures++;
      }
    }
    assert.ok(failures > pb.length / 2, `${failures} of ${pb.length} cuts refused`);
  });

  void it('refuses wrong wire types, invalid wire types and huge lengths with a 400', () => {
    const bad = [
      Buffer.from([0x08, 0x05]), // resource_spans (a message) sent as a varint
      Buffer.from([0x0f]), // wire type 7 does not exist
      Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]), // 4 GiB length in a 7-byte body
      Buffer.from([0x0a, 0x80]), // unterminated varint length
      Buffer.from([0x0c]), // end-group without a start
    ];
    for (const b of bad) assert.throws(() => decodeProtobufTraces(b), (e: unknown) => e instanceof PlinthError && e.code === 'malformed_body', b.toString('hex'));
  });

  void it('rejects spans whose ids have the wrong length or are all zeros, keeping the rest', () => {
    const msg = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(pb)) as { resourceSpans: { scopeSpans: { spans: { traceId: Buffer; spanId: Buffer }[] }[] }[] };
    const list = msg.resourceSpans[0]!.scopeSpans[0]!.spans;
    list[0]!.traceId = Buffer.alloc(15, 1);
    list[1]!.spanId = Buffer.alloc(8);
    const b = decodeProtobufTraces(ExportTraceServiceRequest.encode(msg).finish());
    assert.equal(b.spans.length, 0);
    assert.equal(b.rejected, 2);
    assert.match(b.errorMessage!, /traceId: expected 16 bytes/);
  });

  void it('survives a few thousand random and mutated bodies: 400 or a decode, never anything else', () => {
    for (let i = 0; i < 1500; i++) only400(() => decodeProtobufTraces(randomBytes(1 + (i % 200))));
    for (let i = 0; i < 1500; i++) {
      const m = Buffer.from(pb);
      for (let k = 0; k < 1 + (i % 4); k++) m[(i * 7919 + k * 104729) % m.length] = randomBytes(1)[0]!;
      only400(() => decodeProtobufTraces(m));
      const j = Buffer.from(json);
      j[(i * 7919) % j.length] = randomBytes(1)[0]!;
      only400(() => decodeJsonTraces(j));
    }
  });
});
