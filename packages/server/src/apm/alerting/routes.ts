import { PlinthError, type AlertSeverity, type SloSpec } from '@plinth/core';
import { authorize, principalOf, type GuardDeps } from '../../http/guard.js';
import { sendJson } from '../../http/problem.js';
import type { RequestContext, Router } from '../../http/router.js';
import { intParam } from '../../api/query.js';
import { instant, range } from '../routes.js';
import type { AlertEvent, SliCounts, SpanStore } from '../types.js';
import type { ErrorBudget } from './burn-rate.js';
import { contentionReport } from './contention.js';
import type { Clock } from './evaluator.js';
import { measureSlo } from './measure.js';
import type { AlertResources, Named } from './resources.js';

export interface AlertingApiDeps extends GuardDeps {
  resources: AlertResources;
  spans: SpanStore;
  clock?: Clock;
}

export interface WindowStatus {
  window: string;
  burnRate: number;
  total: number;
  bad: number;
}

export interface BurnRateStatus {
  longWindow: string;
  shortWindow: string;
  /** The threshold. */
  burnRate: number;
  severity: AlertSeverity;
  long: WindowStatus;
  short: WindowStatus;
  firing: boolean;
  /** The long window holds fewer requests than the SLO's `alerting.minRequests`. */
  tooFewRequests: boolean;
}

export interface SloStatus {
  namespace: string;
  name: string;
  spec: SloSpec;
  at: string;
  burnRates: BurnRateStatus[];
  errorBudget: ErrorBudget;
  /** From the alert history, so every server answers the same whichever one evaluates. */
  firing: { severity: AlertSeverity; summary: string; since: string; notification: string }[];
}

const MAX_RANGE_MS = 35 * 86_400_000;

function windowStatus(window: string, counts: SliCounts, burnRate: number): WindowStatus {
  return { window, burnRate, total: counts.total, bad: counts.bad };
}

export async function sloStatus(spans: SpanStore, slo: Named<SloSpec>, nowMs: number): Promise<SloStatus> {
  const [m, events] = await Promise.all([
    measureSlo(spans, slo, nowMs, { budget: true }),
    spans.alertEvents({ namespace: slo.namespace, source: `Slo/${slo.name}`, limit: 50 }),
  ]);
  return {
    namespace: slo.namespace,
    name: slo.name,
    spec: slo.spec,
    at: new Date(nowMs).toISOString(),
    burnRates: m.pairs.map((p) => ({
      longWindow: p.alert.longWindow,
      shortWindow: p.alert.shortWindow,
      burnRate: p.alert.burnRate,
      severity: p.alert.severity,
      long: windowStatus(p.long.window, p.long.counts, p.long.burnRate),
      short: windowStatus(p.short.window, p.short.counts, p.short.burnRate),
      firing: p.firing,
      tooFewRequests: p.tooFewRequests,
    })),
    errorBudget: m.budget!,
    firing: firingFrom(events),
  };
}

/** The newest event per severity, where it is a firing one; `since` is when that firing began. */
function firingFrom(events: readonly AlertEvent[]): SloStatus['firing'] {
  const sorted = [...events].sort((a, b) => b.atMs - a.atMs);
  const out: SloStatus['firing'] = [];
  const seen = new Set<string>();
  for (let i = 0; i < sorted.length; i++) {
    const e = sorted[i]!;
    if (seen.has(e.severity)) continue;
    seen.add(e.severity);
    if (e.state !== 'firing') continue;
    // A firing re-notified after silence is the same firing: walk back to where it started.
    let since = e.atMs;
    for (let j = i + 1; j < sorted.length; j++) {
      const o = sorted[j]!;
      if (o.severity !== e.severity) continue;
      if (o.state !== 'firing') break;
      since = o.atMs;
    }
    out.push({ severity: e.severity, summary: e.summary, since: new Date(since).toISOString(), notification: e.notification });
  }
  return out;
}

/** Namespace given: authorize it. Absent: the caller sees the namespaces it may `list`, others filtered out (as resource lists do). */
async function scope(ctx: RequestContext, deps: AlertingApiDeps, kind: string): Promise<{ namespace: string | undefined; may: (ns: string) => boolean }> {
  const namespace = ctx.query.get('namespace') || undefined;
  if (namespace !== undefined) {
    await authorize(ctx, deps, 'list', kind, namespace);
    return { namespace, may: () => true };
  }
  const p = principalOf(ctx);
  return { namespace, may: (ns) => deps.identity.can(p, 'list', kind, ns) };
}

export function registerAlertingRoutes(router: Router, deps: AlertingApiDeps): void {
  const now = (): number => deps.clock?.now() ?? Date.now();

  router.add('GET', '/v1/apm/slos/:namespace/:name', async (ctx) => {
    const { namespace, name } = ctx.params as { namespace: string; name: string };
    await authorize(ctx, deps, 'get', 'Slo', namespace, name);
    const slo = await deps.resources.get('Slo', namespace, name);
    if (!slo) throw new PlinthError('NOT_FOUND', `Slo ${namespace}/${name} does not exist`);
    sendJson(ctx.res, 200, await sloStatus(deps.spans, slo, now()));
  });

  router.add('GET', '/v1/apm/slos', async (ctx) => {
    const { namespace, may } = await scope(ctx, deps, 'Slo');
    const at = now();
    const slos = (await deps.resources.list('Slo', namespace)).filter((s) => may(s.namespace));
    sendJson(ctx.res, 200, { items: await Promise.all(slos.map((s) => sloStatus(deps.spans, s, at))) });
  });

  router.add('GET', '/v1/apm/alerts', async (ctx) => {
    const { namespace, may } = await scope(ctx, deps, 'AlertRule');
    const source = ctx.query.get('source') || undefined;
    if (source !== undefined && !/^(Slo|AlertRule)\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(source)) {
      throw new PlinthError('INVALID_PARAMETER', 'source must be Slo/<name> or AlertRule/<name>');
    }
    const limit = intParam(ctx.query, 'limit', { min: 1, max: 1000 }) ?? 100;
    const events = await deps.spans.alertEvents({ namespace, source, fromMs: instant(ctx.query, 'from', now()), limit });
    sendJson(ctx.res, 200, {
      items: events.filter((e) => may(e.namespace)).map((e) => ({ ...e, at: new Date(e.atMs).toISOString() })),
    });
  });

  router.add('GET', '/v1/apm/contention', async (ctx) => {
    const namespace = ctx.query.get('namespace');
    if (!namespace) throw new PlinthError('INVALID_PARAMETER', 'namespace is required');
    await authorize(ctx, deps, 'list', 'Trace', namespace);
    const { fromMs, toMs } = range(ctx.query, now());
    if (toMs - fromMs > MAX_RANGE_MS) throw new PlinthError('INVALID_PARAMETER', 'the range may span at most 35 days');
    sendJson(ctx.res, 200, await contentionReport(deps, { namespace, fromMs, toMs }));
  });
}
