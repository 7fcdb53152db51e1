/**
 * Observability kinds: Slo and AlertRule.
 *
 * An Slo states what users may expect (availability or latency, as a percentage of requests over a window
 * of days) and alerts on how fast the error budget burns, with the SRE workbook's multi-window,
 * multi-burn-rate pairs (chapter 5, "Alerting on SLOs"): a pair fires only while both its long window
 * (significance) and its short window (still happening) burn at least the given rate, so a spike that ended
 * pages nobody and a recovered service stops paging within minutes.
 *
 * An AlertRule is a plain threshold over the RED figures (rate, errors, duration) of a service, an endpoint
 * or a caller → callee edge, for signals an SLO does not cover (traffic dropping to zero, rejections).
 *
 * Both notify webhooks. The schemas are pure (no clock, no I/O); the control plane's alerting evaluates them.
 */
import { z } from 'zod';
import { dnsName } from './common.js';
import { HTTP_METHODS, headerName } from './governance.js';

type Ctx = z.core.$RefinementCtx;

function issue(ctx: Ctx, path: PropertyKey[], message: string): void {
  ctx.addIssue({ code: 'custom', path, message });
}

// ---------------------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------------------

const HTTP_METHOD_WORD = new RegExp(`^(${HTTP_METHODS.join('|')})\\s`, 'i');

/**
 * An endpoint as spans name it: `METHOD /route` for HTTP (the route template, `GET /orders/:id`, never a raw
 * URL), otherwise the server span's name (`orders.OrderService/Create`). Text that starts like an HTTP
 * method must be the HTTP form, so `post /checkout` or `POST checkout` is caught rather than never matching.
 */
export const endpointRef = z
  .string()
  .min(1)
  .max(1024)
  .regex(/^\S(.*\S)?$/, 'expected no leading or trailing spaces')
  .refine((e) => !HTTP_METHOD_WORD.test(e) || new RegExp(`^(${HTTP_METHODS.join('|')}) /\\S*$`).test(e), {
    message: 'expected "METHOD /route" with an upper-case method, e.g. "POST /checkout"',
  });

/** A window: minutes, hours or days (`5m`, `1h`, `3d`). Minutes are the finest: figures roll up by minute. */
export const windowDuration = z.string().regex(/^[1-9]\d{0,4}[mhd]$/, 'expected a duration such as "5m", "1h" or "3d"');

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `"5m"` → 300000. Only for strings that passed `windowDuration`. */
export function windowMs(w: string): number {
  return Number(w.slice(0, -1)) * UNIT_MS[w.slice(-1) as keyof typeof UNIT_MS];
}

export const ALERT_SEVERITIES = ['page', 'ticket', 'info'] as const;
export type AlertSeverity = (typeof ALERT_SEVERITIES)[number];

/** The header that carries the HMAC-SHA256 signature of a webhook body, when the webhook has a secretRef. */
export const WEBHOOK_SIGNATURE_HEADER = 'x-plinth-signature';
/** The header with the unix time (seconds) the signature covers, so a receiver can refuse replays. */
export const WEBHOOK_TIMESTAMP_HEADER = 'x-plinth-timestamp';
const RESERVED_WEBHOOK_HEADERS = new Set(['content-type', 'content-length', 'host', WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER]);

/**
 * A URL that receives a POST of the alert as JSON. With `secretRef`, the body is signed:
 * `x-plinth-signature: sha256=<hex HMAC-SHA256(secret, "<x-plinth-timestamp>.<body>")>`.
 */
export const Webhook = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' }).max(2048),
  /** Extra request headers, e.g. an Authorization a receiver wants. Stored in the resource: put secrets in secretRef. */
  headers: z
    .record(headerName, z.string().max(4096))
    .superRefine((h, ctx) => {
      for (const k of Object.keys(h)) if (RESERVED_WEBHOOK_HEADERS.has(k.toLowerCase())) issue(ctx, [k], 'set by Plinth; remove it');
    })
    .optional(),
  /** A key of a Secret in the resource's own namespace: the HMAC signing key. */
  secretRef: z
    .strictObject({
      name: dnsName,
      key: z.string().min(1).max(253).regex(/^[-._a-zA-Z0-9]+$/, "expected letters, digits, '-', '_' or '.'"),
    })
    .optional(),
});
export type Webhook = z.infer<typeof Webhook>;

export const NotifyTarget = z.strictObject({ webhook: Webhook });
export type NotifyTarget = z.infer<typeof NotifyTarget>;

const notifyList = z.array(NotifyTarget).max(16).default([]);

