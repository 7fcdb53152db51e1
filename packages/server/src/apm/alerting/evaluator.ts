import type { Logger } from 'pino';
import type { AlertRuleSpec, AlertSeverity, NotifyTarget, SloSpec } from '@plinth/core';
import type { AlertEvent, Attributes, SpanStore } from '../types.js';
import { describePair, firingBySeverity, fmt } from './burn-rate.js';
import { breaches, describeRule, measureSlo, ruleRow, ruleValue } from './measure.js';
import type { AlertResources, Named } from './resources.js';
import type { Notifier } from './webhook.js';

export interface Clock {
  now(): number;
}

export const EVALUATOR_JOB = 'alert-evaluator';

export interface AlertEvaluatorOptions {
  resources: AlertResources;
  spans: SpanStore;
  notifier: Notifier;
  log: Logger;
  clock?: Clock;
  /** Default 30000. */
  intervalMs?: number;
  /**
   * Spans reach the rollups a little after they end (exporter batches, aggregate flushes); an AlertRule's
   * period is judged this long after it closes, so a half-filled minute does not read as a traffic drop.
   * Default 15000.
   */
  settleMs?: number;
}

/** One alert: an Slo at one severity (its pairs of that severity OR-ed, as the workbook does) or an AlertRule. */
interface AlertState {
  namespace: string;
  source: string;
  severity: AlertSeverity;
  firing: boolean;
  sinceMs: number;
  summary: string;
  /** atMs of the newest event applied. */
  lastEventMs: number;
  /** The current firing was not notified (silence): its resolve is not notified either. */
  silenced: boolean;
  /** When a firing of this alert was last notified; silence counts from here. */
  lastNotifiedMs: number | undefined;
  /** The receivers of the definition last seen, to notify a resolve after the definition is gone. */
  targets: readonly NotifyTarget[];
}

export interface FiringAlert {
  namespace: string;
  source: string;
  severity: AlertSeverity;
  summary: string;
  sinceMs: number;
  silenced: boolean;
}

interface Verdict {
  key: string;
  namespace: string;
  source: string;
  severity: AlertSeverity;
  breaching: boolean;
  summary: string;
  details: Attributes;
  targets: readonly NotifyTarget[];
  silenceMs: number;
}

const RECENT_SYNC_OVERLAP_MS = 5 * 60_000;
const RECOVER_PER_SOURCE = 20;

function keyOf(namespace: string, source: string, severity: string): string {
  return `${namespace}\u0000${source}\u0000${severity}`;
}

/** An event whose notification was attempted (delivered or failed), as opposed to `silenced` / `none`. */
function notified(outcome: string): boolean {
  return outcome === 'delivered' || outcome.startsWith('failed');
}

/**
 * Evaluates every Slo (multi-window burn rates) and AlertRule (thresholds held for some periods) on an
 * interval. Each run holds the span store's `alert-evaluator` job lock, so with several servers one of
 * them evaluates at a time; alert state lives in memory but every transition is appended to the alert
 * history, and each run first applies the events other servers (or this one before a restart) wrote, so a
 * firing alert is neither notified twice nor forgotten. Notifications go out on transitions only, and a
 * run waits for its deliveries before it releases the lock, so the history it leaves is complete.
 */
export class AlertEvaluator {
  private readonly states = new Map<string, AlertState>();
  /** Rule figures of closed periods, by rule revision and period end: a rule held for 10 periods reads one new period per run. */
  private periodCache = new Map<string, number | undefined>();
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private readonly settleMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<boolean> | undefined;
  private syncedToMs: number | undefined;
  /** Runs completed and runs that failed (logged). */
  evaluations = 0;
  failures = 0;

  constructor(private readonly o: AlertEvaluatorOptions) {
    this.clock = o.clock ?? { now: () => Date.now() };
    this.intervalMs = o.intervalMs ?? 30_000;
    this.settleMs = o.settleMs ?? 15_000;
  }

