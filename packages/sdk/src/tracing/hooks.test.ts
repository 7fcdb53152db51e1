import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { formatTraceparent, parseTraceparent, type TraceContext } from '../balancing/traceparent.js';
import { ManualClock } from '../ratelimit/clock.js';
import { hasContextManager } from './context-manager.js';
import { createTracing, startClientSpan, startServerSpan, type TracingOptions } from './hooks.js';
import { PlinthSpan } from './span.js';
import type { SpanSink } from './tracer.js';

// The hooks register the AsyncLocalStorage context manager globally; leave the process as found.
after(() => {
  context.disable();
});

const SAMPLED = parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') as TraceContext;
const UNSAMPLED = parseTraceparent('00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-00') as TraceContext;

/** A sink that keeps what would be exported. */
class Collected implements SpanSink {
  readonly spans: PlinthSpan[] = [];
  enqueue(span: PlinthSpan): void {
    this.spans.push(span);
  }
}

function setup(o: Partial<TracingOptions> = {}) {
  const clock = new ClockAt();
  const tracing = createTracing({ service: 'orders', namespace: 'shop', clock, useGlobalProvider: 'never', ...o });
  const sink = new Collected();
  tracing.provider.sink = sink;
  return { tracing, sink, clock };
}

class ClockAt extends ManualClock {
  constructor() {
    super(1_700_000_000_000.25);
  }
}

const attrs = (s: PlinthSpan) => Object.fromEntries(Array.from({ length: s.attributes.length / 2 }, (_, i) => [s.attributes[2 * i], s.attributes[2 * i + 1]]));

