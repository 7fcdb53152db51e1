import type { FallbackAction, VersionRoute } from '@plinth/core';
import type { Baggage } from '../balancing/baggage.js';
import type { Balancer, PickContext, Random } from '../balancing/balancer.js';
import { ConsistentHashBalancer } from '../balancing/consistent-hash.js';
import { EndpointSet, type Endpoint, type EndpointList } from '../balancing/endpoints.js';
import { OutlierDetector, type OutlierOptions } from '../balancing/outlier.js';
import { P2CBalancer } from '../balancing/p2c.js';
import { RoundRobinBalancer } from '../balancing/round-robin.js';
import { WeightedBalancer } from '../balancing/weighted.js';
import { ZoneAwareBalancer } from '../balancing/zone-aware.js';
import type { GovernanceSource } from '../governance/source.js';
import { CompiledTraffic } from '../governance/traffic.js';
import type { Clock } from '../ratelimit/clock.js';
import type { BreakerState, CircuitBreaker } from '../resilience/breaker.js';
import { Bulkhead } from '../resilience/bulkhead.js';
import { parseRetryAfter, RetryBudget, retryBudgetOptionsOf, RetryPolicy, retryOptionsOf } from '../resilience/retry.js';
import { sharedWheel, type TimerWheel } from '../resilience/timer-wheel.js';
import { BreakerGroup } from './breakers.js';
import { CallError } from './errors.js';
import { hashKeyOf, routeCandidates, type HashKeyOf } from './routing.js';
import { outboundRules, ruleMatches, type OutboundRule } from './rules.js';

/** Per-try timeouts, backoff sleeps and bulkhead queue timeouts all ride this wheel. */
export type Wheel = TimerWheel;

/** Outbound RED metrics and resilience events; see metrics.ts for the prom-client implementation. */
export interface OutboundMetrics {
  request(callee: string, statusClass: string, lane: string, stress: boolean, seconds: number): void;
  retry(callee: string): void;
  ejection(callee: string, endpoint: string): void;
  breakerState(callee: string, upstream: string, state: BreakerState | undefined): void;
}

export interface EngineOptions {
  /** This service's name, matched against targets' `callers`. */
  self: string;
  governance: GovernanceSource;
  /** The caller's zone, for zoneAware balancing. */
  zone?: string | undefined;
  /** Call budget when there is no inherited deadline, no per-call timeout and no timeout rule. Default 30 s. */
  defaultTimeoutMs?: number | undefined;
  /** Must share its time base with `wheel`; defaults to the wheel's clock (monotonic for the shared wheel). */
  clock?: Clock | undefined;
  random?: Random | undefined;
  wheel?: Wheel | undefined;
  metrics?: OutboundMetrics | undefined;
  outlier?: Omit<OutlierOptions, 'clock'> | undefined;
  /** A callee's endpoints changed (the transport closes connections to instances that left). */
  onEndpointsChange?: ((service: string, prev: EndpointSet, next: EndpointSet) => void) | undefined;
}

/** One outbound call as the policy core sees it; transport-independent. */
export interface OutboundCall {
  /** Upper case. */
  readonly method: string;
  /** Without the query string; what targets and routes match. */
  readonly path: string;
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  readonly hasIdempotencyKey: boolean;
  readonly hashKey: string | undefined;
  readonly timeoutMs: number | undefined;
  readonly lane: string | undefined;
  readonly baggage: Baggage | undefined;
  /** Inherited deadline, on the engine's clock. */
  readonly deadlineAt: number | undefined;
  readonly stress: boolean;
  /**
   * False: one try only, whatever the retry rules say (a body that streams through cannot be sent twice).
   * Every other policy and all shared state (breakers, balancer, outlier ejection, retry budget) still
   * apply. Default true.
   */
  readonly retryable?: boolean | undefined;
  /**
   * A body that streams while the tries go on: asked before each retry whether it can still be sent from its
   * start (the gateway keeps a small one's copy). False ends the call with the last try's outcome.
   */
  readonly replay?: { readonly replayable: boolean } | undefined;
  /**
   * This call's own tries and retry statuses, instead of the matching rule's. The backoff and the retry
   * budget stay the callee's (its first retry rule's, else the defaults), so a caller cannot loosen a budget
   * an operator set. Pass the same object for every call that shares it (the engine keeps one policy per
   * object); the gateway passes a route's `retries`.
   */
  readonly retry?: RetryOverride | undefined;
}

/** An OutboundCall with nothing but what is given: no headers, key, timeout, lane, baggage or deadline. */
export function outboundCall(o: Partial<OutboundCall> & Pick<OutboundCall, 'method' | 'path'>): OutboundCall {
  return {
    headers: NO_CALL_HEADERS,
    hasIdempotencyKey: false,
    hashKey: undefined,
    timeoutMs: undefined,
    lane: undefined,
    baggage: undefined,
    deadlineAt: undefined,
    stress: false,
    ...o,
  };
}

const NO_CALL_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/** Tries and statuses for one call; see OutboundCall.retry. */
export interface RetryOverride {
  /** Total tries, the first included. */
  readonly maxAttempts: number;
  /** Statuses worth retrying: codes or classes such as '5xx'. */
  readonly retryOn: readonly (number | string)[];
}

