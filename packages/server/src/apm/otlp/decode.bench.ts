// Decode throughput for a 500-span protobuf batch as the OpenTelemetry JS SDK encodes it.
// Run: npx tsc -b packages/server && node packages/server/dist/apm/otlp/decode.bench.js
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { decodeJsonTraces, decodeProtobufTraces } from './decode.js';

const mem = new InMemorySpanExporter();
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'orders', 'service.namespace': 'retail', 'service.version': '1.4.2', 'cloud.region': 'eu-west-1', 'host.name': 'orders-7f9c', 'process.pid': 4242 }),
  spanProcessors: [new SimpleSpanProcessor(mem)],
});
const tracer = provider.getTracer('@plinth/sdk', '0.1.0');
for (let i = 0; i < 250; i++) {
  const server = tracer.startSpan('GET /orders/:id', {
    kind: SpanKind.SERVER,
    attributes: {
      'http.request.method': 'GET',
      'http.route': '/orders/:id',
      'http.response.status_code': 200,
      'url.path': `/orders/${i}`,
      'url.scheme': 'http',
      'server.address': 'orders.retail',
      'server.port': 8080,
      'client.address': '10.0.0.7',
      'user_agent.original': 'undici',
      'plinth.lane': 'canary',
      'plinth.caller': 'gateway',
    },
  });
  const client = tracer.startSpan(
    'SELECT orders',
    { kind: SpanKind.CLIENT, attributes: { 'db.system': 'postgresql', 'db.namespace': 'shop', 'db.query.text': 'SELECT * FROM orders WHERE id = $1', 'server.address': 'pg', 'server.port': 5432 } },
    trace.setSpan(context.active(), server),
  );
  if (i % 10 === 0) client.setStatus({ code: SpanStatusCode.ERROR, message: 'timeout' });
  client.addEvent('query.sent', { bytes: 120 });
  client.end();
  server.end();
}
const spans = mem.getFinishedSpans();
const pb = Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!);
const json = Buffer.from(JsonTraceSerializer.serializeRequest(spans)!);

function bench(label: string, fn: () => { spans: unknown[] }): void {
  for (let i = 0; i < 200; i++) fn();
  const rounds = 1000;
  const t0 = process.hrtime.bigint();
  let n = 0;
  for (let i = 0; i < rounds; i++) n += fn().spans.length;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`${label}: ${Math.round(n / s).toLocaleString('en')} spans/s (${((s / rounds) * 1000).toFixed(2)} ms per ${spans.length}-span batch)`);
}
console.log(`batch: ${spans.length} spans, protobuf ${pb.length} bytes, JSON ${json.length} bytes`);
bench('protobuf', () => decodeProtobufTraces(pb));
bench('json', () => decodeJsonTraces(json));
