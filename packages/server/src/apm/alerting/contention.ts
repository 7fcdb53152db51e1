/**
 * Shared-capability contention: a service that many others call synchronously (a "shared capability" of
 * the middle platform: user profile, pricing, inventory) promises its consumers a latency budget
 * (Service.spec.latencyBudgetMs, p99). When a consumer sees it slower than that, or rejected, the shared
 * service has become the consumer's bottleneck — and the fix is usually on the consumer's side.
 */
import type { RedRow, SpanStore, TimeRange } from '../types.js';
import { fmt } from './burn-rate.js';
import type { AlertResources } from './resources.js';

export interface ContentionQuery extends TimeRange {
  namespace: string;
}

export interface ConsumerContention {
  /** The calling service (client spans' service). */
  consumer: string;
  count: number;
  errors: number;
  ratePerSec: number;
  p99Ms: number;
  /** Calls answered 429 or 503: rate limits, breakers, overload. */
  rejections: number;
  /** p99 as this consumer sees it exceeds the shared service's budget. */
  overBudget: boolean;
  /** What to do about it; absent when the consumer is within budget and not rejected. */
  advice?: string;
}

export interface SharedServiceContention {
  service: string;
  team: string;
  latencyBudgetMs: number;
  /** Worst first: over budget, then by p99. */
  consumers: ConsumerContention[];
  /** Some consumer sees it over budget. */
  overBudget: boolean;
}

export interface ContentionReport extends ContentionQuery {
  services: SharedServiceContention[];
}

export interface ContentionDeps {
  resources: AlertResources;
  spans: SpanStore;
}

export async function contentionReport(deps: ContentionDeps, q: ContentionQuery): Promise<ContentionReport> {
  const services: SharedServiceContention[] = [];
  for (const svc of await deps.resources.list('Service', q.namespace)) {
    const budget = svc.spec.latencyBudgetMs;
    if (budget === undefined) continue;
    const rows = await deps.spans.red({ namespace: q.namespace, group: 'edge', service: svc.name, fromMs: q.fromMs, toMs: q.toMs });
    // Edge rows for a service are its calls out and in; contention is about the calls in.
    const consumers = rows.filter((r) => r.peer === svc.name && r.service !== svc.name).map((r) => consumerOf(svc.name, budget, r));
    consumers.sort((a, b) => Number(b.overBudget) - Number(a.overBudget) || b.p99Ms - a.p99Ms || (a.consumer < b.consumer ? -1 : 1));
    services.push({ service: svc.name, team: svc.spec.team, latencyBudgetMs: budget, consumers, overBudget: consumers.some((c) => c.overBudget) });
  }
  return { namespace: q.namespace, fromMs: q.fromMs, toMs: q.toMs, services };
}

function consumerOf(service: string, budgetMs: number, r: RedRow): ConsumerContention {
  const overBudget = r.p99Ms > budgetMs;
  const c: ConsumerContention = {
    consumer: r.service,
    count: r.count,
    errors: r.errors,
    ratePerSec: r.ratePerSec,
    p99Ms: r.p99Ms,
    rejections: r.rejections,
    overBudget,
  };
  const rejected = r.rejections > 0 ? `${r.rejections} of its ${r.count} calls were rejected (429/503)` : '';
  if (overBudget) {
    c.advice =
      `${r.service} waits on ${service} synchronously at ${fmt(r.ratePerSec)}/s with p99 ${fmt(r.p99Ms)} ms, over the ${budgetMs} ms budget${rejected ? `, and ${rejected}` : ''}: ` +
      `take a local implementation of what it needs, cache ${service}'s answers, or move the call off the request path (async, an event or a queue) instead of a synchronous call to the shared service.`;
  } else if (rejected) {
    c.advice = `${service} is within its latency budget for ${r.service}, but ${rejected}: cache its answers or smooth the call rate (batching, async) rather than calling the shared service at peak.`;
  }
  return c;
}