/** One try, handed to the transport. */
export interface TryContext {
  readonly service: string;
  readonly endpoint: Endpoint;
  /** 1 for the first try. */
  readonly attempt: number;
  /** When this try must be abandoned (the call deadline or the per-try timeout, whichever is first). */
  readonly deadlineAt: number | undefined;
  /** What is left of the budget at send time; Infinity when there is none. */
  readonly remainingMs: number;
  /**
   * The engine's clock when the try was sent, which `remainingMs` counts from (the wheel shares that time
   * base: a transport passes it to `wheel.add` instead of reading the clock again). Optional so transports
   * and tests may build a TryContext by hand.
   */
  readonly sentAt?: number | undefined;
}

/** What a transport reports for one try. `status` 0 means no response (a transport error or a timeout). */
export interface TryOutcome<R> {
  readonly status: number;
  readonly retryAfter: string | undefined;
  readonly response: R | undefined;
  readonly error: unknown;
  readonly timedOut: boolean;
  /**
   * The answer's head says it started well, but its outcome comes at its end (a gRPC answer, whose status
   * travels in trailers after the messages): breakers, outlier detection and the balancer's feedback wait
   * for `EngineResult.late.settle`. Such a try is never retried (its head is a success).
   */
  readonly healthAtEnd?: boolean | undefined;
}

/** The health of a call's answer, reported once it has ended (TryOutcome.healthAtEnd). */
export interface LateHealth {
  /**
   * Once, when the answer ended: its status as HTTP would say it (a gRPC status mapped, 0 for an upstream that
   * cut the answer off), or undefined when the answer was not seen to its end (the client left), which
   * judges nothing.
   */
  settle(status: number | undefined): void;
}

export type Send<R> = (t: TryContext) => Promise<TryOutcome<R>>;

/** `Send` with the per-call state as an argument, so a caller need not allocate a closure per call. */
export type SendWith<R, A> = (t: TryContext, arg: A) => Promise<TryOutcome<R>>;

/** Where a callback transport reports a try. */
export interface TryReceiver<R> {
  tryDone(out: TryOutcome<R>): void;
}

/**
 * A transport that reports the try to `receiver` instead of returning a promise: no promise, no await per
 * try (the SDK's own HTTP client). It must report exactly once, and never throw (a transport error is an
 * outcome with status 0). It may report synchronously.
 */
export type SendCallback<R, A> = (t: TryContext, arg: A, receiver: TryReceiver<R>) => void;

const callSend = <R>(t: TryContext, send: Send<R>): Promise<TryOutcome<R>> => send(t);

function errorOutcome<R>(error: unknown): TryOutcome<R> {
  return { status: 0, retryAfter: undefined, response: undefined, error, timedOut: false };
}

