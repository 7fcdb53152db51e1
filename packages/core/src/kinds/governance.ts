/**
 * Governance kinds: FaultTolerance, TrafficPolicy and FaultInjection.
 *
 * They follow OpenSergo's fault-tolerance, traffic-routing and traffic-lane specs (v1alpha1): a rule binds
 * *targets* (which requests) to *strategies* (what to do) and an optional *fallback action* (what to answer
 * when a strategy blocks). OpenSergo keeps each strategy in its own CR and links them by name; Plinth inlines
 * them in one resource, so a rule and its strategies change in one revision and the data plane never sees a
 * rule whose strategy is missing. docs/governance.md maps every field to OpenSergo's name.
 *
 * Conditional fields (warmUp needs warmUpPeriodSec, consistentHash needs a hashKey, ...) are checked here
 * with `superRefine` rather than by splitting every option into a union, so an error names the missing field
 * itself (`spec.rules[0].strategies[0].warmUpPeriodSec`) instead of "no union member matched".
 *
 * The schemas are pure: no clock, no I/O. In particular FaultInjection's `expiresAt` may lie in the past
 * (history and rollback re-validate old specs); the data plane ignores an expired experiment.
 */
import { z } from 'zod';
import { dnsName, percent, stringMap } from './common.js';
import { Subject } from './identity.js';

type Ctx = z.core.$RefinementCtx;

function issue(ctx: Ctx, path: PropertyKey[], message: string): void {
  ctx.addIssue({ code: 'custom', path, message });
}