describe('server and client spans', () => {
  it('continues the incoming trace and carries Plinth attributes', () => {
    const { tracing, sink, clock } = setup();
    const h = startServerSpan(tracing, { method: 'GET', route: '/orders/:id', traceparent: SAMPLED, lane: 'canary', stress: true, caller: 'web' });
    const span = h.span as PlinthSpan;
    assert.ok(span instanceof PlinthSpan);
    assert.equal(span.traceId, SAMPLED.traceId);
    assert.equal(span.parentSpanId, SAMPLED.spanId);
    assert.equal(span.parentIsRemote, true);
    assert.notEqual(span.spanId, SAMPLED.spanId);
    assert.match(span.spanId, /^[0-9a-f]{16}$/);
    assert.deepEqual(h.traceContext, { traceId: SAMPLED.traceId, spanId: span.spanId, flags: 1 });
    clock.advance(12);
    h.end(200);
    assert.deepEqual(sink.spans, [span]);
    assert.equal(span.name, 'GET /orders/:id');
    assert.equal(span.kind, SpanKind.SERVER);
    assert.equal(span.durationMs, 12);
    assert.equal(span.statusCode, SpanStatusCode.UNSET);
    assert.deepEqual(attrs(span), {
      'http.request.method': 'GET',
      'http.route': '/orders/:id',
      'plinth.lane': 'canary',
      'plinth.stress': 'true',
      'plinth.caller': 'web',
      'http.response.status_code': 200,
    });
  });

  it('makes outbound calls children of the server span, with the header to send', () => {
    const { tracing, sink } = setup();
    const server = startServerSpan(tracing, { method: 'POST', route: '/orders', traceparent: undefined });
    const root = server.span as PlinthSpan;
    assert.equal(root.parentSpanId, undefined);
    assert.match(root.traceId, /^[0-9a-f]{32}$/);
    const client = startClientSpan(tracing, { callee: 'payments', address: 'payments.shop:8080', method: 'POST', lane: 'canary', stress: true, parent: server.traceContext });
    const span = client.span as PlinthSpan;
    assert.equal(span.traceId, root.traceId);
    assert.equal(span.parentSpanId, root.spanId);
    assert.equal(span.parentIsRemote, false);
    assert.equal(client.traceparent, `00-${root.traceId}-${span.spanId}-01`);
    client.end(503);
    server.end(201);
    assert.deepEqual(sink.spans, [span, root]);
    assert.equal(span.name, 'POST payments');
    assert.equal(span.kind, SpanKind.CLIENT);
    assert.equal(span.statusCode, SpanStatusCode.ERROR);
    assert.deepEqual(attrs(span), {
      'peer.service': 'payments',
      'http.request.method': 'POST',
      'server.address': 'payments.shop:8080',
      'plinth.lane': 'canary',
      'plinth.stress': 'true',
      'http.response.status_code': 503,
      'error.type': '503',
    });
  });

  it('makes the server span the active OpenTelemetry span through the handler, awaits included', async () => {
    const { tracing } = setup();
    const h = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: SAMPLED });
    assert.ok(hasContextManager(), 'the hook installs a context manager when none is registered');
    assert.equal(trace.getActiveSpan(), undefined);
    const seen = await h.run(async () => {
      await new Promise((r) => setImmediate(r));
      return trace.getActiveSpan();
    });
    assert.equal(seen, h.span);
    h.end(200);
  });

  it('parents a span under the app span active in the OpenTelemetry context', () => {
    const { tracing, sink } = setup();
    const server = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: SAMPLED });
    const app = tracing.provider.getTracer('app');
    server.run(() =>
      app.startActiveSpan('load cart', (appSpan) => {
        const client = startClientSpan(tracing, { callee: 'cart', method: 'GET', parent: server.traceContext });
        assert.equal((client.span as PlinthSpan).parentSpanId, appSpan.spanContext().spanId);
        client.end(200);
        appSpan.end();
      }),
    );
    server.end(200);
    const [client, appSpan, root] = sink.spans as [PlinthSpan, PlinthSpan, PlinthSpan];
    assert.equal(appSpan.parentSpanId, root.spanId);
    assert.equal(client.parentSpanId, appSpan.spanId);
    assert.equal(appSpan.kind, SpanKind.INTERNAL);
    assert.deepEqual(appSpan.owner.scope, { name: 'app', version: undefined });
  });

  it('records errors: 5xx and unanswered errors fail the span, a 4xx does not', () => {
    const { tracing, sink } = setup();
    const boom = Object.assign(new Error('boom'), { code: 'db_down' });
    const a = startServerSpan(tracing, { method: 'GET', route: '/a', traceparent: undefined });
    a.end(500, boom);
    const b = startServerSpan(tracing, { method: 'GET', route: '/b', traceparent: undefined });
    b.end(404);
    const c = startServerSpan(tracing, { method: 'GET', route: '/c', traceparent: undefined });
    c.end(400, new TypeError('bad input'));
    const d = startClientSpan(tracing, { callee: 'x', method: 'GET', parent: undefined });
    d.end(undefined, new Error('ECONNREFUSED'));
    const [sa, sb, sc, sd] = sink.spans as [PlinthSpan, PlinthSpan, PlinthSpan, PlinthSpan];
    assert.equal(sa.statusCode, SpanStatusCode.ERROR);
    assert.equal(sa.statusMessage, 'boom');
    assert.equal(sa.attribute('error.type'), 'db_down');
    assert.deepEqual(
      sa.events?.map((e) => [e.name, e.attributes?.slice(0, 4)]),
      [['exception', ['exception.type', 'Error', 'exception.message', 'boom']]],
    );
    assert.equal(sb.statusCode, SpanStatusCode.UNSET);
    assert.equal(sb.attribute('error.type'), undefined);
    assert.equal(sc.statusCode, SpanStatusCode.UNSET);
    assert.equal(sc.events?.[0]?.name, 'exception');
    assert.equal(sd.statusCode, SpanStatusCode.ERROR);
    assert.equal(sd.attribute('http.response.status_code'), undefined);
    assert.equal(sd.attribute('error.type'), 'Error');
  });

  it("records a gRPC call's status: the server's own failures fail a server span, every code but OK a client span", () => {
    const { tracing, sink } = setup();
    const codes = [0, 5, 8, 2, 4, 12, 13, 14, 15];
    for (const code of codes) startServerSpan(tracing, { method: 'POST', route: '/shop.Orders/Get', traceparent: undefined }).end(200, undefined, code);
    for (const code of [0, 5]) startClientSpan(tracing, { callee: 'stock', method: 'POST', parent: undefined }).end(200, undefined, code);
    const spans = sink.spans;
    assert.deepEqual(
      spans.slice(0, codes.length).map((s) => [s.attribute('rpc.grpc.status_code'), s.statusCode === SpanStatusCode.ERROR]),
      codes.map((c) => [c, c !== 0 && c !== 5 && c !== 8]),
    );
    assert.ok(spans.every((s) => s.attribute('rpc.system') === 'grpc' && s.attribute('http.response.status_code') === 200));
    assert.equal(spans[4]!.attribute('error.type'), '4');
    const [okCall, notFound] = spans.slice(codes.length);
    assert.equal(okCall!.statusCode, SpanStatusCode.UNSET);
    assert.equal(notFound!.statusCode, SpanStatusCode.ERROR);
    assert.equal(notFound!.attribute('error.type'), '5');
    // A 5xx names the HTTP status, as without gRPC.
    startServerSpan(tracing, { method: 'POST', route: '/shop.Orders/Get', traceparent: undefined }).end(503, undefined, 14);
    assert.equal(spans.at(-1)!.attribute('error.type'), '503');
  });
});