// A promise's settle functions without an executor closure per call: the executor runs synchronously.
let capturedResolve: ((v: never) => void) | undefined;
let capturedReject: ((e: unknown) => void) | undefined;
function captureSettle(resolve: (v: never) => void, reject: (e: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

export type EngineResult<R> =
  | { readonly kind: 'response'; readonly response: R; readonly status: number; readonly endpoint: Endpoint; readonly attempts: number; readonly late: LateHealth | undefined }
  | { readonly kind: 'fallback'; readonly action: FallbackAction; readonly reason: 'circuit_open' | 'bulkhead_full'; readonly attempts: number };

/** The strategies that govern one call: per strategy type, the first matching rule's. */
interface Plan {
  readonly instanceBreaker: BreakerGroup | undefined;
  readonly serviceBreaker: BreakerGroup | undefined;
  readonly retry: RetryPolicy | undefined;
  readonly timeoutMs: number | undefined;
  readonly bulkhead: Bulkhead | undefined;
  readonly bulkheadFallback: FallbackAction | undefined;
}

const EMPTY_PLAN: Plan = {
  instanceBreaker: undefined,
  serviceBreaker: undefined,
  retry: undefined,
  timeoutMs: undefined,
  bulkhead: undefined,
  bulkheadFallback: undefined,
};

interface RuleEntry {
  readonly rule: OutboundRule;
  readonly breaker: BreakerGroup | undefined;
  readonly retry: RetryPolicy | undefined;
  readonly bulkhead: Bulkhead | undefined;
}

interface Kept<T> {
  readonly json: string;
  readonly value: T;
}

const defaultFailure = (status: number): boolean => status >= 500;

function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'error';
}

/**
 * Per-callee state that outlives snapshots: the outlier detector, the balancer, breakers, bulkheads and the
 * retry budget. `refresh` reconciles it with a new governance version, keeping what did not change.
 */
class Callee {
  version = -1;
  set: EndpointSet = EndpointSet.empty;
  traffic: CompiledTraffic = CompiledTraffic.empty;
  routes: readonly VersionRoute[] = [];
  readonly detector: OutlierDetector;
  balancer: Balancer;
  private lbJson = '';
  hashKey: HashKeyOf = () => undefined;
  private entries: RuleEntry[] = [];
  /** The plan of every call when no rule narrows by method or path; else computed per call. */
  private fixedPlan: Plan | undefined = EMPTY_PLAN;
  budget: RetryBudget | undefined;
  private budgetJson = '';
  /** The callee's first retry rule: its backoff shapes per-call overrides too. */
  private firstRetry: OutboundRule['retry'];
  /** One policy per override object, bound to the current budget. */
  private overrides = new WeakMap<RetryOverride, RetryPolicy>();
  private readonly groups = new Map<string, BreakerGroup>();
  private readonly bulkheads = new Map<string, Bulkhead>();
  private readonly retries = new Map<string, Kept<RetryPolicy>>();
  /** Scratch for picks: picks are synchronous, so one object per callee is enough. */
  readonly pickCtx: PickContext = { hashKey: undefined };
  pickedBreaker: CircuitBreaker | undefined;

  constructor(
    readonly service: string,
    private readonly e: OutboundEngine,
  ) {
    this.detector = new OutlierDetector({ ...e.outlierOptions, clock: e.clock });
    this.balancer = new P2CBalancer({ clock: e.clock, random: e.random, ejections: this.detector });
  }

  /** The policy of a per-call override: its tries and statuses, the callee's backoff and budget. */
  retryFor(o: RetryOverride): RetryPolicy {
    let p = this.overrides.get(o);
    if (p === undefined) {
      // A callee no retry rule speaks of gets the default budget, counted from now on for all its calls.
      if (this.budget === undefined) {
        this.budget = new RetryBudget({}, this.e.clock);
        this.overrides = new WeakMap();
      }
      const shape = this.firstRetry;
      const backoff = shape === undefined ? {} : { backoffBaseMs: shape.backoffBaseMs, backoffCapMs: shape.backoffCapMs };
      p = new RetryPolicy({ maxAttempts: o.maxAttempts, retryOn: o.retryOn, ...backoff }, this.budget, this.e.random);
      this.overrides.set(o, p);
    }
    return p;
  }

  refresh(version: number, traffic: CompiledTraffic, rules: readonly OutboundRule[]): void {
    const e = this.e;
    this.version = version;
    this.traffic = traffic;
    this.routes = traffic.routesFor(this.service);

    const set = e.governance.endpoints(this.service);
    const prev = this.set;
    if (set !== prev) {
      this.set = set;
      this.detector.retain(set);
      this.balancer.retain?.(set);
      for (const g of this.groups.values()) g.retain(set);
      e.onEndpointsChange?.(this.service, prev, set);
    }

    const lb = traffic.loadBalancingFor(this.service);
    const lbJson = JSON.stringify(lb);
    if (lbJson !== this.lbJson) {
      this.lbJson = lbJson;
      this.balancer = this.makeBalancer(lb.policy, lb.spillOverThresholdPercent);
      this.balancer.retain?.(set);
      this.hashKey = hashKeyOf(lb);
    }

    // One budget per callee, shaped by its first retry rule: retries of every rule draw from it.
    const firstRetry = rules.find((r) => r.retry !== undefined)?.retry;
    const budgetOpts = firstRetry ? retryBudgetOptionsOf(firstRetry) : undefined;
    const budgetJson = budgetOpts ? JSON.stringify(budgetOpts) : '';
    if (budgetJson !== this.budgetJson) {
      this.budgetJson = budgetJson;
      this.budget = budgetOpts ? new RetryBudget(budgetOpts, e.clock) : undefined;
      this.retries.clear(); // policies hold the old budget
    }
    if (JSON.stringify(firstRetry) !== JSON.stringify(this.firstRetry)) this.overrides = new WeakMap();
    this.firstRetry = firstRetry;

    const seenGroups = new Set<string>();
    const seenBulkheads = new Set<string>();
    const seenRetries = new Set<string>();
    const entries: RuleEntry[] = [];
    for (const rule of rules) {
      let breaker: BreakerGroup | undefined;
      if (rule.breaker) {
        const key = `${rule.key}#${rule.breaker.scope ?? 'instance'}`;
        seenGroups.add(key);
        breaker = this.groups.get(key);
        if (breaker) breaker.update(rule.breaker, rule.fallback);
        else this.groups.set(key, (breaker = new BreakerGroup(rule.key, rule.breaker, rule.fallback, e.clock, this.breakerHooks())));
      }
      let retry: RetryPolicy | undefined;
      if (rule.retry) {
        seenRetries.add(rule.key);
        const json = JSON.stringify(rule.retry);
        let kept = this.retries.get(rule.key);
        if (kept?.json !== json) this.retries.set(rule.key, (kept = { json, value: new RetryPolicy(retryOptionsOf(rule.retry), this.budget, e.random) }));
        retry = kept.value;
      }
      let bulkhead: Bulkhead | undefined;
      if (rule.bulkhead) {
        seenBulkheads.add(rule.key);
        const b = rule.bulkhead;
        const opts = { maxConcurrency: b.maxConcurrency, maxQueue: b.maxQueue, queueTimeoutMs: b.queueTimeoutMs };
        bulkhead = this.bulkheads.get(rule.key);
        // Resized in place: calls in flight keep their slots and release them into the new limits.
        if (bulkhead) bulkhead.reconfigure(opts);
        else this.bulkheads.set(rule.key, (bulkhead = new Bulkhead(opts, e.wheel)));
      }
      entries.push({ rule, breaker, retry, bulkhead });
    }
    for (const [k, g] of this.groups)
      if (!seenGroups.has(k)) {
        g.dispose();
        this.groups.delete(k);
      }
    for (const k of this.bulkheads.keys()) if (!seenBulkheads.has(k)) this.bulkheads.delete(k);
    for (const k of this.retries.keys()) if (!seenRetries.has(k)) this.retries.delete(k);
    this.entries = entries;
    this.fixedPlan = entries.every((en) => en.rule.unconditional) ? this.computePlan('', '') : undefined;
  }

  plan(method: string, path: string): Plan {
    return this.fixedPlan ?? this.computePlan(method, path);
  }

  private computePlan(method: string, path: string): Plan {
    if (this.entries.length === 0) return EMPTY_PLAN;
    let instanceBreaker: BreakerGroup | undefined;
    let serviceBreaker: BreakerGroup | undefined;
    let retry: RetryPolicy | undefined;
    let timeoutMs: number | undefined;
    let bulkhead: Bulkhead | undefined;
    let bulkheadFallback: FallbackAction | undefined;
    const self = this.e.self;
    for (const en of this.entries) {
      if (!ruleMatches(en.rule, method, path, self)) continue;
      if (en.breaker) {
        if (en.breaker.scope === 'service') serviceBreaker ??= en.breaker;
        else instanceBreaker ??= en.breaker;
      }
      retry ??= en.retry;
      if (en.rule.timeoutMs !== undefined) timeoutMs = timeoutMs === undefined ? en.rule.timeoutMs : Math.min(timeoutMs, en.rule.timeoutMs);
      if (bulkhead === undefined && en.bulkhead) {
        bulkhead = en.bulkhead;
        bulkheadFallback = en.rule.fallback;
      }
    }
    return { instanceBreaker, serviceBreaker, retry, timeoutMs, bulkhead, bulkheadFallback };
  }

  /**
   * An endpoint for the next try, and its instance breaker's permit (left in `pickedBreaker`). Ejected
   * endpoints are skipped by the balancer; endpoints whose breaker refuses (open, or half-open with its
   * probes taken) and, on a retry, the endpoint that just failed are skipped here. Undefined: every
   * candidate's breaker is open.
   */
  pick(list: EndpointList, hashKey: string | undefined, avoid: Endpoint | undefined, group: BreakerGroup | undefined, now: number): Endpoint | undefined {
    this.pickedBreaker = undefined;
    const ctx = this.pickCtx;
    ctx.hashKey = hashKey;
    ctx.now = now;
    let ep = this.balancer.pick(list, ctx);
    if (ep === undefined) return undefined;
    if (avoid !== undefined && ep.id === avoid.id && list.size > 1) {
      const again = this.balancer.pick(list, ctx);
      ep = again !== undefined && again.id !== avoid.id ? again : (this.scan(list, ep, avoid, undefined, now) ?? ep);
    }
    if (group === undefined) return ep;
    const b = group.forInstance(ep.id);
    if (b.tryAcquire(now)) {
      this.pickedBreaker = b;
      return ep;
    }
    const other = this.scan(list, ep, avoid, group, now);
    if (other !== undefined) return other;
    // The only admitting endpoint may be the one that just failed: better it than nothing.
    if (avoid !== undefined && avoid.id !== ep.id && this.set.has(avoid.id)) {
      const ab = group.forInstance(avoid.id);
      if (ab.tryAcquire(now)) {
        this.pickedBreaker = ab;
        return avoid;
      }
    }
    return undefined;
  }

  /** The next endpoint after `from` in list order that is neither ejected nor `avoid` and, with a group, admits a call. */
  private scan(list: EndpointList, from: Endpoint, avoid: Endpoint | undefined, group: BreakerGroup | undefined, now: number): Endpoint | undefined {
    const items = list.items;
    const n = items.length;
    const start = items.indexOf(from);
    for (let pass = 0; pass < 2; pass++) {
      // First pass honours ejection, the second ignores it (all ejected: panic, as the balancers do).
      for (let k = 1; k < n; k++) {
        const ep = items[(start + k) % n];
        if (ep === undefined || ep.id === from.id || (avoid !== undefined && ep.id === avoid.id)) continue;
        if (pass === 0 && this.detector.activeEjections > 0 && this.detector.isEjected(ep.id, now)) continue;
        if (group === undefined) return ep;
        const b = group.forInstance(ep.id);
        if (b.tryAcquire(now)) {
          this.pickedBreaker = b;
          return ep;
        }
      }
    }
    return undefined;
  }

  /** The soonest an instance breaker of the group lets a call through again. */
  soonestRetry(list: EndpointList, group: BreakerGroup, now: number): number {
    let min = Infinity;
    for (const ep of list.items) min = Math.min(min, group.forInstance(ep.id).retryAfterMs(now));
    return Number.isFinite(min) ? min : 0;
  }

  breakerGroups(): IterableIterator<BreakerGroup> {
    return this.groups.values();
  }

  private breakerHooks() {
    const e = this.e;
    const service = this.service;
    return {
      onInstanceOpen: (id: string) => {
        if (this.detector.ejectNow(id)) e.metrics?.ejection(service, id);
      },
      onInstanceClosed: (id: string) => this.detector.onBreakerStateChange(id, 'closed'),
      onState: (upstream: string, state: BreakerState) => e.metrics?.breakerState(service, upstream, state),
      onDrop: (upstream: string) => e.metrics?.breakerState(service, upstream, undefined),
    };
  }

  private makeBalancer(policy: string, spillOver: number | undefined): Balancer {
    const e = this.e;
    const base = { clock: e.clock, ejections: this.detector };
    switch (policy) {
      case 'roundRobin':
        return new RoundRobinBalancer({ ...base, random: e.random });
      case 'weighted':
        return new WeightedBalancer(base);
      case 'consistentHash':
        return new ConsistentHashBalancer({ ...base, fallback: new P2CBalancer({ ...base, random: e.random }) });
      case 'zoneAware':
        return new ZoneAwareBalancer({
          ...base,
          localZone: e.zone,
          inner: new P2CBalancer({ ...base, random: e.random }),
          maxEjectedFraction: 1 - (spillOver ?? 50) / 100,
        });
      default:
        return new P2CBalancer({ ...base, random: e.random });
    }
  }
}

export interface BreakerInfo {
  readonly rule: string;
  readonly scope: 'instance' | 'service';
  /** Instance id, or `*` for a service-scope breaker. */
  readonly upstream: string;
  readonly state: BreakerState;
}

export interface CalleeInfo {
  readonly governanceVersion: number;
  readonly endpoints: number;
  readonly breakers: readonly BreakerInfo[];
  readonly ejected: readonly string[];
}

/**
 * The outbound policy core: route, pick, breakers, bulkhead, deadline, retry and fallback around a transport
 * given per call. It knows nothing about HTTP, so the gateway drives the same engine with its own transport.
 *
 * Static stability: it only ever reads the governance source's last snapshot, compiled lazily on the first
 * call after a version change (one number compare per call otherwise). Without a control plane, calls keep
 * routing on what was last seen.
 */
export class OutboundEngine {
  readonly self: string;
  readonly governance: GovernanceSource;
  readonly zone: string | undefined;
  readonly defaultTimeoutMs: number;
  readonly clock: Clock;
  readonly random: Random;
  readonly wheel: Wheel;
  readonly metrics: OutboundMetrics | undefined;
  readonly outlierOptions: Omit<OutlierOptions, 'clock'>;
  readonly onEndpointsChange: EngineOptions['onEndpointsChange'];
  private version = -1;
  private traffic = CompiledTraffic.empty;
  private rules = new Map<string, OutboundRule[]>();
  private readonly callees = new Map<string, Callee>();
  /** The callee of the last call: a service name compare instead of a Map lookup when calls repeat. */
  private lastCallee: Callee | undefined;

  constructor(o: EngineOptions) {
    this.self = o.self;
    this.governance = o.governance;
    this.zone = o.zone;
    this.defaultTimeoutMs = o.defaultTimeoutMs ?? 30_000;
    this.wheel = o.wheel ?? sharedWheel;
    this.clock = o.clock ?? this.wheel.clock;
    this.random = o.random ?? Math.random;
    this.metrics = o.metrics;
    this.outlierOptions = o.outlier ?? {};
    this.onEndpointsChange = o.onEndpointsChange;
  }

  /** @internal The callee's state, reconciled with the current governance version. */
  callee(service: string): Callee {
    const v = this.governance.version;
    const lc = this.lastCallee;
    if (lc !== undefined && lc.service === service && lc.version === v && v === this.version) return lc;
    if (v !== this.version) {
      // Version first: a change landing while we read is picked up by the next call.
      this.version = v;
      this.traffic = new CompiledTraffic(this.governance.trafficPolicies());
      this.rules = outboundRules(this.governance.faultTolerance(), this.self);
    }
    let c = this.callees.get(service);
    if (c === undefined) this.callees.set(service, (c = new Callee(service, this)));
    if (c.version !== this.version) c.refresh(this.version, this.traffic, this.rules.get(service) ?? []);
    this.lastCallee = c;
    return c;
  }

  /** Runs one call through the policies; `send` performs one try. Throws CallError; never rejects otherwise. */
  call<R>(service: string, call: OutboundCall, send: Send<R>): Promise<EngineResult<R>> {
    return this.callWith(service, call, callSend<R>, send);
  }

  /** `call`, with `send(t, arg)` for each try: a caller with per-call state passes it as `arg` instead of a closure. */
  callWith<R, A>(service: string, call: OutboundCall, send: SendWith<R, A>, arg: A): Promise<EngineResult<R>> {
    return this.start<R, A, EngineResult<R>>(service, call, send, arg, undefined);
  }

  /**
   * `call` over a callback transport, resolving with `map(result)`: one promise per call whatever the
   * number of tries, and no await between the transport and the caller (each would cost a microtask turn
   * and a promise). What the SDK's own HTTP client uses.
   */
  dispatch<R, A, T>(service: string, call: OutboundCall, send: SendCallback<R, A>, arg: A, map: (r: EngineResult<R>) => T): Promise<T> {
    return this.start<R, A, T>(service, call, send, arg, map);
  }

  private start<R, A, T>(
    service: string,
    call: OutboundCall,
    send: SendCallback<R, A> | SendWith<R, A>,
    arg: A,
    map: ((r: EngineResult<R>) => T) | undefined,
  ): Promise<T> {
    const promise = new Promise<T>(captureSettle);
    const run = new CallRun<R, A, T>(this, service, call, send, arg, map, capturedResolve as (v: T) => void, capturedReject!, this.clock.now());
    capturedResolve = capturedReject = undefined;
    run.begin();
    return promise;
  }

  /** @internal */
  finish<R>(service: string, out: TryOutcome<R>, ep: Endpoint, attempts: number, late?: LateHealth): EngineResult<R> {
    if (out.status !== 0 && out.response !== undefined) return { kind: 'response', response: out.response, status: out.status, endpoint: ep, attempts, late };
    if (out.timedOut) throw new CallError('deadline_exceeded', service, `call to ${service} (${ep.id}) timed out after ${attempts} tr${attempts === 1 ? 'y' : 'ies'}`, { cause: out.error });
    const why = out.error instanceof Error ? out.error.message : String(out.error);
    throw new CallError('upstream_error', service, `call to ${service} (${ep.id}) failed after ${attempts} tr${attempts === 1 ? 'y' : 'ies'}: ${why}`, { cause: out.error });
  }

  /** @internal */
  blocked<R>(service: string, reason: 'circuit_open' | 'bulkhead_full', fallback: FallbackAction | undefined, retryAfterMs: number | undefined, attempts: number): EngineResult<R> {
    if (fallback !== undefined) return { kind: 'fallback', action: fallback, reason, attempts };
    const what = reason === 'circuit_open' ? 'circuit open' : 'outbound concurrency limit reached';
    throw new CallError(reason, service, `call to ${service}: ${what}`, { retryAfterMs });
  }

  /** Breakers and ejections of one callee, for the console and tests (allocates). */
  inspect(service: string): CalleeInfo {
    const c = this.callee(service);
    const breakers: BreakerInfo[] = [];
    for (const g of c.breakerGroups()) for (const [upstream, b] of g.entries()) breakers.push({ rule: g.ruleKey, scope: g.scope, upstream, state: b.state });
    return { governanceVersion: c.version, endpoints: c.set.size, breakers, ejected: c.detector.ejectedIds() };
  }
}

/**
 * One call in flight: the policy loop of `OutboundEngine` as a state machine (route, then per try: service
 * breaker, pick with instance breaker, bulkhead, per-try deadline, send; feedback to balancer, outlier
 * detector and breakers; retry under the budget, or finish). Written as callbacks rather than an async
 * function so that a call costs one promise and one object, however many layers it crosses.
 *
 * The clock is read once before the first try and once after each (a read costs about 60 ns, the largest
 * fixed cost of a call): every policy that needs the time is handed that reading. It is read again only
 * after a wait that can be long (a bulkhead queue, a backoff sleep).
 *
 * Every entry point (begin, a try's report, the end of a wait) catches: whatever throws, a CallError or a
 * bug, rejects the call's promise instead of escaping into a transport's or the wheel's callback.
 */
class CallRun<R, A, T> implements TryReceiver<R>, TryContext, LateHealth {
  // Number fields start as numbers and never hold undefined: a field that has held undefined stores every
  // double as a newly allocated box.
  /** The call's deadline; Infinity for none. */
  private deadline = Infinity;
  private now = 0;
  private readonly started: number = 0;
  private c: Callee | undefined = undefined;
  private plan: Plan = EMPTY_PLAN;
  private list: EndpointList | undefined = undefined;
  private hashKey: string | undefined = undefined;
  private retry: RetryPolicy | undefined = undefined;
  private last: TryOutcome<R> | undefined = undefined;
  private lastEp: Endpoint | undefined = undefined;
  /**
   * The try in flight, as the TryContext handed to a callback transport (it reads it before it returns;
   * a promise transport gets a copy of its own, which it may keep).
   */
  attempt = 0;
  /** Set by the first pick, before the run is ever seen as a TryContext. */
  endpoint!: Endpoint;
  /** Always a number here: every try has a deadline (the call's, the rule's timeout, or the default). */
  deadlineAt: number = 0;
  sentAt = 0;
  private sb: CircuitBreaker | undefined = undefined;
  private ib: CircuitBreaker | undefined = undefined;
  private inFlight = false;
  /** The answered try's latency at its head while its health waits for its end (healthAtEnd); -1 otherwise. */
  private lateLatency = -1;

  /** A getter, not a field: one double fewer to box per call. */
  get remainingMs(): number {
    return this.deadlineAt - this.sentAt;
  }

  constructor(
    private readonly e: OutboundEngine,
    readonly service: string,
    private readonly call: OutboundCall,
    /** A callback transport when there is a `map` (`dispatch`), else a promise one (`call`, `callWith`). */
    private readonly send: SendCallback<R, A> | SendWith<R, A>,
    private readonly arg: A,
    private readonly map: ((r: EngineResult<R>) => T) | undefined,
    private readonly resolve: (v: T) => void,
    private readonly reject: (e: unknown) => void,
    started: number,
  ) {
    this.started = started;
    this.now = started;
  }

  begin(): void {
    try {
      const { e, call, service } = this;
      const c = (this.c = e.callee(service));
      const plan = (this.plan = c.plan(call.method, call.path));
      const now = this.now;

      let deadline = call.deadlineAt;
      if (call.timeoutMs !== undefined) deadline = deadline === undefined ? now + call.timeoutMs : Math.min(deadline, now + call.timeoutMs);
      if (deadline === undefined && plan.timeoutMs === undefined) deadline = now + e.defaultTimeoutMs;
      if (deadline !== undefined && deadline <= now) throw new CallError('deadline_exceeded', service, `call to ${service}: the deadline passed before it was sent`);
      if (deadline !== undefined) this.deadline = deadline;

      const lane = call.lane;
      const laneList = c.traffic.candidates(c.set, service, lane);
      if (laneList === undefined) {
        if (lane !== undefined && c.set.size > 0) throw new CallError('lane_unavailable', service, `call to ${service}: no instance in strict lane ${lane}`);
        throw new CallError('no_endpoint', service, `call to ${service}: no routable instance`);
      }
      this.list = c.routes.length === 0 ? laneList : routeCandidates(c.routes, laneList, call, e.random);
      this.hashKey = call.hashKey ?? c.hashKey(call.headers, call.baggage);

      const retry = call.retry === undefined ? plan.retry : c.retryFor(call.retry);
      if (retry !== undefined && call.retryable !== false && RetryPolicy.isIdempotent(call.method, call.hasIdempotencyKey)) this.retry = retry;
      c.budget?.onRequest(now);
      this.next();
    } catch (err) {
      this.fail(err);
    }
  }

  /** The next try: admission by the service breaker, a pick admitted by its instance breaker, a bulkhead slot. */
  private next(): void {
    const c = this.c!;
    const plan = this.plan;
    const now = this.now;
    this.attempt++;
    const sg = plan.serviceBreaker;
    const sb = sg?.forService();
    if (sb !== undefined && !sb.tryAcquire(now)) return this.refused('circuit_open', sg!.fallback, sb.retryAfterMs(now));
    const ig = plan.instanceBreaker;
    const ep = c.pick(this.list!, this.hashKey, this.lastEp, ig, now);
    const ib = c.pickedBreaker;
    if (ep === undefined) {
      sb?.release();
      return this.refused('circuit_open', ig?.fallback, ig ? c.soonestRetry(this.list!, ig, now) : 0);
    }
    this.endpoint = ep;
    this.sb = sb;
    this.ib = ib;
    const bh = plan.bulkhead;
    if (bh !== undefined) {
      const ok = bh.acquire();
      if (ok !== true) {
        ok.then(
          (granted) => this.slot(granted),
          (err: unknown) => this.fail(err),
        );
        return;
      }
    }
    this.sendTry();
  }

  /** A bulkhead wait ended. */
  private slot(granted: boolean): void {
    try {
      this.now = this.e.clock.now();
      if (granted) return this.sendTry();
      this.ib?.release();
      this.sb?.release();
      this.refused('bulkhead_full', this.plan.bulkheadFallback, undefined);
    } catch (err) {
      this.fail(err);
    }
  }

  /** No try this time: the last try's answer stands, or the fallback, or the refusal. */
  private refused(reason: 'circuit_open' | 'bulkhead_full', fallback: FallbackAction | undefined, retryAfterMs: number | undefined): void {
    const tries = this.attempt - 1;
    const last = this.last;
    const lastEp = this.lastEp;
    this.done(last && lastEp ? this.e.finish(this.service, last, lastEp, tries) : this.e.blocked(this.service, reason, fallback, retryAfterMs, tries));
  }

  private sendTry(): void {
    const plan = this.plan;
    const ep = this.endpoint;
    const t0 = this.now;
    let tryDeadline = this.deadline;
    if (plan.timeoutMs !== undefined) tryDeadline = Math.min(tryDeadline, t0 + plan.timeoutMs);
    if (tryDeadline <= t0) {
      // The bulkhead queue ate the rest of the budget.
      plan.bulkhead?.release();
      this.ib?.release();
      this.sb?.release();
      const tries = this.attempt - 1;
      if (this.last && this.lastEp) return this.done(this.e.finish(this.service, this.last, this.lastEp, tries));
      throw new CallError('deadline_exceeded', this.service, `call to ${this.service}: the deadline passed before it was sent`);
    }
    this.c!.balancer.onStart?.(ep);
    this.deadlineAt = tryDeadline;
    this.sentAt = t0;
    this.inFlight = true;
    if (this.map !== undefined) return (this.send as SendCallback<R, A>)(this, this.arg, this);
    let p: Promise<TryOutcome<R>>;
    try {
      const t: TryContext = { service: this.service, endpoint: ep, attempt: this.attempt, deadlineAt: tryDeadline, remainingMs: this.remainingMs, sentAt: t0 };
      p = (this.send as SendWith<R, A>)(t, this.arg);
    } catch (error) {
      return this.tryDone(errorOutcome(error));
    }
    p.then(
      (out) => this.tryDone(out),
      (error: unknown) => this.tryDone(errorOutcome(error)),
    );
  }

  /** The try's outcome (a transport calls this, once per try). */
  tryDone(out: TryOutcome<R>): void {
    if (!this.inFlight) return;
    this.inFlight = false;
    try {
      this.feedback(out);
    } catch (err) {
      this.fail(err);
    }
  }

  private feedback(out: TryOutcome<R>): void {
    const { e, service, plan } = this;
    const c = this.c!;
    const ep = this.endpoint;
    const attempt = this.attempt;
    const now = (this.now = e.clock.now());
    const latency = now - this.sentAt;
    const balancer = c.balancer;
    balancer.onEnd?.(ep);
    plan.bulkhead?.release();

    if (out.healthAtEnd === true && out.status !== 0 && !(plan.instanceBreaker?.isFailure ?? defaultFailure)(out.status)) {
      // Judged when the answer ends; its head's latency is what a slow-call rule reads, not a stream's lifetime.
      this.lateLatency = latency;
      return this.done(e.finish(service, out, ep, attempt, this));
    }
    this.judge(out.status, latency, now);

    const retry = this.retry;
    if (retry === undefined || attempt >= retry.maxAttempts) return this.done(e.finish(service, out, ep, attempt));
    if (out.status !== 0 && !retry.retryableStatus(out.status)) return this.done(e.finish(service, out, ep, attempt));
    if (this.call.replay?.replayable === false) return this.done(e.finish(service, out, ep, attempt));
    const remaining = this.deadline - now;
    const delay = retry.nextDelay(attempt, parseRetryAfter(out.retryAfter, Date.now()), remaining, now);
    if (delay < 0) return this.done(e.finish(service, out, ep, attempt));
    e.metrics?.retry(service);
    this.last = out;
    this.lastEp = ep;
    // Even without a backoff the next try waits a microtask turn: a callback transport reports from inside
    // its dispatcher's callbacks, which should not see a new request dispatched from within them.
    const wait = delay > 0 ? e.wheel.delay(delay) : Promise.resolve();
    wait.then(
      () => this.resume(),
      (err: unknown) => this.fail(err),
    );
  }

  /** A backoff ended. */
  private resume(): void {
    try {
      this.now = this.e.clock.now();
      this.next();
    } catch (err) {
      this.fail(err);
    }
  }

  /** One try's outcome, to the balancer, the outlier detector and the breakers. */
  private judge(status: number, latency: number, now: number): void {
    const { e, plan, service } = this;
    const c = this.c!;
    const ep = this.endpoint;
    const ib = this.ib;
    const sb = this.sb;
    const failed = status === 0 || (plan.instanceBreaker?.isFailure ?? defaultFailure)(status);
    c.balancer.onResult?.(ep, latency, !failed, now);
    if (c.detector.record(ep.id, !failed)) e.metrics?.ejection(service, ep.id);
    if (ib !== undefined) {
      if (failed) ib.onFailure(latency, now);
      else ib.onSuccess(latency, now);
    }
    const sg = plan.serviceBreaker;
    if (sb !== undefined && sg !== undefined) {
      if (status === 0 || sg.isFailure(status)) sb.onFailure(latency, now);
      else sb.onSuccess(latency, now);
    }
  }

  settle(status: number | undefined): void {
    const latency = this.lateLatency;
    if (latency < 0) return;
    this.lateLatency = -1;
    if (status !== undefined) return this.judge(status, latency, this.e.clock.now());
    // Nothing learnt: a breaker's half-open probe is given back, as for a call never made.
    this.ib?.release();
    this.sb?.release();
  }

  private done(r: EngineResult<R>): void {
    const v = this.map === undefined ? (r as T) : this.map(r);
    const m = this.e.metrics;
    if (m !== undefined) m.request(this.service, statusClass(r.kind === 'response' ? r.status : r.action.statusCode), this.call.lane ?? 'base', this.call.stress, this.elapsedS());
    this.resolve(v);
  }

  private fail(err: unknown): void {
    const m = this.e.metrics;
    if (m !== undefined) {
      try {
        m.request(this.service, err instanceof CallError ? statusClass(err.status) : 'error', this.call.lane ?? 'base', this.call.stress, this.elapsedS());
      } catch {
        // The call's own error is the one to report.
      }
    }
    this.reject(err);
  }

  private elapsedS(): number {
    return (this.e.clock.now() - this.started) / 1000;
  }
}