/** Reports every repeat of a key at `path(i)`, so the second `name: a` is the one flagged. */
function unique<T>(items: readonly T[], key: (t: T) => string, ctx: Ctx, path: (i: number) => PropertyKey[], what: string): void {
  const seen = new Set<string>();
  items.forEach((item, i) => {
    const k = key(item);
    if (seen.has(k)) issue(ctx, path(i), `duplicate ${what} ${JSON.stringify(k)}`);
    seen.add(k);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------------------

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/** An HTTP field name (RFC 9110 token). Matching is case-insensitive, as HTTP itself is. */
export const headerName = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'expected an HTTP header name');

/** A cookie name (RFC 6265 token). */
export const cookieName = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'expected a cookie name');

/** An endpoint path pattern: `/orders`, `/orders/*` (one segment) or `/orders/**` (any suffix). */
export const endpointPattern = z
  .string()
  .min(1)
  .max(1024)
  .regex(/^\/[^\s?#]*$/, "expected a path starting with '/' (no query or fragment)");

/** An HTTP status (`503`) or a status class (`"5xx"`): which responses count as failures or are retried. */
export const statusMatcher = z.union([z.int().min(100).max(599), z.string().regex(/^[1-5]xx$/, 'expected a status code or a class such as "5xx"')]);
export type StatusMatcher = z.infer<typeof statusMatcher>;

/** OpenSergo's StringMatch: exactly one of exact, prefix or regex (a JavaScript regular expression). */
export const StringMatch = z
  .strictObject({
    exact: z.string().max(4096).optional(),
    prefix: z.string().max(4096).optional(),
    regex: z.string().min(1).max(512).optional(),
  })
  .superRefine((m, ctx) => {
    const set = [m.exact, m.prefix, m.regex].filter((v) => v !== undefined).length;
    if (set !== 1) issue(ctx, [], 'expected exactly one of exact, prefix or regex');
    if (m.regex !== undefined) {
      try {
        new RegExp(m.regex);
      } catch {
        issue(ctx, ['regex'], 'not a valid regular expression');
      }
    }
  });
export type StringMatch = z.infer<typeof StringMatch>;

/**
 * Which requests: calls *into* `service`, optionally only some endpoints, methods and callers. Inbound
 * strategies are enforced by the service itself, outbound ones (breaker, retry, timeout, bulkhead) by its
 * callers; either way the target names the callee, so one rule reads the same from both sides.
 * OpenSergo's `targetResourceName` is one endpoint of one service.
 */
export const Target = z.strictObject({
  service: dnsName,
  /** Absent: every endpoint. */
  endpoints: z.array(endpointPattern).min(1).max(64).optional(),
  /** Absent: every method. */
  methods: z.array(z.enum(HTTP_METHODS)).min(1).max(HTTP_METHODS.length).optional(),
  /** Calling services (by their registered name). Absent: every caller, including untracked edge traffic. */
  callers: z.array(dnsName).min(1).max(256).optional(),
});
export type Target = z.infer<typeof Target>;

/** Conditions on a request; all given conditions must hold. OpenSergo's HttpRequestMatch. */
export const RequestMatch = z.strictObject({
  headers: z.record(headerName, StringMatch).optional(),
  cookies: z.record(cookieName, StringMatch).optional(),
  path: StringMatch.optional(),
  methods: z.array(z.enum(HTTP_METHODS)).min(1).max(HTTP_METHODS.length).optional(),
});
export type RequestMatch = z.infer<typeof RequestMatch>;

// ---------------------------------------------------------------------------------------------------------
// FaultTolerance: targets × strategies × fallback action
// ---------------------------------------------------------------------------------------------------------

export const RATE_LIMIT_BEHAVIORS = ['reject', 'warmUp', 'throttle'] as const;
export const LIMIT_MODES = ['local', 'global', 'globalToLocal'] as const;
export const CALLER_KEY_SOURCES = ['header', 'ip', 'identity'] as const;

/**
 * Request-amount limit (OpenSergo RateLimitStrategy + ThrottlingStrategy; Sentinel's flow rule behaviours).
 * Enforced by the callee on inbound requests.
 */
export const RateLimitStrategy = z
  .strictObject({
    type: z.literal('rateLimit'),
    /** Requests allowed per `statDurationSec` (per caller when `key` is set). */
    threshold: z.number().positive().max(1_000_000_000),
    statDurationSec: z.int().min(1).max(86_400).default(1),
    /**
     * local: each instance counts alone. global: one cluster-wide quota in Redis. globalToLocal: the
     * threshold is divided by the number of live instances and counted locally (no Redis).
     */
    limitMode: z.enum(LIMIT_MODES).default('local'),
    /** reject: answer 429 at once. warmUp: ramp the rate up from threshold/coldFactor. throttle: queue to an even pace. */
    behavior: z.enum(RATE_LIMIT_BEHAVIORS).default('reject'),
    /** warmUp only (required there): seconds to ramp from cold to the full threshold. */
    warmUpPeriodSec: z.int().min(1).max(3600).optional(),
    /** warmUp only: the cold rate is threshold / coldFactor (Sentinel's default 3 when absent). */
    coldFactor: z.number().min(2).max(10).optional(),
    /** throttle only (required there): longest a request may wait for its slot before it is rejected. */
    maxQueueingTimeMs: z.int().min(1).max(60_000).optional(),
    /** Per-caller buckets; absent means one bucket for all callers. */
    key: z
      .strictObject({
        source: z.enum(CALLER_KEY_SOURCES),
        /** header only (required there): the header whose value identifies the caller. */
        header: headerName.optional(),
      })
      .optional(),
    /** global only: how the Redis quota behaves when Redis is slow or down. */
    cluster: z
      .strictObject({
        /** A Redis answer slower than this counts as a failure and the fallback decides. */
        redisTimeoutMs: z.int().min(1).max(1000).default(20),
        /** local: fall back to threshold / live instances counted locally. allow: let all pass. reject: block all. */
        fallback: z.enum(['local', 'allow', 'reject']).default('local'),
      })
      .optional(),
  })
  .superRefine((s, ctx) => {
    if (s.behavior === 'warmUp' && s.warmUpPeriodSec === undefined) issue(ctx, ['warmUpPeriodSec'], 'required when behavior is warmUp');
    if (s.behavior !== 'warmUp' && s.warmUpPeriodSec !== undefined) issue(ctx, ['warmUpPeriodSec'], 'only allowed when behavior is warmUp');
    if (s.behavior !== 'warmUp' && s.coldFactor !== undefined) issue(ctx, ['coldFactor'], 'only allowed when behavior is warmUp');
    if (s.behavior === 'throttle' && s.maxQueueingTimeMs === undefined) issue(ctx, ['maxQueueingTimeMs'], 'required when behavior is throttle');
    if (s.behavior !== 'throttle' && s.maxQueueingTimeMs !== undefined) issue(ctx, ['maxQueueingTimeMs'], 'only allowed when behavior is throttle');
    if (s.key?.source === 'header' && s.key.header === undefined) issue(ctx, ['key', 'header'], 'required when source is header');
    if (s.key && s.key.source !== 'header' && s.key.header !== undefined) issue(ctx, ['key', 'header'], 'only allowed when source is header');
    if (s.cluster && s.limitMode !== 'global') issue(ctx, ['cluster'], 'only allowed when limitMode is global');
  });
export type RateLimitStrategy = z.infer<typeof RateLimitStrategy>;

/**
 * In-flight limit (OpenSergo ConcurrencyLimitStrategy). inbound: the callee caps concurrent handling.
 * outbound: each caller caps its concurrent calls to the target (a bulkhead), so one slow callee cannot
 * take every socket and handler of its callers.
 */
export const ConcurrencyLimitStrategy = z.strictObject({
  type: z.literal('concurrencyLimit'),
  maxConcurrency: z.int().min(1).max(1_000_000),
  /** Requests that may wait for a slot; 0 rejects at once when full. */
  maxQueue: z.int().min(0).max(1_000_000).default(0),
  /** Longest wait in the queue before rejection. */
  queueTimeoutMs: z.int().min(1).max(60_000).default(1000),
  side: z.enum(['inbound', 'outbound']).default('inbound'),
});
export type ConcurrencyLimitStrategy = z.infer<typeof ConcurrencyLimitStrategy>;

/**
 * Instance-wide overload protection (OpenSergo AdaptiveOverloadProtectionStrategy). It guards the whole
 * instance; targets only choose which services run it. eventLoopDelayMs is the signal that matters for
 * Node (CPU can be low while the loop is blocked); cpuPercentage is OpenSergo's CpuPercentage.
 */
export const AdaptiveOverloadStrategy = z
  .strictObject({
    type: z.literal('adaptiveOverload'),
    metricType: z.enum(['eventLoopDelayMs', 'cpuPercentage']).default('eventLoopDelayMs'),
    /** Above this value requests are shed. Milliseconds of p99 loop delay, or CPU percent. */
    triggerThreshold: z.number().positive(),
    /** bbr: admit by the measured max throughput × min latency (Little's law). none: shed all above the threshold. */
    adaptiveStrategy: z.enum(['bbr', 'none']).default('bbr'),
  })
  .superRefine((s, ctx) => {
    const max = s.metricType === 'cpuPercentage' ? 100 : 10_000;
    if (s.triggerThreshold > max) issue(ctx, ['triggerThreshold'], `at most ${max} for ${s.metricType}`);
  });
export type AdaptiveOverloadStrategy = z.infer<typeof AdaptiveOverloadStrategy>;

export const BREAKER_STRATEGIES = ['errorRatio', 'slowRequestRatio', 'consecutiveFailures'] as const;

/** Time window (sliding, over durationMs) or count window (the last `size` calls). */
export const StatWindow = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('time'), durationMs: z.int().min(100).max(3_600_000).default(10_000) }),
  z.strictObject({ type: z.literal('count'), size: z.int().min(1).max(10_000).default(100) }),
]);
export type StatWindow = z.infer<typeof StatWindow>;