describe('sampling through the hooks', () => {
  it('keeps unsampled spans that failed or were slow, drops fast good ones', () => {
    const { tracing, sink, clock } = setup({ sampleRatio: 0, keepSlowerThanMs: 250 });
    const fast = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: undefined });
    assert.equal(fast.traceContext?.flags, 0, 'downstream sees the trace as unsampled');
    assert.equal(fast.span?.isRecording(), true, 'deferred spans are recorded until their end');
    clock.advance(249);
    fast.end(200);
    const failed = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: undefined });
    failed.end(502);
    const slow = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: undefined });
    clock.advance(250);
    slow.end(200);
    const clientFailed = startClientSpan(tracing, { callee: 'x', method: 'GET', parent: fast.traceContext });
    clientFailed.end(undefined, new Error('reset'));
    assert.deepEqual(sink.spans, [failed.span, slow.span, clientFailed.span]);
    assert.ok(sink.spans.every((s) => s.deferred && s.traceFlags === 0));
  });

  it('follows the incoming sampled flag over the ratio', () => {
    const { tracing, sink } = setup({ sampleRatio: 0 });
    const a = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: SAMPLED });
    a.end(200);
    assert.deepEqual(sink.spans, [a.span]);
    assert.equal((a.span as PlinthSpan).deferred, false);
    const all = setup({ sampleRatio: 1 });
    const b = startServerSpan(all.tracing, { method: 'GET', route: '/', traceparent: UNSAMPLED });
    assert.equal(b.traceContext?.flags, 0);
    b.end(200);
    assert.deepEqual(all.sink.spans, []);
  });

  it('does not record at all when nothing is kept on demand, yet links the chain', () => {
    const { tracing, sink } = setup({ sampleRatio: 0, keepErrors: false });
    const h = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: UNSAMPLED });
    assert.equal(h.span?.isRecording(), false);
    assert.equal(h.traceContext?.traceId, UNSAMPLED.traceId);
    assert.notEqual(h.traceContext?.spanId, UNSAMPLED.spanId);
    h.end(500);
    assert.deepEqual(sink.spans, []);
  });

  it('applies a new ratio to new traces', () => {
    const { tracing, sink } = setup({ sampleRatio: 1, keepErrors: false });
    tracing.setSampleRatio(0);
    assert.equal(tracing.sampleRatio, 0);
    startServerSpan(tracing, { method: 'GET', route: '/', traceparent: undefined }).end(200);
    assert.deepEqual(sink.spans, []);
  });
});

