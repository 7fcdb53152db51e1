// OTLP/HTTP protobuf load for the server's span ingest: request bodies made once by the OpenTelemetry JS
// SDK's own protobuf serializer, then sent by several closed-loop exporters, each request with fresh trace
// ids written into the prebuilt bytes (so every span is a new row, not an idempotent re-insert).
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Agent, request } from 'undici';
import { cpuSeconds, machineBusySeconds } from '../push/lib.mjs';

export const NAMESPACE = 'bench';
export const SPANS_PER_TRACE = 10;

/**
 * `traces` traces of a checkout flow across four services (10 spans each: server, client, database,
 * producer and internal spans; 14 attributes on server spans; every 20th trace fails), as one OTLP
 * protobuf request with one ResourceSpans per service.
 */
function buildTraces(traces, t0) {
  const finished = new InMemorySpanExporter();
  const tracerOf = (service, version) =>
    new BasicTracerProvider({
      resource: resourceFromAttributes({
        'service.name': service,
        'service.namespace': NAMESPACE,
        'service.version': version,
        'service.instance.id': `${service}-7f9c4`,
        'cloud.region': 'eu-west-1',
        'host.name': `${service}-7f9c4`,
        'telemetry.sdk.name': 'opentelemetry',
        'telemetry.sdk.language': 'nodejs',
      }),
      spanProcessors: [new SimpleSpanProcessor(finished)],
    }).getTracer('bench', '1.0.0');
  const gateway = tracerOf('gateway', '2.3.1');
  const orders = tracerOf('orders', '1.4.2');
  const payments = tracerOf('payments', '3.0.0');
  const worker = tracerOf('receipts', '1.0.7');
  const server = (method, route, status, extra = {}) => ({
    'http.request.method': method,
    'http.route': route,
    'http.response.status_code': status,
    'url.path': route.replace(':id', '1042'),
    'url.scheme': 'http',
    'server.address': 'svc.bench',
    'server.port': 8080,
    'client.address': '10.1.2.3',
    'network.protocol.version': '1.1',
    'user_agent.original': 'undici/7',
    'plinth.caller': 'gateway',
    ...extra,
  });
  const traceIds = [];
  for (let i = 0; i < traces; i++) {
    const fail = i % 20 === 19;
    const base = t0 + i * 3;
    const spans = [];
    const at = (tracer, name, kind, from, to, parent, attributes) => {
      const s = tracer.startSpan(name, { kind, startTime: base + from, attributes }, parent ? trace.setSpan(ROOT_CONTEXT, parent) : ROOT_CONTEXT);
      spans.push([s, base + to]);
      return s;
    };
    const root = at(gateway, 'GET /checkout/:id', SpanKind.SERVER, 0, 48.2, undefined, server('GET', '/checkout/:id', fail ? 502 : 200, { 'plinth.lane': i % 4 === 0 ? 'canary' : 'stable' }));
    at(gateway, 'authorize', SpanKind.INTERNAL, 0.3, 1.1, root, { 'auth.method': 'jwt' });
    const toOrders = at(gateway, 'POST orders', SpanKind.CLIENT, 1.4, 47.1, root, { 'peer.service': 'orders', 'http.request.method': 'POST', 'server.address': 'orders.bench', 'http.response.status_code': fail ? 500 : 201 });
    const ord = at(orders, 'POST /orders', SpanKind.SERVER, 2.0, 46.5, toOrders, server('POST', '/orders', fail ? 500 : 201));
    at(orders, 'SELECT shop.orders', SpanKind.CLIENT, 2.6, 6.9, ord, { 'db.system': 'postgresql', 'db.namespace': 'shop', 'db.operation.name': 'SELECT', 'db.query.text': 'SELECT * FROM orders WHERE id = $1', 'server.address': 'pg' });
    const toPay = at(orders, 'POST payments', SpanKind.CLIENT, 7.4, 40.3, ord, { 'peer.service': 'payments', 'http.request.method': 'POST', 'server.address': 'payments.bench', 'http.response.status_code': fail ? 503 : 200 });
    const pay = at(payments, 'POST /charge', SpanKind.SERVER, 8.0, 39.6, toPay, server('POST', '/charge', fail ? 503 : 200));
    const psp = at(payments, 'POST psp', SpanKind.CLIENT, 8.6, 38.8, pay, { 'server.address': 'api.psp.example', 'http.request.method': 'POST', 'http.response.status_code': fail ? 503 : 200 });
    at(orders, 'publish receipts', SpanKind.PRODUCER, 41.0, 42.2, ord, { 'messaging.system': 'nats', 'messaging.destination.name': 'receipts' });
    at(worker, 'process receipt', SpanKind.CONSUMER, 43.0, 45.9, ord, { 'messaging.system': 'nats', 'messaging.destination.name': 'receipts' });
    if (fail) {
      for (const s of [psp, pay, ord]) s.setStatus({ code: SpanStatusCode.ERROR, message: 'upstream unavailable' });
      psp.addEvent('exception', { 'exception.type': 'TimeoutError', 'exception.message': 'psp did not answer in 30 s' });
    }
    for (const [s, end] of spans.reverse()) s.end(end);
    traceIds.push(root.spanContext().traceId);
  }
  const spans = finished.getFinishedSpans();
  return { body: Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)), traceIds, spans: spans.length };
}