/** OpenSergo CircuitBreakerStrategy, enforced by callers on outbound calls to the target. */
export const CircuitBreakerStrategy = z
  .strictObject({
    type: z.literal('circuitBreaker'),
    strategy: z.enum(BREAKER_STRATEGIES).default('errorRatio'),
    /** Percent (0–100] of failed or slow calls for the ratio strategies; a count (≥ 1) for consecutiveFailures. */
    threshold: z.number().positive(),
    /** slowRequestRatio only (required there): a call slower than this is slow (OpenSergo maxAllowedRt). */
    slowThresholdMs: z.int().min(1).max(600_000).optional(),
    /** Fewer calls than this in the window never trip the breaker (one failure out of one is not a trend). */
    minRequestAmount: z.int().min(1).max(100_000).default(5),
    window: StatWindow.default({ type: 'time', durationMs: 10_000 }),
    /** How long the breaker stays open before it lets probes through (half-open). */
    recoveryTimeoutMs: z.int().min(100).max(3_600_000).default(5000),
    /** Probe calls allowed while half-open; all must succeed to close again. */
    halfOpenProbes: z.int().min(1).max(100).default(1),
    /** Responses that count as failures; transport errors and timeouts always do. 4xx are the caller's fault and do not. */
    failureStatuses: z.array(statusMatcher).min(1).max(64).default(['5xx']),
    /** instance: one breaker per upstream instance, feeding outlier ejection. service: one for the whole callee. */
    scope: z.enum(['instance', 'service']).default('instance'),
    /** Operator override: open (fail fast), closed (always pass), disabled (pass and stop counting). */
    forcedState: z.enum(['open', 'closed', 'disabled']).optional(),
  })
  .superRefine((s, ctx) => {
    if (s.strategy === 'consecutiveFailures') {
      if (!Number.isInteger(s.threshold) || s.threshold > 100_000) issue(ctx, ['threshold'], 'expected a whole number of failures, at most 100000');
    } else if (s.threshold > 100) issue(ctx, ['threshold'], `expected a percentage (at most 100) for ${s.strategy}`);
    if (s.strategy === 'slowRequestRatio' && s.slowThresholdMs === undefined) issue(ctx, ['slowThresholdMs'], 'required when strategy is slowRequestRatio');
    if (s.strategy !== 'slowRequestRatio' && s.slowThresholdMs !== undefined) issue(ctx, ['slowThresholdMs'], 'only allowed when strategy is slowRequestRatio');
    // A count window smaller than the minimum volume could never trip: almost certainly a mistake.
    if (s.window.type === 'count' && s.minRequestAmount > s.window.size) {
      issue(ctx, ['minRequestAmount'], `exceeds window.size (${s.window.size}); the breaker could never open`);
    }
  });