  /** Recovers the firing set from the alert history, then evaluates every interval. */
  static async start(o: AlertEvaluatorOptions): Promise<AlertEvaluator> {
    const e = new AlertEvaluator(o);
    await e.recover();
    e.start();
    return e;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      // A run slower than the interval is not stacked: the next tick finds it running and skips.
      if (this.running) return;
      void this.evaluateOnce().catch(() => {});
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  /**
   * Rebuilds alert state from the history: the newest events of every current Slo and AlertRule, and the
   * newest events overall (alerts of since-deleted definitions, to resolve them).
   */
  async recover(): Promise<void> {
    const now = this.clock.now();
    const batches: Promise<AlertEvent[]>[] = [this.o.spans.alertEvents({ limit: 1000 })];
    for (const kind of ['Slo', 'AlertRule'] as const) {
      for (const r of await this.o.resources.list(kind)) {
        batches.push(this.o.spans.alertEvents({ namespace: r.namespace, source: `${kind}/${r.name}`, limit: RECOVER_PER_SOURCE }));
      }
    }
    this.applyEvents((await Promise.all(batches)).flat());
    this.syncedToMs = now;
  }

  /** Alerts firing now, as this server knows them (the history is the cross-server truth). */
  firing(namespace?: string): FiringAlert[] {
    const out: FiringAlert[] = [];
    for (const s of this.states.values()) {
      if (!s.firing || (namespace !== undefined && s.namespace !== namespace)) continue;
      out.push({ namespace: s.namespace, source: s.source, severity: s.severity, summary: s.summary, sinceMs: s.sinceMs, silenced: s.silenced });
    }
    return out.sort((a, b) => a.sinceMs - b.sinceMs);
  }

  /** One evaluation of everything at `nowMs`. False when another server held the job. */
  evaluateOnce(nowMs: number = this.clock.now()): Promise<boolean> {
    const run = (async () => {
      try {
        const ran = await this.o.spans.exclusive(EVALUATOR_JOB, () => this.run(nowMs));
        if (ran) this.evaluations++;
        return ran;
      } catch (e) {
        this.failures++;
        this.o.log.warn({ err: e }, 'alert evaluation failed; retrying next interval');
        throw e;
      } finally {
        this.running = undefined;
      }
    })();
    this.running = run;
    return run;
  }

  private async run(now: number): Promise<void> {
    await this.sync(now);
    const verdicts: Verdict[] = [];
    /** Definitions that exist, judged or not: one whose figures could not be read keeps its state. */
    const defined = new Set<string>();
    const nextCache = new Map<string, number | undefined>();

    for (const slo of await this.o.resources.list('Slo')) {
      const source = `Slo/${slo.name}`;
      for (const a of slo.spec.alerting.burnRates) defined.add(keyOf(slo.namespace, source, a.severity));
      try {
        verdicts.push(...(await this.judgeSlo(slo, now)));
      } catch (e) {
        this.o.log.warn({ err: e, slo: `${slo.namespace}/${slo.name}` }, 'Slo not evaluated');
      }
    }
    for (const rule of await this.o.resources.list('AlertRule')) {
      defined.add(keyOf(rule.namespace, `AlertRule/${rule.name}`, rule.spec.severity));
      try {
        verdicts.push(await this.judgeRule(rule, now, nextCache));
      } catch (e) {
        this.o.log.warn({ err: e, rule: `${rule.namespace}/${rule.name}` }, 'AlertRule not evaluated');
      }
    }
    this.periodCache = nextCache;

    const deliveries: Promise<void>[] = [];
    for (const v of verdicts) {
      const d = this.transition(v, now);
      if (d) deliveries.push(d);
    }
    for (const [key, s] of this.states) {
      if (!s.firing || defined.has(key)) continue;
      // Deleted, or its severity changed: nobody will judge this alert again, so it ends here.
      const d = this.transition(
        { key, namespace: s.namespace, source: s.source, severity: s.severity, breaching: false, summary: `${s.source} no longer defines this alert`, details: { reason: 'undefined' }, targets: s.targets, silenceMs: 0 },
        now,
      );
      if (d) deliveries.push(d);
    }
    await Promise.all(deliveries);
  }

  private async judgeSlo(slo: Named<SloSpec>, now: number): Promise<Verdict[]> {
    const { pairs } = await measureSlo(this.o.spans, slo, now);
    const source = `Slo/${slo.name}`;
    const out: Verdict[] = [];
    for (const [severity, hit] of firingBySeverity(pairs)) {
      const mine = pairs.filter((p) => p.alert.severity === severity);
      const details: Attributes = { objectivePercent: slo.spec.objectivePercent, indicator: slo.spec.indicator, service: slo.spec.target.service };
      if (slo.spec.target.endpoint !== undefined) details.endpoint = slo.spec.target.endpoint;
      if (slo.spec.target.journey) details.journey = slo.spec.target.journey.name;
      for (const p of mine) {
        const w = `${p.alert.longWindow}/${p.alert.shortWindow}`;
        details[`burn.${p.alert.longWindow}`] = round(p.long.burnRate);
        details[`burn.${p.alert.shortWindow}`] = round(p.short.burnRate);
        details[`threshold.${w}`] = p.alert.burnRate;
      }
      if (hit) {
        details.window = `${hit.alert.longWindow}/${hit.alert.shortWindow}`;
        details.bad = hit.long.counts.bad;
        details.total = hit.long.counts.total;
      }
      const summary = hit
        ? describePair(hit)
        : `burn under thresholds: ${mine.map((p) => `${p.alert.longWindow}/${p.alert.shortWindow} ${fmt(p.long.burnRate)}x/${fmt(p.short.burnRate)}x < ${p.alert.burnRate}x`).join(', ')}`;
      out.push({
        key: keyOf(slo.namespace, source, severity),
        namespace: slo.namespace,
        source,
        severity,
        breaching: hit !== undefined,
        summary,
        details,
        targets: slo.spec.notify,
        silenceMs: 0,
      });
    }
    return out;
  }

  /** Breaching when each of the last `forPeriods` closed periods breaches: one good period resolves it. */
  private async judgeRule(rule: Named<AlertRuleSpec>, now: number, nextCache: Map<string, number | undefined>): Promise<Verdict> {
    const spec = rule.spec;
    const periodMs = spec.periodSec * 1000;
    const lastEnd = Math.floor((now - this.settleMs) / periodMs) * periodMs;
    const values: (number | undefined)[] = [];
    for (let i = 0; i < spec.forPeriods; i++) {
      const end = lastEnd - i * periodMs;
      const ck = `${rule.namespace}/${rule.name}@${rule.revision}:${end}`;
      let v: number | undefined;
      if (this.periodCache.has(ck)) v = this.periodCache.get(ck);
      else v = ruleValue(spec, await ruleRow(this.o.spans, rule.namespace, spec, end - periodMs, end));
      nextCache.set(ck, v);
      values.push(v);
      // An older period cannot make the rule breach once a newer one does not.
      if (!breaches(spec, v)) break;
    }
    const latest = values[0];
    const breaching = values.length === spec.forPeriods && values.every((v) => breaches(spec, v));
    const details: Attributes = { metric: spec.metric, op: spec.op, threshold: spec.threshold, periodSec: spec.periodSec, forPeriods: spec.forPeriods, periodEnd: new Date(lastEnd).toISOString() };
    if (latest !== undefined) details.value = round(latest);
    const source = `AlertRule/${rule.name}`;
    return {
      key: keyOf(rule.namespace, source, spec.severity),
      namespace: rule.namespace,
      source,
      severity: spec.severity,
      breaching,
      summary: describeRule(spec, latest, breaching),
      details,
      targets: spec.notify,
      silenceMs: spec.silenceSec * 1000,
    };
  }

  /** Applies one verdict; returns the delivery (and history append) it started, if any. */
  private transition(v: Verdict, now: number): Promise<void> | undefined {
    const s = this.states.get(v.key);
    if (s) s.targets = v.targets;
    if (v.breaching && !s?.firing) {
      const silenced = v.silenceMs > 0 && s?.lastNotifiedMs !== undefined && now - s.lastNotifiedMs < v.silenceMs;
      const next: AlertState = {
        namespace: v.namespace,
        source: v.source,
        severity: v.severity,
        firing: true,
        sinceMs: now,
        summary: v.summary,
        lastEventMs: now,
        silenced,
        lastNotifiedMs: s?.lastNotifiedMs,
        targets: v.targets,
      };
      if (!silenced && v.targets.length > 0) next.lastNotifiedMs = now;
      this.states.set(v.key, next);
      return this.record(v, 'firing', now, silenced ? 'silenced' : undefined);
    }
    if (!v.breaching && s?.firing) {
      s.firing = false;
      s.summary = v.summary;
      s.lastEventMs = now;
      const wasSilenced = s.silenced;
      s.silenced = false;
      // The receiver never heard of a silenced firing; telling it that it ended would only confuse.
      return this.record(v, 'resolved', now, wasSilenced ? 'silenced' : undefined);
    }
    if (v.breaching && s?.firing && s.silenced && now >= (s.lastNotifiedMs ?? 0) + v.silenceMs) {
      // Silence is over and the alert still fires: the receiver hears of it now.
      s.silenced = false;
      s.summary = v.summary;
      s.lastEventMs = now;
      if (v.targets.length > 0) s.lastNotifiedMs = now;
      return this.record({ ...v, details: { ...v.details, afterSilence: true } }, 'firing', now, undefined);
    }
    if (s?.firing) s.summary = v.summary;
    return undefined;
  }

  private async record(v: Verdict, state: 'firing' | 'resolved', now: number, fixedOutcome: string | undefined): Promise<void> {
    const notification =
      fixedOutcome ??
      (await this.o.notifier.notify({ status: state, source: v.source, namespace: v.namespace, severity: v.severity, summary: v.summary, details: v.details, atMs: now }, v.targets));
    const event: AlertEvent = { namespace: v.namespace, source: v.source, state, summary: v.summary, severity: v.severity, atMs: now, notification, details: v.details };
    try {
      await this.o.spans.appendAlertEvent(event);
    } catch (e) {
      this.o.log.error({ err: e, source: v.source, namespace: v.namespace, state }, 'alert transition not recorded in the history');
    }
    this.o.log.info({ source: v.source, namespace: v.namespace, severity: v.severity, state, notification }, v.summary);
  }

  /** Applies history written since the last look (by another server, or by this one before a restart). */
  private async sync(now: number): Promise<void> {
    if (this.syncedToMs === undefined) {
      await this.recover();
      return;
    }
    const events = await this.o.spans.alertEvents({ fromMs: this.syncedToMs - RECENT_SYNC_OVERLAP_MS, limit: 1000 });
    this.applyEvents(events);
    this.syncedToMs = now;
  }

  private applyEvents(events: AlertEvent[]): void {
    const sorted = [...events].sort((a, b) => a.atMs - b.atMs);
    for (const e of sorted) {
      const key = keyOf(e.namespace, e.source, e.severity);
      let s = this.states.get(key);
      if (s && e.atMs < s.lastEventMs) continue;
      if (!s) {
        s = { namespace: e.namespace, source: e.source, severity: e.severity, firing: false, sinceMs: e.atMs, summary: e.summary, lastEventMs: e.atMs, silenced: false, lastNotifiedMs: undefined, targets: [] };
        this.states.set(key, s);
      }
      if (e.state === 'firing') {
        if (!s.firing) s.sinceMs = e.atMs;
        s.firing = true;
        s.silenced = e.notification === 'silenced';
        if (notified(e.notification)) s.lastNotifiedMs = Math.max(s.lastNotifiedMs ?? 0, e.atMs);
      } else {
        s.firing = false;
        s.silenced = false;
      }
      s.summary = e.summary;
      s.lastEventMs = e.atMs;
    }
  }
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