/**
 * One request body of `spans` spans and where in it each trace id sits: writing a fresh 8-byte prefix over
 * the first half of every id makes the next request's spans new without serializing again.
 */
export function buildBatch(spans, t0 = Date.now()) {
  if (spans % SPANS_PER_TRACE !== 0) throw new Error(`batch size must be a multiple of ${SPANS_PER_TRACE}`);
  const b = buildTraces(spans / SPANS_PER_TRACE, t0);
  const offsets = [];
  for (const hex of b.traceIds) {
    const id = Buffer.from(hex, 'hex');
    let found = 0;
    for (let i = b.body.indexOf(id); i >= 0; i = b.body.indexOf(id, i + 16)) {
      offsets.push(i);
      found++;
    }
    if (found !== SPANS_PER_TRACE) throw new Error(`trace id ${hex} found ${found} times in the protobuf, expected ${SPANS_PER_TRACE}`);
  }
  return { body: b.body, offsets, spans: b.spans };
}

/** Stamps `seq` (plus a per-run prefix) over the first 8 bytes of every trace id in `body`. */
function stamp(batch, prefix, seq) {
  const v = (prefix << 32n) | BigInt(seq);
  for (const o of batch.offsets) batch.body.writeBigUInt64BE(v, o);
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/**
 * `exporters` closed-loop senders, each cycling through its own copy of the batches, for `warmupMs` and then
 * `durationMs`. Counts spans acknowledged (200, minus any partialSuccess rejections) in the measured part,
 * and the server's CPU meanwhile.
 */
export async function ingestLoad({ url, token, pid }, { exporters, sizes, warmupMs, durationMs }) {
  const agent = new Agent({ connections: exporters, pipelining: 1, keepAliveTimeout: 30_000 });
  const endpoint = `${url}/v1/traces`;
  const headers = { 'content-type': 'application/x-protobuf', authorization: `Bearer ${token}` };
  const prefix = BigInt(randomBytes(4).readUInt32BE(0));
  let seq = 0;
  const t0 = Date.now();
  const own = Array.from({ length: exporters }, () => sizes.map((n) => buildBatch(n, t0)));
  const bytesPerSpan = own[0].reduce((a, b) => a + b.body.length, 0) / own[0].reduce((a, b) => a + b.spans, 0);

  const counters = () => ({ requests: 0, acked: 0, rejected: 0, refused429: 0, errors: {}, latencies: [] });
  let phase = counters();
  let stopAt = performance.now() + warmupMs + durationMs;
  const worker = async (w) => {
    const batches = own[w];
    for (let i = w; performance.now() < stopAt; i++) {
      const batch = batches[i % batches.length];
      stamp(batch, prefix, ++seq);
      const c = phase;
      const started = performance.now();
      try {
        const res = await request(endpoint, { method: 'POST', headers, body: batch.body, dispatcher: agent });
        const buf = Buffer.from(await res.body.arrayBuffer());
        c.requests++;
        if (res.statusCode === 200) {
          const rejected = Number(ProtobufTraceSerializer.deserializeResponse(buf)?.partialSuccess?.rejectedSpans ?? 0);
          c.acked += batch.spans - rejected;
          c.rejected += rejected;
          c.latencies.push(performance.now() - started);
        } else if (res.statusCode === 429 || res.statusCode === 503) {
          c.refused429++;
          await sleep(50); // what an OTLP exporter does on 429: back off (briefly here), then retry
        } else {
          c.errors[res.statusCode] = (c.errors[res.statusCode] ?? 0) + 1;
        }
      } catch (e) {
        const code = e?.code ?? e?.name ?? 'unknown';
        c.errors[code] = (c.errors[code] ?? 0) + 1;
        await sleep(50);
      }
    }
  };
  const running = Promise.all(Array.from({ length: exporters }, (_, w) => worker(w)));
  await sleep(warmupMs);
  // Requests in flight now count for the measured phase when they complete: the loop never stops, so the
  // phase boundary costs nothing and each phase sees its own completions.
  phase = counters();
  const m0 = { at: performance.now(), server: cpuSeconds(pid), self: process.cpuUsage(), busy: machineBusySeconds() };
  stopAt = m0.at + durationMs;
  await running;
  const wallS = (performance.now() - m0.at) / 1000;
  const serverS = cpuSeconds(pid) - m0.server;
  const self = process.cpuUsage(m0.self);
  const selfS = (self.user + self.system) / 1e6;
  const busyS = machineBusySeconds() - m0.busy;
  await agent.close();
  const lat = Float64Array.from(phase.latencies).sort();
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.ceil((p / 100) * lat.length) - 1)] : NaN);
  return {
    wallS,
    spansPerS: phase.acked / wallS,
    acked: phase.acked,
    requests: phase.requests,
    rejected: phase.rejected,
    refused: phase.refused429,
    errors: phase.errors,
    serverCpuPct: (100 * serverS) / wallS,
    loadgenCpuPct: (100 * selfS) / wallS,
    otherCpuPct: (100 * Math.max(0, busyS - serverS - selfS)) / wallS,
    latencyMs: { p50: pct(50), p99: pct(99) },
    bytesPerSpan,
  };
}