describe('propagation-only and off', () => {
  it('propagation records nothing but gives each hop a span id and keeps the flags', () => {
    const { tracing, sink } = setup({ mode: 'propagation' });
    const server = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: SAMPLED });
    assert.equal(server.span?.isRecording(), false);
    const tc = server.traceContext as TraceContext;
    assert.equal(tc.traceId, SAMPLED.traceId);
    assert.notEqual(tc.spanId, SAMPLED.spanId);
    assert.equal(tc.flags, 1);
    server.run(() => assert.deepEqual(trace.getSpanContext(context.active()), { traceId: tc.traceId, spanId: tc.spanId, traceFlags: 1 }));
    const client = startClientSpan(tracing, { callee: 'x', method: 'GET', parent: tc });
    const sent = parseTraceparent(client.traceparent) as TraceContext;
    assert.equal(sent.traceId, tc.traceId);
    assert.notEqual(sent.spanId, tc.spanId);
    client.end(500);
    server.end(500);
    assert.deepEqual(sink.spans, []);
    const unsampled = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: UNSAMPLED });
    assert.equal(unsampled.traceContext?.flags, 0);
  });

  it('off passes the incoming context through untouched', () => {
    const { tracing, sink } = setup({ mode: 'off' });
    const server = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: SAMPLED });
    assert.equal(server.span, undefined);
    assert.equal(server.traceContext, SAMPLED);
    assert.equal(server.run(() => 7), 7);
    assert.equal(startClientSpan(tracing, { callee: 'x', method: 'GET', parent: SAMPLED }).traceparent, formatTraceparent(SAMPLED));
    assert.equal(startClientSpan(tracing, { callee: 'x', method: 'GET', parent: undefined }).traceparent, undefined);
    server.end(200);
    assert.deepEqual(sink.spans, []);
  });
});

describe('PlinthSpan', () => {
  it('behaves as the api says after end and for status', () => {
    const { tracing, sink } = setup();
    const span = tracing.provider.getTracer('t').startSpan('work', { attributes: { a: 1, skip: undefined } }) as PlinthSpan;
    span.setStatus({ code: SpanStatusCode.OK });
    span.setStatus({ code: SpanStatusCode.ERROR, message: 'late' });
    span.updateName('renamed').setAttribute('a', 2).setAttributes({ b: 'x' });
    span.end();
    span.setAttribute('c', true).updateName('after end');
    span.end();
    assert.deepEqual(sink.spans, [span]);
    assert.equal(span.statusCode, SpanStatusCode.OK);
    assert.equal(span.statusMessage, undefined);
    assert.equal(span.name, 'renamed');
    assert.deepEqual(attrs(span), { a: 2, b: 'x' });
    assert.equal(span.isRecording(), false);
  });

  it('bounds attributes and counts what it dropped', () => {
    const { tracing } = setup();
    const span = tracing.provider.getTracer('t').startSpan('work') as PlinthSpan;
    for (let i = 0; i < 200; i++) span.setAttribute(`k${i}`, i);
    span.setAttribute('__proto__', 'harmless');
    assert.equal(span.attributes.length, 256);
    assert.equal(span.droppedAttributes, 73);
    assert.equal(span.attribute('k0'), 0);
  });

  it('starts a new root when asked, whatever is active', () => {
    const { tracing } = setup();
    const t = tracing.provider.getTracer('t');
    const parent = t.startSpan('p');
    const child = t.startSpan('c', { root: true }, trace.setSpan(context.active(), parent)) as PlinthSpan;
    assert.equal(child.parentSpanId, undefined);
    assert.notEqual(child.traceId, parent.spanContext().traceId);
    const linked = t.startSpan('l', { links: [{ context: parent.spanContext() }] }) as PlinthSpan;
    assert.equal(linked.links?.[0]?.context.spanId, parent.spanContext().spanId);
  });
});