export type CircuitBreakerStrategy = z.infer<typeof CircuitBreakerStrategy>;

/**
 * Retries with exponential backoff and full jitter (sleep = random(0, min(cap, base × 2^n))), enforced by
 * callers. Only idempotent methods or requests carrying Idempotency-Key are retried; Retry-After is honoured.
 * The budget caps retries at budgetPercent of recent requests (plus minRetriesPerSecond so low-traffic
 * callers can still retry), so retries cannot multiply the load on a callee that is already down.
 */
export const RetryStrategy = z
  .strictObject({
    type: z.literal('retry'),
    /** Total tries, the first included. */
    maxAttempts: z.int().min(1).max(10).default(3),
    backoffBaseMs: z.int().min(1).max(60_000).default(25),
    backoffCapMs: z.int().min(1).max(300_000).default(1000),
    /** Responses worth retrying; transport errors before a response are always retried. */
    retryOn: z.array(statusMatcher).min(1).max(64).default([502, 503, 504]),
    budgetPercent: percent.default(20),
    minRetriesPerSecond: z.int().min(0).max(100_000).default(10),
  })
  .superRefine((s, ctx) => {
    if (s.backoffCapMs < s.backoffBaseMs) issue(ctx, ['backoffCapMs'], `must be at least backoffBaseMs (${s.backoffBaseMs})`);
  });
