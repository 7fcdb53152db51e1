import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry, register as globalRegistry } from 'prom-client';
import { InboundMetrics, statusClass } from './metrics.js';

describe('InboundMetrics', () => {
  it('separates stress traffic, uses route templates or "other", and counts in-flight', async () => {
    const m = new InboundMetrics();
    m.begin('orders');
    m.begin('orders');
    m.end('orders', 'GET', '/orders/:id', 200, undefined, false, 0.02);
    assert.match(await m.registry.metrics(), /plinth_inbound_in_flight\{service="orders"\} 1/);
    m.end('orders', 'GET', '/orders/:id', 503, 'gray', true, 0.5);
    m.begin('orders');
    m.end('orders', 'BREW', undefined, 0, undefined, false, 1);
    const text = await m.registry.metrics();
    assert.match(text, /plinth_inbound_requests_total\{service="orders",method="GET",route="\/orders\/:id",status_class="2xx",lane="base",stress="false"\} 1/);
    assert.match(text, /plinth_inbound_requests_total\{service="orders",method="GET",route="\/orders\/:id",status_class="5xx",lane="gray",stress="true"\} 1/);
    assert.match(text, /plinth_inbound_requests_total\{service="orders",method="OTHER",route="other",status_class="aborted",lane="base",stress="false"\} 1/);
    assert.match(text, /plinth_inbound_request_duration_seconds_count\{service="orders",method="GET",route="\/orders\/:id",status_class="5xx",lane="gray",stress="true"\} 1/);
    assert.match(text, /plinth_inbound_in_flight\{service="orders"\} 0/);
  });

  it('caps client-chosen lane values and never touches the global registry', async () => {
    const registry = new Registry();
    const m = new InboundMetrics({ registry });
    for (let i = 0; i < 100; i++) m.end('orders', 'GET', '/x', 200, `lane-${i}`, false, 0);
    const lanes = new Set([...(await registry.metrics()).matchAll(/plinth_inbound_requests_total\{[^}]*lane="([^"]+)"/g)].map((x) => x[1]));
    assert.ok(lanes.size <= 33 && lanes.has('other'), `bounded lanes, got ${lanes.size}`);
    assert.equal(globalRegistry.getSingleMetric('plinth_inbound_requests_total'), undefined);
  });

  it('classifies statuses', () => {
    assert.deepEqual([100, 204, 301, 429, 599, 0, 600].map(statusClass), ['1xx', '2xx', '3xx', '4xx', '5xx', 'aborted', 'aborted']);
  });
});
