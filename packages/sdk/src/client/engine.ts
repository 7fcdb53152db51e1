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
}

/** What a transport reports for one try. `status` 0 means no response (a transport error or a timeout). */
export interface TryOutcome<R> {
  readonly status: number;
  readonly retryAfter: string | undefined;
  readonly response: R | undefined;
  readonly error: unknown;
  readonly timedOut: boolean;
}

export type Send<R> = (t: TryContext) => Promise<TryOutcome<R>>;

export type EngineResult<R> =
  | { readonly kind: 'response'; readonly response: R; readonly status: number; readonly endpoint: Endpoint; readonly attempts: number }
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
  pick(list: EndpointList, hashKey: string | undefined, avoid: Endpoint | undefined, group: BreakerGroup | undefined): Endpoint | undefined {
    this.pickedBreaker = undefined;
    this.pickCtx.hashKey = hashKey;
    let ep = this.balancer.pick(list, this.pickCtx);
    if (ep === undefined) return undefined;
    if (avoid !== undefined && ep.id === avoid.id && list.size > 1) {
      const again = this.balancer.pick(list, this.pickCtx);
      ep = again !== undefined && again.id !== avoid.id ? again : (this.scan(list, ep, avoid, undefined) ?? ep);
    }
    if (group === undefined) return ep;
    const b = group.forInstance(ep.id);
    if (b.tryAcquire()) {
      this.pickedBreaker = b;
      return ep;
    }
    const other = this.scan(list, ep, avoid, group);
    if (other !== undefined) return other;
    // The only admitting endpoint may be the one that just failed: better it than nothing.
    if (avoid !== undefined && avoid.id !== ep.id && this.set.has(avoid.id)) {
      const ab = group.forInstance(avoid.id);
      if (ab.tryAcquire()) {
        this.pickedBreaker = ab;
        return avoid;
      }
    }
    return undefined;
  }

  /** The next endpoint after `from` in list order that is neither ejected nor `avoid` and, with a group, admits a call. */
  private scan(list: EndpointList, from: Endpoint, avoid: Endpoint | undefined, group: BreakerGroup | undefined): Endpoint | undefined {
    const items = list.items;
    const n = items.length;
    const start = items.indexOf(from);
    const now = this.e.clock.now();
    for (let pass = 0; pass < 2; pass++) {
      // First pass honours ejection, the second ignores it (all ejected: panic, as the balancers do).
      for (let k = 1; k < n; k++) {
        const ep = items[(start + k) % n];
        if (ep === undefined || ep.id === from.id || (avoid !== undefined && ep.id === avoid.id)) continue;
        if (pass === 0 && this.detector.activeEjections > 0 && this.detector.isEjected(ep.id, now)) continue;
        if (group === undefined) return ep;
        const b = group.forInstance(ep.id);
        if (b.tryAcquire()) {
          this.pickedBreaker = b;
          return ep;
        }
      }
    }
    return undefined;
  }

  /** The soonest an instance breaker of the group lets a call through again. */
  soonestRetry(list: EndpointList, group: BreakerGroup): number {
    let min = Infinity;
    for (const ep of list.items) min = Math.min(min, group.forInstance(ep.id).retryAfterMs());
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

  private callee(service: string): Callee {
    const v = this.governance.version;
    if (v !== this.version) {
      // Version first: a change landing while we read is picked up by the next call.
      this.version = v;
      this.traffic = new CompiledTraffic(this.governance.trafficPolicies());
      this.rules = outboundRules(this.governance.faultTolerance(), this.self);
    }
    let c = this.callees.get(service);
    if (c === undefined) this.callees.set(service, (c = new Callee(service, this)));
    if (c.version !== this.version) c.refresh(this.version, this.traffic, this.rules.get(service) ?? []);
    return c;
  }

  /** Runs one call through the policies; `send` performs one try. Throws CallError; never rejects otherwise. */
  async call<R>(service: string, call: OutboundCall, send: Send<R>): Promise<EngineResult<R>> {
    const m = this.metrics;
    const started = m ? this.clock.now() : 0;
    try {
      const r = await this.run(service, call, send);
      m?.request(service, r.kind === 'response' ? statusClass(r.status) : statusClass(r.action.statusCode), call.lane ?? 'base', call.stress, (this.clock.now() - started) / 1000);
      return r;
    } catch (err) {
      m?.request(service, err instanceof CallError ? statusClass(err.status) : 'error', call.lane ?? 'base', call.stress, (this.clock.now() - started) / 1000);
      throw err;
    }
  }

  private async run<R>(service: string, call: OutboundCall, send: Send<R>): Promise<EngineResult<R>> {
    const c = this.callee(service);
    const plan = c.plan(call.method, call.path);
    const clock = this.clock;
    const now = clock.now();

    let deadline = call.deadlineAt;
    if (call.timeoutMs !== undefined) deadline = deadline === undefined ? now + call.timeoutMs : Math.min(deadline, now + call.timeoutMs);
    if (deadline === undefined && plan.timeoutMs === undefined) deadline = now + this.defaultTimeoutMs;
    if (deadline !== undefined && deadline <= now) throw new CallError('deadline_exceeded', service, `call to ${service}: the deadline passed before it was sent`);

    const lane = call.lane;
    const laneList = c.traffic.candidates(c.set, service, lane);
    if (laneList === undefined) {
      if (lane !== undefined && c.set.size > 0) throw new CallError('lane_unavailable', service, `call to ${service}: no instance in strict lane ${lane}`);
      throw new CallError('no_endpoint', service, `call to ${service}: no routable instance`);
    }
    const list = c.routes.length === 0 ? laneList : routeCandidates(c.routes, laneList, call, this.random);
    const hashKey = call.hashKey ?? c.hashKey(call.headers, call.baggage);

    const retry = plan.retry !== undefined && RetryPolicy.isIdempotent(call.method, call.hasIdempotencyKey) ? plan.retry : undefined;
    c.budget?.onRequest();
    const ig = plan.instanceBreaker;
    const sg = plan.serviceBreaker;
    const classify = ig?.isFailure ?? defaultFailure;

    let last: TryOutcome<R> | undefined;
    let lastEp: Endpoint | undefined;
    for (let attempt = 1; ; attempt++) {
      const sb = sg?.forService();
      if (sb !== undefined && !sb.tryAcquire()) {
        if (last && lastEp) return this.finish(service, last, lastEp, attempt - 1);
        return this.blocked(service, 'circuit_open', sg?.fallback, sb.retryAfterMs(), attempt - 1);
      }
      const ep = c.pick(list, hashKey, lastEp, ig);
      const ib = c.pickedBreaker;
      if (ep === undefined) {
        sb?.release();
        if (last && lastEp) return this.finish(service, last, lastEp, attempt - 1);
        return this.blocked(service, 'circuit_open', ig?.fallback, ig ? c.soonestRetry(list, ig) : 0, attempt - 1);
      }
      const bh = plan.bulkhead;
      if (bh !== undefined) {
        let ok: boolean | Promise<boolean> = bh.acquire();
        if (ok !== true) ok = await ok;
        if (!ok) {
          ib?.release();
          sb?.release();
          if (last && lastEp) return this.finish(service, last, lastEp, attempt - 1);
          return this.blocked(service, 'bulkhead_full', plan.bulkheadFallback, undefined, attempt - 1);
        }
      }

      const t0 = clock.now();
      let tryDeadline = deadline;
      if (plan.timeoutMs !== undefined) tryDeadline = tryDeadline === undefined ? t0 + plan.timeoutMs : Math.min(tryDeadline, t0 + plan.timeoutMs);
      if (tryDeadline !== undefined && tryDeadline <= t0) {
        // The bulkhead queue ate the rest of the budget.
        bh?.release();
        ib?.release();
        sb?.release();
        if (last && lastEp) return this.finish(service, last, lastEp, attempt - 1);
        throw new CallError('deadline_exceeded', service, `call to ${service}: the deadline passed before it was sent`);
      }

      const balancer = c.balancer;
      balancer.onStart?.(ep);
      let out: TryOutcome<R>;
      try {
        out = await send({ service, endpoint: ep, attempt, deadlineAt: tryDeadline, remainingMs: tryDeadline === undefined ? Infinity : tryDeadline - t0 });
      } catch (error) {
        out = { status: 0, retryAfter: undefined, response: undefined, error, timedOut: false };
      }
      const latency = clock.now() - t0;
      balancer.onEnd?.(ep);
      bh?.release();

      const failed = out.status === 0 || classify(out.status);
      balancer.onResult?.(ep, latency, !failed);
      if (c.detector.record(ep.id, !failed)) this.metrics?.ejection(service, ep.id);
      if (ib !== undefined) {
        if (failed) ib.onFailure(latency);
        else ib.onSuccess(latency);
      }
      if (sb !== undefined && sg !== undefined) {
        if (out.status === 0 || sg.isFailure(out.status)) sb.onFailure(latency);
        else sb.onSuccess(latency);
      }

      if (retry === undefined || attempt >= retry.maxAttempts) return this.finish(service, out, ep, attempt);
      if (out.status !== 0 && !retry.retryableStatus(out.status)) return this.finish(service, out, ep, attempt);
      const after = clock.now();
      const remaining = deadline === undefined ? Infinity : deadline - after;
      const delay = retry.nextDelay(attempt, parseRetryAfter(out.retryAfter, Date.now()), remaining);
      if (delay < 0) return this.finish(service, out, ep, attempt);
      this.metrics?.retry(service);
      if (delay > 0) await this.wheel.delay(delay);
      last = out;
      lastEp = ep;
    }
  }

  private finish<R>(service: string, out: TryOutcome<R>, ep: Endpoint, attempts: number): EngineResult<R> {
    if (out.status !== 0 && out.response !== undefined) return { kind: 'response', response: out.response, status: out.status, endpoint: ep, attempts };
    if (out.timedOut) throw new CallError('deadline_exceeded', service, `call to ${service} (${ep.id}) timed out after ${attempts} tr${attempts === 1 ? 'y' : 'ies'}`, { cause: out.error });
    const why = out.error instanceof Error ? out.error.message : String(out.error);
    throw new CallError('upstream_error', service, `call to ${service} (${ep.id}) failed after ${attempts} tr${attempts === 1 ? 'y' : 'ies'}: ${why}`, { cause: out.error });
  }

  private blocked<R>(service: string, reason: 'circuit_open' | 'bulkhead_full', fallback: FallbackAction | undefined, retryAfterMs: number | undefined, attempts: number): EngineResult<R> {
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