export type RetryStrategy = z.infer<typeof RetryStrategy>;

/** Per-try timeout, enforced by callers; the propagated deadline may make it shorter, never longer. */
export const TimeoutStrategy = z.strictObject({
  type: z.literal('timeout'),
  timeoutMs: z.int().min(1).max(600_000),
});
export type TimeoutStrategy = z.infer<typeof TimeoutStrategy>;

export const Strategy = z.discriminatedUnion('type', [
  RateLimitStrategy,
  ConcurrencyLimitStrategy,
  AdaptiveOverloadStrategy,
  CircuitBreakerStrategy,
  RetryStrategy,
  TimeoutStrategy,
]);
export type Strategy = z.infer<typeof Strategy>;
export type StrategyType = Strategy['type'];

/**
 * What a blocked request gets instead (OpenSergo HttpRequestFallbackAction, behavior
 * ReturnProvidedResponse): a static response served while a limit rejects or a breaker is open. Without
 * one, Plinth answers with its defaults: 429 + Retry-After for limits, 503 for open breakers and overload,
 * as application/problem+json.
 */
export const FallbackAction = z.strictObject({
  statusCode: z.int().min(200).max(599),
  body: z.string().max(64 * 1024).default(''),
  contentType: z.string().min(1).max(256).default('text/plain; charset=utf-8'),
  headers: z.record(headerName, z.string().max(4096)).default({}),
});
export type FallbackAction = z.infer<typeof FallbackAction>;

export const FaultToleranceRule = z
  .strictObject({
    name: dnsName,
    targets: z.array(Target).min(1).max(64),
    strategies: z.array(Strategy).min(1).max(8),
    fallbackAction: FallbackAction.optional(),
  })
  .superRefine((r, ctx) => {
    // Two rate limits in one rule would race on the same requests; put the second in its own rule.
    unique(r.strategies, (s) => s.type, ctx, (i) => ['strategies', i, 'type'], 'strategy type');
  });
export type FaultToleranceRule = z.infer<typeof FaultToleranceRule>;

/** Kind FaultTolerance: OpenSergo FaultToleranceRule with its strategies and fallback action inlined. */
export const FaultToleranceSpec = z
  .strictObject({
    rules: z.array(FaultToleranceRule).min(1).max(256),
  })
  .superRefine((s, ctx) => unique(s.rules, (r) => r.name, ctx, (i) => ['rules', i, 'name'], 'rule name'));
export type FaultToleranceSpec = z.infer<typeof FaultToleranceSpec>;

// ---------------------------------------------------------------------------------------------------------
// TrafficPolicy: lanes, version routing, load balancing, trusted baggage
// ---------------------------------------------------------------------------------------------------------

/**
 * How traffic enters a lane (OpenSergo TrafficLane `rules.traffic`): every given condition must hold.
 * Evaluated by the first Plinth hop (gateway or SDK inbound) that sees a request without a lane;
 * the lane then rides in baggage `plinth.lane` through the whole call chain.
 */
export const LaneEntryRule = z
  .strictObject({
    match: RequestMatch.optional(),
    /** Sticky share of users: a hash of baggage `user.id` into 10,000 buckets, below percent × 100. */
    userIdHashPercent: percent.optional(),
    /** Random share of the (matching) requests, not sticky. */
    weight: percent.optional(),
  })
  .superRefine((e, ctx) => {
    if (e.match === undefined && e.userIdHashPercent === undefined && e.weight === undefined) {
      issue(ctx, [], 'expected at least one of match, userIdHashPercent or weight');
    }
  });
export type LaneEntryRule = z.infer<typeof LaneEntryRule>;

