import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { context, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { parseTraceparent, type TraceContext } from '../balancing/traceparent.js';
import { createTracing, startClientSpan, startServerSpan } from './hooks.js';
import { PlinthSpan } from './span.js';
import type { SpanSink } from './tracer.js';

const INCOMING = parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') as TraceContext;

/** What an app with the OpenTelemetry SDK has set up before Plinth runs. */
function appSdk() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  return { exporter, provider };
}

const byName = (spans: ReadableSpan[], name: string) => {
  const s = spans.find((x) => x.name === name);
  assert.ok(s, `span ${name} exported`);
  return s;
};

afterEach(() => {
  trace.disable();
  context.disable();
});

describe('with the app running the OpenTelemetry SDK', () => {
  it("makes Plinth's server span through the app's provider, and the app's spans its children", async () => {
    const { exporter } = appSdk();
    const tracing = createTracing({ service: 'orders', namespace: 'shop' });
    const h = startServerSpan(tracing, { method: 'GET', route: '/orders/:id', traceparent: INCOMING, lane: 'canary', stress: true, caller: 'web' });
    assert.equal(tracing.usesGlobalProvider, true);
    await h.run(async () => {
      await new Promise((r) => setImmediate(r));
      // What an instrumentation (pg, redis) does inside the handler.
      trace.getTracer('@opentelemetry/instrumentation-pg').startSpan('SELECT orders', { kind: SpanKind.CLIENT }).end();
    });
    h.end(200);
    const spans = exporter.getFinishedSpans();
    const server = byName(spans, 'GET /orders/:id');
    const db = byName(spans, 'SELECT orders');
    assert.equal(server.kind, SpanKind.SERVER);
    assert.equal(server.instrumentationScope.name, '@plinth/sdk');
    assert.equal(server.spanContext().traceId, INCOMING.traceId);
    assert.equal(server.parentSpanContext?.spanId, INCOMING.spanId);
    assert.equal(server.parentSpanContext?.isRemote, true);
    assert.deepEqual(h.traceContext, { traceId: INCOMING.traceId, spanId: server.spanContext().spanId, flags: 1 });
    assert.deepEqual(server.attributes, {
      'http.request.method': 'GET',
      'http.route': '/orders/:id',
      'plinth.lane': 'canary',
      'plinth.stress': 'true',
      'plinth.caller': 'web',
      'http.response.status_code': 200,
    });
    assert.equal(db.spanContext().traceId, INCOMING.traceId);
    assert.equal(db.parentSpanContext?.spanId, server.spanContext().spanId);
  });

  it('parents the client span under an app span active around the call', () => {
    const { exporter } = appSdk();
    const tracing = createTracing({ service: 'orders', namespace: 'shop' });
    const h = startServerSpan(tracing, { method: 'POST', route: '/checkout', traceparent: undefined });
    let header: string | undefined;
    h.run(() =>
      trace.getTracer('app').startActiveSpan('reserve stock', (app) => {
        const c = startClientSpan(tracing, { callee: 'stock', address: 'stock:80', method: 'POST', parent: h.traceContext });
        header = c.traceparent;
        c.end(200);
        app.end();
      }),
    );
    h.end(200);
    const spans = exporter.getFinishedSpans();
    const server = byName(spans, 'POST /checkout');
    const app = byName(spans, 'reserve stock');
    const client = byName(spans, 'POST stock');
    assert.equal(app.parentSpanContext?.spanId, server.spanContext().spanId);
    assert.equal(client.parentSpanContext?.spanId, app.spanContext().spanId);
    assert.equal(client.kind, SpanKind.CLIENT);
    assert.equal(client.attributes['peer.service'], 'stock');
    assert.equal(header, `00-${server.spanContext().traceId}-${client.spanContext().spanId}-01`);
  });

  it("nests under the app's own server span (its http instrumentation) rather than beside it", () => {
    const { exporter } = appSdk();
    const tracing = createTracing({ service: 'orders', namespace: 'shop' });
    trace.getTracer('@opentelemetry/instrumentation-http').startActiveSpan('GET', { kind: SpanKind.SERVER }, (outer) => {
      const h = startServerSpan(tracing, { method: 'GET', route: '/x', traceparent: INCOMING });
      h.end(204);
      outer.end();
    });
    const spans = exporter.getFinishedSpans();
    const outer = byName(spans, 'GET');
    const plinth = byName(spans, 'GET /x');
    assert.equal(plinth.parentSpanContext?.spanId, outer.spanContext().spanId);
    assert.equal(plinth.spanContext().traceId, outer.spanContext().traceId);
  });

  it("uses Plinth's own provider when told never to use the app's", () => {
    const { exporter } = appSdk();
    const tracing = createTracing({ service: 'orders', namespace: 'shop', useGlobalProvider: 'never' });
    const h = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: undefined });
    assert.ok(h.span instanceof PlinthSpan);
    // The app's spans still nest under it through the shared context.
    h.run(() => trace.getTracer('app').startSpan('inner').end());
    h.end(200);
    assert.equal(byName(exporter.getFinishedSpans(), 'inner').parentSpanContext?.spanId, h.traceContext?.spanId);
  });
});

describe('without an OpenTelemetry SDK', () => {
  it('installs a context manager so api users see the Plinth span as parent', () => {
    const tracing = createTracing({ service: 'orders', namespace: 'shop' });
    const h = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: INCOMING });
    assert.equal(tracing.usesGlobalProvider, false);
    assert.ok(h.span instanceof PlinthSpan);
    // The api's no-op tracer hands back the parent context: code that reads the trace id finds Plinth's.
    const inner = h.run(() => trace.getTracer('app').startSpan('inner').spanContext());
    assert.deepEqual(inner, h.span.spanContext());
    h.end(200);
  });

  it("exports the app's api spans through Plinth when the app registers Plinth's provider", () => {
    const tracing = createTracing({ service: 'orders', namespace: 'shop' });
    const got: PlinthSpan[] = [];
    const sink: SpanSink = { enqueue: (s) => void got.push(s) };
    tracing.provider.sink = sink;
    trace.setGlobalTracerProvider(tracing.provider);
    const h = startServerSpan(tracing, { method: 'GET', route: '/', traceparent: undefined });
    h.run(() => trace.getTracer('app').startSpan('inner').end());
    h.end(200);
    const [inner, server] = got as [PlinthSpan, PlinthSpan];
    assert.equal(inner.name, 'inner');
    assert.equal(inner.parentSpanId, server.spanId);
    assert.equal(inner.owner.scope.name, 'app');
  });
});