// ---------------------------------------------------------------------------------------------------------
// Slo
// ---------------------------------------------------------------------------------------------------------

/**
 * What an SLO measures: a service's server spans, one endpoint of it, or a business journey — a named set of
 * its endpoints counted as one (`checkout` = `POST /checkout` + `POST /payments`). A journey is measured
 * where users meet it, at the service that serves those endpoints (the gateway or BFF).
 */
export const SloTarget = z
  .strictObject({
    service: dnsName,
    endpoint: endpointRef.optional(),
    journey: z
      .strictObject({
        name: dnsName,
        endpoints: z.array(endpointRef).min(1).max(64),
      })
      .superRefine((j, ctx) => {
        const seen = new Set<string>();
        j.endpoints.forEach((e, i) => {
          if (seen.has(e)) issue(ctx, ['endpoints', i], `duplicate endpoint ${JSON.stringify(e)}`);
          seen.add(e);
        });
      })
      .optional(),
  })
  .superRefine((t, ctx) => {
    if (t.endpoint !== undefined && t.journey !== undefined) issue(ctx, ['journey'], 'only one of endpoint or journey');
  });
export type SloTarget = z.infer<typeof SloTarget>;

/** One multi-window alert: fires while the burn rate over both windows is at least `burnRate`. */
export const BurnRateAlert = z
  .strictObject({
    longWindow: windowDuration,
    /** The workbook's choice is 1/12 of the long window: long enough to be stable, short enough to reset fast. */
    shortWindow: windowDuration,
    /** Multiples of the sustainable rate: 1 spends the budget exactly over the SLO window. */
    burnRate: z.number().positive().max(10_000),
    severity: z.enum(ALERT_SEVERITIES),
  })
  .superRefine((a, ctx) => {
    if (windowMs(a.shortWindow) >= windowMs(a.longWindow)) issue(ctx, ['shortWindow'], `must be shorter than longWindow (${a.longWindow})`);
  });
export type BurnRateAlert = z.infer<typeof BurnRateAlert>;

/**
 * The SRE workbook's pairs for a 30-day window: 2% of the budget in 1 hour and 5% in 6 hours page, 10% in a
 * day files a ticket.
 */
export const DEFAULT_BURN_RATE_ALERTS: readonly BurnRateAlert[] = [
  { longWindow: '1h', shortWindow: '5m', burnRate: 14.4, severity: 'page' },
  { longWindow: '6h', shortWindow: '30m', burnRate: 6, severity: 'page' },
  { longWindow: '24h', shortWindow: '2h', burnRate: 3, severity: 'ticket' },
];

export const SLO_INDICATORS = ['availability', 'latency'] as const;

/** Kind Slo: a service level objective with burn-rate alerts. */
export const SloSpec = z
  .strictObject({
    description: z.string().max(1024).optional(),
    target: SloTarget,
    /** availability: bad = error status or HTTP 5xx. latency: bad = slower than thresholdMs. */
    indicator: z.enum(SLO_INDICATORS),
    /** latency only (required there). */
    thresholdMs: z.number().positive().max(600_000).optional(),
    /** Share of good requests promised, e.g. 99.9. */
    objectivePercent: z.number().gt(50).lt(100),
    /** At most 35: the APM keeps minute rollups for 35 days by default, and a longer window would undercount. */
    windowDays: z.int().min(1).max(35).default(30),
    alerting: z
      .strictObject({
        burnRates: z
          .array(BurnRateAlert)
          .max(16)
          .default(() => DEFAULT_BURN_RATE_ALERTS.map((a) => ({ ...a }))),
        /**
         * A pair fires only when its long window holds at least this many requests. For low-traffic targets,
         * where one failure in a quiet hour is a burn of hundreds (the workbook's "low-traffic services"
         * case). 0, the default, guards nothing: a rarely used service still pages when it fails.
         */
        minRequests: z.int().min(0).max(1_000_000_000).default(0),
      })
      .default(() => ({ burnRates: DEFAULT_BURN_RATE_ALERTS.map((a) => ({ ...a })), minRequests: 0 })),
    notify: notifyList,
  })
  .superRefine((s, ctx) => {
    if (s.indicator === 'latency' && s.thresholdMs === undefined) issue(ctx, ['thresholdMs'], 'required when indicator is latency');
    if (s.indicator !== 'latency' && s.thresholdMs !== undefined) issue(ctx, ['thresholdMs'], 'only allowed when indicator is latency');
    // Every request bad burns at 1 / (1 - objective); a higher threshold is an alert that can never fire.
    const maxBurn = 100 / (100 - s.objectivePercent);
    const seen = new Set<string>();
    s.alerting.burnRates.forEach((a, i) => {
      const path = ['alerting', 'burnRates', i];
      if (windowMs(a.longWindow) > s.windowDays * UNIT_MS.d) issue(ctx, [...path, 'longWindow'], `must not exceed windowDays (${s.windowDays}d)`);
      // Range errors do not stop refinements: judge reachability only against a valid objective.
      if (s.objectivePercent > 50 && s.objectivePercent < 100 && a.burnRate > maxBurn) {
        issue(
          ctx,
          [...path, 'burnRate'],
          `${a.burnRate}x can never be reached at objectivePercent ${s.objectivePercent} (at most ${round(maxBurn)}x, every request bad); lower it or give alerting.burnRates for this objective`,
        );
      }
      const k = `${a.longWindow}/${a.shortWindow}`;
      if (seen.has(k)) issue(ctx, [...path, 'longWindow'], `duplicate window pair ${k}`);
      seen.add(k);
    });
  });