/** A lane: the services that run lane instances (Instance.spec.lane = name), and how requests get in. */
export const Lane = z.strictObject({
  name: dnsName.refine((n) => n !== 'base', { message: '"base" is the lane of instances without one; choose another name' }),
  services: z.array(dnsName).min(1).max(1024),
  /** fallbackToBase: a callee without lane instances is served by its base lane. strict: the call fails (503). */
  mode: z.enum(['fallbackToBase', 'strict']).default('fallbackToBase'),
  /** First matching rule wins; a request that matches none stays in the base lane. */
  entry: z.array(LaneEntryRule).max(64).default([]),
});
export type Lane = z.infer<typeof Lane>;

/** One share of a version split (OpenSergo RouterRule target → VirtualWorkload with a weight). */
export const RouteSplit = z
  .strictObject({
    /** Instances whose spec.version equals this. */
    version: z.string().min(1).max(128).optional(),
    /** Instances whose metadata contains all of these. */
    labels: stringMap.optional(),
    weight: z.int().min(0).max(100),
  })
  .superRefine((s, ctx) => {
    if (s.version === undefined && Object.keys(s.labels ?? {}).length === 0) issue(ctx, [], 'expected version or labels');
  });
export type RouteSplit = z.infer<typeof RouteSplit>;

/** Version / weight routing for one callee; routes for a service are tried in order, first match wins. */
export const VersionRoute = z
  .strictObject({
    service: dnsName,
    match: RequestMatch.optional(),
    splits: z.array(RouteSplit).min(1).max(16),
  })
  .superRefine((r, ctx) => {
    const sum = r.splits.reduce((a, s) => a + s.weight, 0);
    if (sum !== 100) issue(ctx, ['splits'], `weights must add up to 100 (they add up to ${sum})`);
  });
export type VersionRoute = z.infer<typeof VersionRoute>;

export const LB_POLICIES = ['p2c', 'roundRobin', 'weighted', 'consistentHash', 'zoneAware'] as const;
export type LbPolicy = (typeof LB_POLICIES)[number];

/**
 * Load balancing for one callee, or "*" for every callee without its own entry. p2c (power of two choices
 * on EWMA latency × in-flight) is the default because it routes around slow instances without tuning.
 */
export const LoadBalancing = z
  .strictObject({
    service: z.union([dnsName, z.literal('*')]),
    policy: z.enum(LB_POLICIES).default('p2c'),
    /** consistentHash only (required there): where the key comes from. */
    hashKey: z
      .strictObject({
        source: z.enum(['header', 'cookie', 'baggage', 'ip']),
        /** The header, cookie or baggage key; not for ip. */
        name: z.string().min(1).max(256).optional(),
      })
      .optional(),
    /** zoneAware only: spill to other zones when fewer than this percent of the local zone's instances are healthy (50 when absent). */
    spillOverThresholdPercent: percent.optional(),
  })
  .superRefine((l, ctx) => {
    if (l.policy === 'consistentHash' && l.hashKey === undefined) issue(ctx, ['hashKey'], 'required when policy is consistentHash');
    if (l.policy !== 'consistentHash' && l.hashKey !== undefined) issue(ctx, ['hashKey'], 'only allowed when policy is consistentHash');
    if (l.hashKey && l.hashKey.source !== 'ip' && l.hashKey.name === undefined) issue(ctx, ['hashKey', 'name'], `required when source is ${l.hashKey.source}`);
    if (l.hashKey?.source === 'ip' && l.hashKey.name !== undefined) issue(ctx, ['hashKey', 'name'], 'not allowed when source is ip');
    if (l.policy !== 'zoneAware' && l.spillOverThresholdPercent !== undefined) {
      issue(ctx, ['spillOverThresholdPercent'], 'only allowed when policy is zoneAware');
    }
  });
export type LoadBalancing = z.infer<typeof LoadBalancing>;

