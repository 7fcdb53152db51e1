import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { context, trace, type Context } from '@opentelemetry/api';
import Fastify, { type FastifyInstance } from 'fastify';
import { request } from 'undici';
import { currentContext, type RequestContext } from '../context.js';
import { StaticGovernance } from '../governance/source.js';
import { createTracing, type Tracing } from '../tracing/hooks.js';
import type { PlinthSpan } from '../tracing/span.js';
import { plinthFastify } from './fastify.js';

const PARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

interface Seen {
  ctx: RequestContext | undefined;
  active: unknown;
  /** The OpenTelemetry context the handler ran in, kept to be entered again after the request. */
  otel: Context;
}

describe('plinthFastify with tracing', () => {
  let app: FastifyInstance;
  let url: string;
  let tracing: Tracing;
  const spans: PlinthSpan[] = [];
  const seen: Seen[] = [];

  before(async () => {
    tracing = createTracing({ service: 'orders', namespace: 'shop', useGlobalProvider: 'never' });
    tracing.provider.sink = { enqueue: (s) => void spans.push(s) };
    app = Fastify();
    await app.register(plinthFastify, { service: 'orders', governance: new StaticGovernance(), tracing });
    app.get('/orders/:id', async () => {
      await new Promise((r) => setImmediate(r));
      seen.push({ ctx: currentContext(), active: trace.getActiveSpan(), otel: context.active() });
      return { ok: true };
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await app.close();
    context.disable();
  });

  async function get(headers: Record<string, string> = {}): Promise<{ seen: Seen; span: PlinthSpan }> {
    const before = spans.length;
    const res = await request(`${url}/orders/7`, { headers });
    await res.body.dump();
    assert.equal(res.statusCode, 200);
    // The span ends when the response closes, a tick after the client may have read it.
    for (let i = 0; i < 50 && spans.length === before; i++) await new Promise((r) => setTimeout(r, 5));
    return { seen: seen.at(-1) as Seen, span: spans.at(-1) as PlinthSpan };
  }

  it('makes the server span the request context trace and the active span in the handler, after an await', async () => {
    const { seen, span } = await get({ traceparent: PARENT, 'plinth-caller': 'web' });
    assert.equal(span.name, 'GET /orders/:id');
    assert.equal(span.attribute('http.route'), '/orders/:id');
    assert.equal(span.attribute('http.response.status_code'), 200);
    assert.equal(span.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.equal(span.parentSpanId, '00f067aa0ba902b7');
    assert.equal(seen.active, span);
    // Outbound calls become children of the server span: the context carries its ids, not other ones.
    assert.deepEqual(seen.ctx?.trace, { traceId: span.traceId, spanId: span.spanId, flags: 1 });
    assert.equal(seen.ctx?.caller, 'web');
  });

  it('starts one trace for a request without traceparent: the context and the span share its ids', async () => {
    const { seen, span } = await get();
    assert.equal(span.parentSpanId, undefined);
    assert.deepEqual(seen.ctx?.trace, { traceId: span.traceId, spanId: span.spanId, flags: 1 });
  });

  it('carries the request context inside the OpenTelemetry context, so a context entered later brings both', async () => {
    const { seen, span } = await get({ baggage: 'biz=1' });
    assert.equal(currentContext(), undefined);
    // What an instrumentation does with a context it captured (a pool's callback, a bound emitter).
    const later = context.with(seen.otel, () => ({ ctx: currentContext(), active: trace.getActiveSpan() }));
    assert.equal(later.ctx, seen.ctx);
    assert.equal(later.ctx?.baggage.get('biz')?.value, '1');
    assert.equal(later.active, span);
  });
});
