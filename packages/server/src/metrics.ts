import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The control plane's own metrics, one registry per server (tests run several in one process). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'plinth_server_' });
  dropMisnamedGauges(registry, 'plinth_server_');
  return {
    registry,
    requests: new Counter({
      name: 'plinth_server_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'plinth_server_http_request_duration_seconds',
      help: 'HTTP request latency by route (watch streams excluded)',
      labelNames: ['method', 'route'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    watchers: new Gauge({ name: 'plinth_server_watch_streams', help: 'Open watch streams', registers: [registry] }),
    watchDrops: new Counter({
      name: 'plinth_server_watch_streams_closed_total',
      help: 'Watch streams closed, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    revision: new Gauge({ name: 'plinth_server_store_revision', help: 'Newest store revision this server has seen', registers: [registry] }),
    leaseExpiries: new Counter({ name: 'plinth_server_lease_expiries_total', help: 'Instances removed because their lease lapsed', registers: [registry] }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * prom-client serves three of its default gauges twice, once under a `…_total` name that Prometheus reserves
 * for counters (promtool rejects it, and rate() over it would be nonsense). The gauge-named twins stay.
 */
function dropMisnamedGauges(registry: Registry, prefix: string): void {
  for (const name of ['nodejs_active_handles', 'nodejs_active_requests', 'nodejs_active_resources']) registry.removeSingleMetric(`${prefix}${name}_total`);
}
