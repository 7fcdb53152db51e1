/**
 * Reads what alerts judge from the span store: SLI counts per window for Slos, one RED figure per period
 * for AlertRules. Shared by the evaluator and the status API, so both see the same numbers.
 */
import { windowMs, type AlertRuleSpec, type SloSpec } from '@plinth/core';
import type { RedRow, SliCounts, SpanStore } from '../types.js';
import { errorBudget, evaluatePairs, fmt, windowsOf, type ErrorBudget, type PairEvaluation } from './burn-rate.js';
import type { Named } from './resources.js';

/** Good and bad requests of an SLO's target in [fromMs, toMs); a journey sums its endpoints. Stress traffic never counts (the store drops it). */
export async function sliCounts(spans: SpanStore, namespace: string, spec: SloSpec, fromMs: number, toMs: number): Promise<SliCounts> {
  const endpoints: (string | undefined)[] = spec.target.journey ? spec.target.journey.endpoints : [spec.target.endpoint];
  const counts = await Promise.all(
    endpoints.map((endpoint) =>
      spans.sli({ namespace, service: spec.target.service, endpoint, indicator: spec.indicator, thresholdMs: spec.thresholdMs, fromMs, toMs }),
    ),
  );
  return counts.reduce((a, c) => ({ total: a.total + c.total, bad: a.bad + c.bad }), { total: 0, bad: 0 });
}

export interface SloMeasurement {
  pairs: PairEvaluation[];
  /** Only when asked for: it reads the whole SLO window. */
  budget: ErrorBudget | undefined;
}

export async function measureSlo(spans: SpanStore, slo: Named<SloSpec>, nowMs: number, options: { budget?: boolean } = {}): Promise<SloMeasurement> {
  const { spec } = slo;
  const windows = windowsOf(spec.alerting.burnRates);
  const counts = new Map<string, SliCounts>();
  await Promise.all(
    windows.map(async (w) => {
      counts.set(w, await sliCounts(spans, slo.namespace, spec, nowMs - windowMs(w), nowMs));
    }),
  );
  const pairs = evaluatePairs(spec.alerting.burnRates, spec.objectivePercent, (w) => counts.get(w)!, spec.alerting.minRequests);
  let budget: ErrorBudget | undefined;
  if (options.budget) budget = errorBudget(await sliCounts(spans, slo.namespace, spec, nowMs - spec.windowDays * 86_400_000, nowMs), spec.objectivePercent);
  return { pairs, budget };
}

/** The row of a rule's target among RED rows, if it had traffic. */
export async function ruleRow(spans: SpanStore, namespace: string, spec: AlertRuleSpec, fromMs: number, toMs: number): Promise<RedRow | undefined> {
  const t = spec.target;
  if (t.caller !== undefined) {
    const rows = await spans.red({ namespace, group: 'edge', service: t.caller, fromMs, toMs });
    return rows.find((r) => r.service === t.caller && r.peer === t.callee);
  }
  if (t.endpoint !== undefined) {
    const rows = await spans.red({ namespace, group: 'endpoint', service: t.service, fromMs, toMs });
    return rows.find((r) => r.service === t.service && r.endpoint === t.endpoint);
  }
  const rows = await spans.red({ namespace, group: 'service', service: t.service, fromMs, toMs });
  return rows.find((r) => r.service === t.service);
}

/**
 * The rule's figure for one period. Without traffic, counts and rates are 0 (so "rate below 1/s" fires when
 * traffic stops) and latencies are unknown (undefined: no latency is neither above nor below a threshold).
 */
export function ruleValue(spec: AlertRuleSpec, row: RedRow | undefined): number | undefined {
  if (row === undefined || row.count === 0) {
    return spec.metric === 'p50Ms' || spec.metric === 'p95Ms' || spec.metric === 'p99Ms' ? undefined : 0;
  }
  return row[spec.metric];
}

export function breaches(spec: AlertRuleSpec, value: number | undefined): boolean {
  if (value === undefined) return false;
  return spec.op === 'gt' ? value > spec.threshold : value < spec.threshold;
}

export function targetText(spec: AlertRuleSpec): string {
  const t = spec.target;
  if (t.caller !== undefined) return `${t.caller} → ${t.callee}`;
  return t.endpoint !== undefined ? `${t.service} ${t.endpoint}` : String(t.service);
}

/** `p99 812 ms`, `error rate 7.2%`, `rate 0.4/s`, `rejections 52`. */
export function metricText(metric: AlertRuleSpec['metric'], value: number | undefined): string {
  const v = (s: string): string => (value === undefined ? 'no data' : s);
  switch (metric) {
    case 'errorRate':
      return `error rate ${v(`${fmt((value ?? 0) * 100)}%`)}`;
    case 'ratePerSec':
      return `rate ${v(`${fmt(value ?? 0)}/s`)}`;
    case 'rejections':
      return `rejections ${v(fmt(value ?? 0))}`;
    default:
      return `${metric.slice(0, 3)} ${v(`${fmt(value ?? 0)} ms`)}`;
  }
}

function thresholdText(spec: AlertRuleSpec): string {
  switch (spec.metric) {
    case 'errorRate':
      return `${fmt(spec.threshold * 100)}%`;
    case 'ratePerSec':
      return `${spec.threshold}/s`;
    case 'rejections':
      return String(spec.threshold);
    default:
      return `${spec.threshold} ms`;
  }
}

/** `orders POST /orders: p99 812 ms > 500 ms for 3 periods` (firing) or `…: p99 120 ms, within 500 ms` (resolved). */
export function describeRule(spec: AlertRuleSpec, value: number | undefined, firing: boolean): string {
  const head = `${targetText(spec)}: ${metricText(spec.metric, value)}`;
  if (!firing) return `${head}, ${spec.op === 'gt' ? 'not above' : 'not below'} ${thresholdText(spec)}`;
  const held = spec.forPeriods > 1 ? ` for ${spec.forPeriods} periods` : '';
  return `${head} ${spec.op === 'gt' ? '>' : '<'} ${thresholdText(spec)}${held}`;
}
