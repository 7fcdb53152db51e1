import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { BreakerState } from '../resilience/breaker.js';
import type { OutboundMetrics } from './engine.js';

/** Breaker states as gauge values: 0 passes calls, 1 probes, 2 fails fast. */
function stateValue(s: BreakerState): number {
  switch (s.kind) {
    case 'open':
    case 'forcedOpen':
      return 2;
    case 'halfOpen':
      return 1;
    default:
      return 0;
  }
}

/** Outbound RED metrics plus breaker states, retries and ejections, registered in `registry`. */
export function outboundMetrics(registry: Registry): OutboundMetrics {
  const registers = [registry];
  const requests = new Counter({
    name: 'plinth_outbound_requests_total',
    help: 'Outbound calls by callee, outcome status class, lane and pressure-test mark',
    labelNames: ['callee', 'status_class', 'lane', 'stress'] as const,
    registers,
  });
  const duration = new Histogram({
    name: 'plinth_outbound_request_duration_seconds',
    help: 'Outbound call duration, retries and backoff included',
    labelNames: ['callee'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers,
  });
  const breaker = new Gauge({
    name: 'plinth_outbound_breaker_state',
    help: 'Circuit breaker state per callee and upstream (instance id, * for service scope): 0 closed, 1 half-open, 2 open',
    labelNames: ['callee', 'endpoint'] as const,
    registers,
    // Summed over a gateway's workers (each with its own breakers) the state means nothing; the worst one tells.
    aggregator: 'max',
  });
  const retries = new Counter({ name: 'plinth_outbound_retries_total', help: 'Outbound retries', labelNames: ['callee'] as const, registers });
  const ejections = new Counter({ name: 'plinth_outbound_ejections_total', help: 'Upstream instances ejected by outlier detection', labelNames: ['callee'] as const, registers });
  return {
    request(callee, statusClass, lane, stress, seconds) {
      requests.inc({ callee, status_class: statusClass, lane, stress: stress ? 'true' : 'false' });
      duration.observe({ callee }, seconds);
    },
    retry(callee) {
      retries.inc({ callee });
    },
    ejection(callee) {
      ejections.inc({ callee });
    },
    breakerState(callee, endpoint, state) {
      if (state === undefined) breaker.remove({ callee, endpoint });
      else breaker.set({ callee, endpoint }, stateValue(state));
    },
  };
}