/** Internal baggage keys: the ones the edge drops from untrusted clients. */
export const internalBaggageKey = z.string().max(256).regex(/^plinth\.[a-z0-9][a-z0-9._-]*$/, 'expected an internal baggage key such as plinth.stress');

/** Identities whose requests may carry internal baggage (e.g. a load generator setting plinth.stress). */
export const TrustedIdentity = z.strictObject({
  subject: Subject,
  baggageKeys: z.array(internalBaggageKey).min(1).max(32),
});
export type TrustedIdentity = z.infer<typeof TrustedIdentity>;

/** Kind TrafficPolicy: OpenSergo TrafficLane + RouterRule + VirtualWorkload.loadbalance in one resource. */
export const TrafficPolicySpec = z
  .strictObject({
    lanes: z.array(Lane).max(64).default([]),
    routing: z.array(VersionRoute).max(256).default([]),
    loadBalancing: z.array(LoadBalancing).max(1024).default([]),
    trustedIdentities: z.array(TrustedIdentity).max(256).default([]),
  })
  .superRefine((s, ctx) => {
    unique(s.lanes, (l) => l.name, ctx, (i) => ['lanes', i, 'name'], 'lane');
    unique(s.loadBalancing, (l) => l.service, ctx, (i) => ['loadBalancing', i, 'service'], 'service');
  });
export type TrafficPolicySpec = z.infer<typeof TrafficPolicySpec>;

// ---------------------------------------------------------------------------------------------------------
// FaultInjection: chaos experiments
// ---------------------------------------------------------------------------------------------------------

/** Which requests are eligible; all given conditions must hold. "base" names the base lane. */
export const FaultMatch = z.strictObject({
  lanes: z.array(dnsName).min(1).max(64).optional(),
  headers: z.record(headerName, StringMatch).optional(),
});
export type FaultMatch = z.infer<typeof FaultMatch>;

export const FaultDelay = z.strictObject({
  fixedDelayMs: z.int().min(1).max(600_000),
  /** Share of eligible requests delayed. */
  percentage: percent.default(100),
});
export type FaultDelay = z.infer<typeof FaultDelay>;

export const FaultAbort = z.strictObject({
  statusCode: z.int().min(400).max(599),
  /** Share of eligible requests aborted. */
  percentage: percent.default(100),
  body: z.string().max(64 * 1024).optional(),
});
export type FaultAbort = z.infer<typeof FaultAbort>;

/** Injected by the callee's inbound pipeline, before the handler, so callers see a real slow or failing service. */
export const FaultInjectionRule = z
  .strictObject({
    name: dnsName,
    targets: z.array(Target).min(1).max(64),
    match: FaultMatch.optional(),
    delay: FaultDelay.optional(),
    abort: FaultAbort.optional(),
  })
  .superRefine((r, ctx) => {
    if (r.delay === undefined && r.abort === undefined) issue(ctx, [], 'expected delay, abort or both');
  });
export type FaultInjectionRule = z.infer<typeof FaultInjectionRule>;

/** Kind FaultInjection: Istio/OpenSergo-style delay and abort faults, with an end time. */
export const FaultInjectionSpec = z
  .strictObject({
    /** RFC 3339 time after which the experiment stops by itself, even if nobody deletes the resource. */
    expiresAt: z.iso.datetime({ offset: true }).optional(),
    rules: z.array(FaultInjectionRule).min(1).max(64),
  })
  .superRefine((s, ctx) => unique(s.rules, (r) => r.name, ctx, (i) => ['rules', i, 'name'], 'rule name'));
export type FaultInjectionSpec = z.infer<typeof FaultInjectionSpec>;

/** Whether an experiment has ended; the data plane calls this rather than comparing strings. */
export function faultInjectionExpired(spec: Pick<FaultInjectionSpec, 'expiresAt'>, nowMs: number): boolean {
  return spec.expiresAt !== undefined && Date.parse(spec.expiresAt) <= nowMs;
}
