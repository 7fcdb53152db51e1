import type { Logger } from 'pino';
import { Counter, Gauge } from 'prom-client';
import type { GuardDeps } from '../http/guard.js';
import type { Router } from '../http/router.js';
import type { Metrics } from '../metrics.js';
import type { Keyring } from '../secrets/keyring.js';
import type { Store } from '../store/types.js';
import type { WatchHub } from '../watch/hub.js';
import { AlertEvaluator, AlertResourceCache, registerAlertingRoutes, storeSecretResolver, WebhookNotifier } from './alerting/index.js';
import { OtlpForwarder, registerOtlpRoutes, type OtlpForwarderOptions } from './otlp/index.js';
import { registerApmQueryRoutes } from './routes.js';
import { openSpanStore } from './store/index.js';
import type { RetentionPolicy, SpanStore } from './types.js';

export interface ApmOptions {
  /** How long raw spans and minute rollups are kept. Default 7 days and 35 days. */
  retention?: Partial<RetentionPolicy>;
  /** Also send every stored span to another OpenTelemetry backend (OTLP/HTTP traces URL). */
  forward?: OtlpForwarderOptions;
  /** SLO and alert rule evaluation period. Default 30 s. */
  evaluateEveryMs?: number;
  /** Retention sweep period. Default 10 min. */
  retentionEveryMs?: number;
}

export const DEFAULT_RETENTION: RetentionPolicy = { spansMs: 7 * 86_400_000, rollupsMs: 35 * 86_400_000 };

export interface ApmDeps {
  router: Router;
  guard: GuardDeps;
  store: Store;
  hub: WatchHub;
  keyring: Keyring;
  log: Logger;
  metrics: Metrics;
  dataDir: string;
  /** The server's `--store` value; the span store sits beside it (DATA/apm.db, or the `_apm` schema). */
  storeSpec: string | undefined;
  options: ApmOptions;
}

export interface RunningApm {
  spans: SpanStore;
  close(): Promise<void>;
}

/**
 * The APM half of the server: OTLP ingest, span and rollup storage, trace / RED / topology queries, SLO and
 * alert-rule evaluation with webhook notifications. Its store is separate from the resource store so that
 * span volume never slows resource writes or the watch.
 */
export async function startApm(d: ApmDeps): Promise<RunningApm> {
  const { router, guard, log } = d;
  const spans = openSpanStore(d.storeSpec, d.dataDir, { onError: (msg, err) => log.warn({ err }, msg) });
  await spans.init();
  const cleanups: (() => Promise<void> | void)[] = [() => spans.close()];
  const close = async () => {
    for (const c of cleanups) await c();
  };
  try {
    const forwarder = d.options.forward ? new OtlpForwarder(d.options.forward) : undefined;
    if (forwarder) cleanups.unshift(() => forwarder.close());
    const ingest = registerOtlpRoutes(router, { ...guard, sink: spans, forward: forwarder, log });
    cleanups.unshift(() => ingest.close());
    registerApmQueryRoutes(router, { ...guard, spans });

    const resources = new AlertResourceCache(log);
    d.hub.onChange((ch) => resources.onChange(ch));
    await resources.load(d.store);
    const notifier = new WebhookNotifier({ secrets: storeSecretResolver(d.store, d.keyring), log });
    const evaluator = await AlertEvaluator.start({ resources, spans, notifier, log, intervalMs: d.options.evaluateEveryMs ?? 30_000 });
    cleanups.unshift(async () => {
      await evaluator.stop();
      await notifier.close();
    });
    registerAlertingRoutes(router, { ...guard, resources, spans });

    const retention: RetentionPolicy = { ...DEFAULT_RETENTION, ...d.options.retention };
    const sweep = async (): Promise<void> => {
      try {
        await spans.exclusive('apm-retention', async () => {
          const removed = await spans.enforceRetention(Date.now(), retention);
          if (removed.spans + removed.rollups > 0) log.info(removed, 'apm retention removed old data');
        });
      } catch (err) {
        log.warn({ err }, 'apm retention failed; retrying later');
      }
    };
    const timer = setInterval(() => void sweep(), d.options.retentionEveryMs ?? 600_000);
    timer.unref();
    cleanups.unshift(() => clearInterval(timer));

    registerApmMetrics(d.metrics, ingest.stats, ingest.queue, forwarder, evaluator, notifier);
    return { spans, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Ingest, forwarding and alerting figures, read at scrape time (nothing is counted twice on a hot path). */
function registerApmMetrics(
  metrics: Metrics,
  stats: { requests: number; accepted: number; rejected: number },
  queue: { size: number },
  forwarder: OtlpForwarder | undefined,
  evaluator: AlertEvaluator,
  notifier: WebhookNotifier,
): void {
  const registers = [metrics.registry];
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  gauge('plinth_server_otlp_queue_spans', 'Spans accepted by OTLP ingest and not yet stored', () => queue.size);
  gauge('plinth_server_alert_firing', 'SLO and alert-rule alerts currently firing', () => evaluator.firing().length);
  counter(metrics, 'plinth_server_otlp_requests_total', 'OTLP export requests received', () => stats.requests);
  counter(metrics, 'plinth_server_otlp_spans_accepted_total', 'Spans stored by OTLP ingest', () => stats.accepted);
  counter(metrics, 'plinth_server_otlp_spans_rejected_total', 'Spans refused by OTLP ingest (invalid, or a namespace the caller may not write)', () => stats.rejected);
  counter(metrics, 'plinth_server_alert_evaluations_total', 'SLO and alert-rule evaluation rounds run', () => evaluator.evaluations);
  counter(metrics, 'plinth_server_alert_notifications_delivered_total', 'Alert webhooks delivered', () => notifier.stats.delivered);
  counter(metrics, 'plinth_server_alert_notifications_failed_total', 'Alert webhooks given up on', () => notifier.stats.failed);
  if (forwarder) {
    counter(metrics, 'plinth_server_otlp_forwarded_spans_total', 'Spans forwarded to the other OTLP backend', () => forwarder.counters.sent);
    counter(metrics, 'plinth_server_otlp_forward_dropped_spans_total', 'Spans not forwarded: queue full', () => forwarder.counters.dropped);
  }
}

/** A prom-client counter whose value is a running total read at scrape time. */
function counter(metrics: Metrics, name: string, help: string, read: () => number): void {
  let last = 0;
  new Counter({
    name,
    help,
    registers: [metrics.registry],
    collect() {
      const v = read();
      if (v > last) this.inc(v - last);
      last = v;
    },
  });
}
