/**
 * Error-budget arithmetic of the SRE workbook (chapter 5, "Alerting on SLOs"). Pure functions: the
 * evaluator and the status API feed them counts from the span store.
 *
 * Objectives arrive as percentages (99.9); the budget is computed as (100 - objective) / 100 once, so every
 * caller rounds the same way.
 */
import { windowMs, type AlertSeverity, type BurnRateAlert } from '@plinth/core';
import type { SliCounts } from '../types.js';

/**
 * Comparisons tolerate floating-point dust: 144 bad of 10 000 at 99.9% is a burn of exactly 14.4 on paper
 * and 14.399999999999999 in binary, and a threshold of 14.4 must fire on it.
 */
const EPSILON = 1e-9;

/** The allowed bad fraction: 0.001 for 99.9. */
export function errorBudgetFraction(objectivePercent: number): number {
  return (100 - objectivePercent) / 100;
}

/** How fast the budget burns: (bad / total) / (1 - objective). 1 spends it exactly over the SLO window; no traffic burns nothing. */
export function burnRate(counts: SliCounts, objectivePercent: number): number {
  if (counts.total <= 0) return 0;
  return counts.bad / counts.total / errorBudgetFraction(objectivePercent);
}

/** `a ≥ b` up to rounding. */
export function atLeast(a: number, b: number): boolean {
  return a >= b - EPSILON * Math.max(1, Math.abs(b));
}

/** The share of the whole SLO window's budget that `rate` spends in `windowMs`: 14.4 for 1 h of 30 days is 0.02. */
export function budgetConsumed(rate: number, windowMsValue: number, sloWindowMs: number): number {
  return (rate * windowMsValue) / sloWindowMs;
}

export interface WindowBurn {
  window: string;
  counts: SliCounts;
  burnRate: number;
}

export interface PairEvaluation {
  alert: BurnRateAlert;
  long: WindowBurn;
  short: WindowBurn;
  /** Both windows burn at least `alert.burnRate`, and the long window holds at least `minRequests` requests. */
  firing: boolean;
  /** The long window holds fewer requests than `minRequests`: the pair cannot fire, whatever it burns. */
  tooFewRequests: boolean;
}

/** Every window an SLO's pairs need, deduplicated, longest first. */
export function windowsOf(alerts: readonly BurnRateAlert[]): string[] {
  const set = new Set<string>();
  for (const a of alerts) {
    set.add(a.longWindow);
    set.add(a.shortWindow);
  }
  return [...set].sort((a, b) => windowMs(b) - windowMs(a));
}

/**
 * Evaluates each pair from counts per window (as `windowsOf` lists them). The long window makes an alert
 * significant, the short one makes it current: a spike that is over stops firing once the short window
 * cools, long before the long window does.
 */
export function evaluatePairs(alerts: readonly BurnRateAlert[], objectivePercent: number, counts: (window: string) => SliCounts, minRequests = 0): PairEvaluation[] {
  return alerts.map((alert) => {
    const burn = (window: string): WindowBurn => {
      const c = counts(window);
      return { window, counts: c, burnRate: burnRate(c, objectivePercent) };
    };
    const long = burn(alert.longWindow);
    const short = burn(alert.shortWindow);
    const tooFewRequests = long.counts.total < minRequests;
    return { alert, long, short, tooFewRequests, firing: !tooFewRequests && atLeast(long.burnRate, alert.burnRate) && atLeast(short.burnRate, alert.burnRate) };
  });
}

/** Per severity: the firing pair that burns hardest (by its long window), or undefined when none fires. */
export function firingBySeverity(pairs: readonly PairEvaluation[]): Map<AlertSeverity, PairEvaluation | undefined> {
  const out = new Map<AlertSeverity, PairEvaluation | undefined>();
  for (const p of pairs) {
    const cur = out.get(p.alert.severity);
    if (!out.has(p.alert.severity)) out.set(p.alert.severity, undefined);
    if (p.firing && (cur === undefined || p.long.burnRate > cur.long.burnRate)) out.set(p.alert.severity, p);
  }
  return out;
}

export interface ErrorBudget {
  /** 1 - (bad / total) / (1 - objective), clamped to [0, 1]: the share of the window's budget left. */
  remaining: number;
  /** The same, unclamped: above 1 when the budget is overspent. */
  consumed: number;
  total: number;
  bad: number;
  /** Bad requests the objective allows for this total. */
  allowedBad: number;
}

export function errorBudget(counts: SliCounts, objectivePercent: number): ErrorBudget {
  const consumed = burnRate(counts, objectivePercent);
  return {
    remaining: Math.min(1, Math.max(0, 1 - consumed)),
    consumed,
    total: counts.total,
    bad: counts.bad,
    allowedBad: counts.total * errorBudgetFraction(objectivePercent),
  };
}

/** `burn 1h/5m 16.2x ≥ 14.4x` (the long window's rate; the short one's is in the details), the summary of an SLO alert. */
export function describePair(p: PairEvaluation): string {
  return `burn ${p.alert.longWindow}/${p.alert.shortWindow} ${fmt(p.long.burnRate)}x ≥ ${p.alert.burnRate}x`;
}

/** 1234, 16.2, 0.056, <0.01: a quiet consumer's 0.006 calls/s must not read as none. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const a = Math.abs(n);
  if (a >= 100) return String(Math.round(n));
  if (a >= 1 || n === 0) return String(Math.round(n * 10) / 10);
  if (a >= 0.01) return String(Number(n.toPrecision(2)));
  return n > 0 ? '<0.01' : '>-0.01';
}