export type SloSpec = z.infer<typeof SloSpec>;

function round(n: number): number {
  return Math.floor(n * 100) / 100;
}

// ---------------------------------------------------------------------------------------------------------
// AlertRule
// ---------------------------------------------------------------------------------------------------------

/**
 * A service (its server spans), one of its endpoints, or an edge: the client spans of `caller` calling
 * `callee` (a service, or a database or partner API as spans name it: `postgresql`, `redis`, `api.example.com`).
 */
export const AlertTarget = z
  .strictObject({
    service: dnsName.optional(),
    endpoint: endpointRef.optional(),
    caller: dnsName.optional(),
    callee: z.string().min(1).max(253).optional(),
  })
  .superRefine((t, ctx) => {
    const edge = t.caller !== undefined || t.callee !== undefined;
    if (t.service === undefined && !edge) return issue(ctx, [], 'expected service (with an optional endpoint), or caller and callee');
    if (t.service !== undefined && t.caller !== undefined) issue(ctx, ['caller'], 'only one of service or caller');
    if (t.service !== undefined && t.callee !== undefined) issue(ctx, ['callee'], 'only one of service or callee; an edge is caller and callee');
    if (t.service === undefined && edge) {
      if (t.caller === undefined) issue(ctx, ['caller'], 'required with callee');
      if (t.callee === undefined) issue(ctx, ['callee'], 'required with caller');
      if (t.endpoint !== undefined) issue(ctx, ['endpoint'], 'only allowed with service');
    }
  });
export type AlertTarget = z.infer<typeof AlertTarget>;

/** RED figures an AlertRule can watch; the threshold is in the figure's unit. */
export const ALERT_METRICS = ['errorRate', 'p50Ms', 'p95Ms', 'p99Ms', 'ratePerSec', 'rejections'] as const;
export type AlertMetric = (typeof ALERT_METRICS)[number];

/** Kind AlertRule: a threshold over RED figures, held for some evaluation periods. */
export const AlertRuleSpec = z
  .strictObject({
    description: z.string().max(1024).optional(),
    target: AlertTarget,
    /** errorRate is a fraction (0.05 = 5%); rejections counts 429/503 answers per period. */
    metric: z.enum(ALERT_METRICS),
    op: z.enum(['gt', 'lt']),
    threshold: z.number().min(0).max(1_000_000_000),
    /** Evaluation window; figures roll up by minute, so whole minutes. */
    periodSec: z
      .int()
      .min(60)
      .max(86_400)
      .refine((p) => p < 60 || p % 60 === 0, { message: 'expected whole minutes (a multiple of 60)' })
      .default(60),
    /** Consecutive breaching periods before the alert fires. */
    forPeriods: z.int().min(1).max(1440).default(1),
    /** No new notification within this long after the last one; an alert that is still firing is notified when it ends. */
    silenceSec: z.int().min(0).max(7 * 86_400).default(300),
    severity: z.enum(ALERT_SEVERITIES).default('ticket'),
    notify: notifyList,
  })
  .superRefine((r, ctx) => {
    if (r.metric === 'errorRate' && r.threshold > 1) issue(ctx, ['threshold'], 'errorRate is a fraction: at most 1 (0.05 is 5%)');
    if (r.op === 'lt' && r.threshold === 0) issue(ctx, ['threshold'], 'no figure is below 0; the rule could never fire');
    if (r.op === 'gt' && r.metric === 'errorRate' && r.threshold === 1) issue(ctx, ['threshold'], 'no error rate is above 1; the rule could never fire');
  });
export type AlertRuleSpec = z.infer<typeof AlertRuleSpec>;
