import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { context } from '@opentelemetry/api';
import { currentContext } from '../context.js';
import { StaticGovernance } from '../governance/source.js';
import { faultTolerance } from '../inbound/testkit.test.helpers.js';
import { InboundMetrics } from '../inbound/metrics.js';
import { createTracing } from '../tracing/hooks.js';
import type { PlinthSpan } from '../tracing/span.js';
import { InboundRuntime } from './runtime.js';

const PARENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = `00-${PARENT_TRACE}-00f067aa0ba902b7-01`;

describe('InboundRuntime', () => {
  after(() => context.disable());

  it('gives a request one trace, the same to the handler and to whoever reads the context later', () => {
    const rt = new InboundRuntime({ service: 'orders', governance: new StaticGovernance() });
    for (const headers of [{}, { traceparent: PARENT }]) {
      const s = rt.start('GET', '/orders/1?x=1', headers, undefined, undefined);
      const inHandler = rt.run(s, () => [currentContext()?.trace, currentContext()?.trace]);
      assert.equal(inHandler[0], s.ctx.trace);
      assert.equal(inHandler[1], s.ctx.trace);
      assert.match(s.ctx.trace?.traceId ?? '', /^[0-9a-f]{32}$/);
      if ('traceparent' in headers) assert.equal(s.ctx.trace?.traceId, PARENT_TRACE);
      rt.finish(s, undefined, 200);
    }
  });

  it('with tracing, the context carries the server span ids; in mode off the incoming context as it came', () => {
    const spans: PlinthSpan[] = [];
    const tracing = createTracing({ service: 'orders', namespace: 'shop', useGlobalProvider: 'never' });
    tracing.provider.sink = { enqueue: (sp) => void spans.push(sp) };
    const rt = new InboundRuntime({ service: 'orders', governance: new StaticGovernance(), tracing });
    const s = rt.start('GET', '/orders/1', { traceparent: PARENT }, undefined, undefined);
    assert.equal(rt.run(s, () => currentContext()?.trace), s.ctx.trace);
    rt.finish(s, '/orders/:id', 200);
    const span = spans[0]!;
    assert.equal(span.name, 'GET /orders/:id');
    assert.ok(span.startMs <= span.endMs);
    assert.deepEqual({ ...s.ctx.trace }, { traceId: span.traceId, spanId: span.spanId, flags: 1 });

    const off = new InboundRuntime({ service: 'orders', governance: new StaticGovernance(), tracing: createTracing({ service: 'orders', namespace: 'shop', mode: 'off' }) });
    const o = off.start('GET', '/orders/1', { traceparent: PARENT }, undefined, undefined);
    assert.deepEqual({ ...o.ctx.trace }, { traceId: PARENT_TRACE, spanId: '00f067aa0ba902b7', flags: 1 });
  });

  it('has something to do at the end only for a held admission, metrics or a span', () => {
    const governance = new StaticGovernance();
    const plain = new InboundRuntime({ service: 'orders', governance });
    assert.equal(plain.needsFinish(plain.start('GET', '/', {}, undefined, undefined)), false);
    const counted = new InboundRuntime({ service: 'orders', governance, metrics: new InboundMetrics() });
    assert.equal(counted.needsFinish(counted.start('GET', '/', {}, undefined, undefined)), true);
    const traced = new InboundRuntime({ service: 'orders', governance, tracing: createTracing({ service: 'orders', namespace: 'shop', useGlobalProvider: 'never' }) });
    assert.equal(traced.needsFinish(traced.start('GET', '/', {}, undefined, undefined)), true);
    governance.set({
      faultTolerance: [faultTolerance('limit', { rules: [{ name: 'c', targets: [{ service: 'orders' }], strategies: [{ type: 'concurrencyLimit', maxConcurrency: 1 }] }] })],
      faultInjections: [],
      trafficPolicies: [],
    });
    const held = plain.start('GET', '/', {}, undefined, undefined);
    assert.equal(plain.needsFinish(held), true);
    plain.close();
  });
});
