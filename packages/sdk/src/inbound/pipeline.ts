import type { IncomingHttpHeaders } from 'node:http';
import { FaultToleranceRule, type FallbackAction, type Strategy } from '@plinth/core';
import type { Redis } from 'ioredis';
import { compileTarget, type CompiledTarget } from '../governance/match.js';
import type { GovernanceSource } from '../governance/source.js';
import { monotonicClock, type Clock } from '../ratelimit/clock.js';
import { sharedWheel, type TimerWheel } from '../resilience/timer-wheel.js';
import { chance, compileFaults, faultMatches, type CompiledFault } from './faults.js';
import { AdaptiveGate, ClusterRateGate, ConcurrencyGate, LocalRateGate, PASS, type Gate, type GateEnv, type RuleRef } from './gates.js';
import { ADMIT, delayed, Lease } from './lease.js';
import type { InboundMetrics } from './metrics.js';
import { acquireProcessSignal, type OverloadSignal } from './overload.js';
import type { Rejection } from './rejection.js';

export interface InboundOptions {
  /** This service's registered name (targets' `service`). */
  service: string;
  governance: GovernanceSource;
  /** ioredis, for limitMode global quotas; without it global rules use their local fallback. */
  redis?: Redis;
  /** Live instances of this service (globalToLocal / local fallback shares); default governance.endpoints(service).size || 1. */
  instanceCount?: () => number;
  /**
   * Processes that serve as one instance (a gateway's workers): each counts 1/n of every rate limit (of its
   * instance share for globalToLocal and the local fallback) and of every inbound concurrency limit (at least
   * one slot), so the instance as a whole keeps the rule's figures. Default 1.
   */
  processes?: number;
  /** Monotonic clock for limiters and estimates; default `monotonicClock`. */
  clock?: Clock;
  /** Wall clock for FaultInjection `expiresAt` (RFC 3339, wall time); default `Date`. */
  wallClock?: Clock;
  random?: () => number;
  /** Rejections are counted here (`plinth_inbound_rejections_total`). */
  metrics?: InboundMetrics;
  /** Wheel for concurrency-queue timeouts; default the process-wide `sharedWheel`. */
  wheel?: TimerWheel;
  /** Load signal for adaptiveOverload; default the process-wide sampler (started only when a rule needs it). */
  overloadSignal?: OverloadSignal;
  /** Prefix of cluster quota keys in Redis; default `plinth:quota:`. */
  redisKeyPrefix?: string;
}

export interface InboundRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  headers: IncomingHttpHeaders;
  ip: string | undefined;
  identity?: string | undefined;
  caller: string | undefined;
  lane: string | undefined;
  /** Pressure-test traffic (baggage plinth.stress): only for the rejection metric's label. */
  stress?: boolean | undefined;
}

export type Admission =
  | {
      ok: true;
      delayMs: number;
      /** Call when the response is done: frees concurrency slots, feeds adaptive latency. Idempotent. */
      release: () => void;
    }
  | Rejection;

interface CompiledRule extends RuleRef {
  readonly targets: readonly CompiledTarget[];
}

interface Step {
  readonly rule: CompiledRule;
  readonly gate: Gate;
}

interface Plan {
  readonly version: number;
  readonly steps: readonly Step[];
  readonly faults: readonly CompiledFault[];
}

interface Kept {
  readonly json: string;
  readonly gate: Gate;
}

const INBOUND_TYPES = new Set<Strategy['type']>(['rateLimit', 'concurrencyLimit', 'adaptiveOverload']);

function ruleMatches(r: CompiledRule, method: string, path: string, caller: string | undefined): boolean {
  for (const t of r.targets) if (t.matches(method, path, caller)) return true;
  return false;
}

/**
 * The inbound governance of one service: FaultTolerance inbound strategies (rate limits, inbound concurrency
 * limits, adaptive overload protection) then FaultInjection faults, decided before the handler runs.
 *
 * Rules are compiled when the governance version moves, on the first request after it (one number compared
 * per request). Gates keep their state across compiles while their rule keeps the same strategy, so a config
 * push resets no bucket; a changed concurrency limit or overload threshold is applied to the live gate.
 *
 * `admit` is synchronous, with no timer and nothing allocated but the lease, unless a global quota (Redis)
 * or a concurrency queue is involved; a request no rule touches gets a shared admission object.
 */
export class InboundPipeline {
  readonly service: string;
  private readonly governance: GovernanceSource;
  private readonly clock: Clock;
  private readonly wallClock: Clock;
  private readonly random: () => number;
  private readonly metrics: InboundMetrics | undefined;
  private readonly env: GateEnv;
  private readonly redisKeyPrefix: string;
  private readonly instanceCount: () => number;
  private readonly processes: number;
  private plan: Plan | undefined;
  private kept = new Map<string, Kept>();
  private releaseSignal: (() => void) | undefined;
  private processSignal: OverloadSignal | undefined;
  private closed = false;

  constructor(o: InboundOptions) {
    this.service = o.service;
    this.governance = o.governance;
    this.clock = o.clock ?? monotonicClock;
    this.wallClock = o.wallClock ?? Date;
    this.random = o.random ?? Math.random;
    this.metrics = o.metrics;
    this.redisKeyPrefix = o.redisKeyPrefix ?? 'plinth:quota:';
    const gov = o.governance;
    const service = o.service;
    this.instanceCount = o.instanceCount ?? (() => gov.endpoints(service).size || 1);
    this.processes = Math.max(1, Math.floor(o.processes ?? 1));
    const injected = o.overloadSignal;
    this.env = {
      clock: this.clock,
      wheel: o.wheel ?? sharedWheel,
      redis: o.redis,
      quotaKey: '',
      instanceCount: this.instanceCount,
      signal: () => injected ?? this.sharedSignal(),
    };
  }

  /** Decides one request. A Promise only when a global quota or a concurrency queue had to wait. */
  admit(req: InboundRequest): Admission | Promise<Admission> {
    const plan = this.current();
    return this.run(req, plan, 0, undefined);
  }

  /**
   * The shared admission when no rule and no fault is compiled for this service (no inbound governance, the
   * common case), so the caller need not build an InboundRequest; undefined: call `admit`.
   */
  admitUngoverned(): Admission | undefined {
    const plan = this.current();
    return plan.steps.length === 0 && plan.faults.length === 0 ? ADMIT : undefined;
  }

  /** Stops the overload sampler (if this pipeline started it); later requests pass ungoverned. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const k of this.kept.values()) k.gate.close();
    this.kept.clear();
    this.plan = { version: Infinity, steps: [], faults: [] };
    this.releaseSignal?.();
    this.releaseSignal = undefined;
  }

  private run(req: InboundRequest, plan: Plan, from: number, lease: Lease | undefined): Admission | Promise<Admission> {
    const steps = plan.steps;
    let lastRule: CompiledRule | undefined;
    let lastMatch = false;
    for (let i = from; i < steps.length; i++) {
      const step = steps[i]!;
      // A rule's strategies are consecutive steps: match its targets once.
      if (step.rule !== lastRule) {
        lastRule = step.rule;
        lastMatch = ruleMatches(step.rule, req.method, req.path, req.caller);
      }
      if (!lastMatch) continue;
      lease ??= new Lease(this.clock.now());
      const r = step.gate.enter(req, lease, step.rule);
      if (r === PASS) continue;
      if (r instanceof Promise) {
        const held = lease;
        return r.then((rejection) => (rejection === undefined ? this.run(req, plan, i + 1, held) : this.refuse(req, held, rejection)));
      }
      return this.refuse(req, lease, r);
    }
    return this.faults(req, plan.faults, lease);
  }

  private faults(req: InboundRequest, faults: readonly CompiledFault[], lease: Lease | undefined): Admission {
    let delay = 0;
    if (faults.length > 0) {
      let now = -1;
      for (const f of faults) {
        if (f.expiresAt !== Infinity) {
          if (now < 0) now = this.wallClock.now();
          if (now >= f.expiresAt) continue;
        }
        if (!faultMatches(f, req, req.caller, req.lane)) continue;
        if (f.abort !== undefined && chance(f.abortPercent, this.random)) return this.refuse(req, lease, f.abort);
        if (f.delayMs > 0 && chance(f.delayPercent, this.random)) delay += f.delayMs;
      }
    }
    if (lease !== undefined) {
      if (delay > 0) lease.addDelay(delay);
      return lease;
    }
    return delay > 0 ? delayed(delay) : ADMIT;
  }

  private refuse(req: InboundRequest, lease: Lease | undefined, rejection: Rejection): Rejection {
    lease?.abandon();
    this.metrics?.rejected(this.service, rejection.code, req.stress === true);
    return rejection;
  }

  private current(): Plan {
    const plan = this.plan;
    if (plan !== undefined && (plan.version === this.governance.version || this.closed)) return plan;
    return this.compile();
  }

  private compile(): Plan {
    const version = this.governance.version;
    const steps: Step[] = [];
    const kept = new Map<string, Kept>();
    let faults: CompiledFault[] = [];
    let share = 1;
    try {
      share = Math.max(1, this.instanceCount() || 1);
    } catch {
      // an unknown instance count: count this instance alone
    }
    try {
      for (const res of this.governance.faultTolerance()) {
        const rules = (res.spec as { rules?: unknown } | undefined)?.rules;
        if (!Array.isArray(rules)) continue;
        for (const raw of rules) {
          // Parse rather than trust: applies defaults and skips a rule this SDK version cannot read.
          const parsed = FaultToleranceRule.safeParse(raw);
          if (!parsed.success) continue;
          const r = parsed.data;
          const targets = r.targets.filter((t) => t.service === this.service).map(compileTarget);
          if (targets.length === 0) continue;
          const rule: CompiledRule = { name: r.name, fallback: r.fallbackAction as FallbackAction | undefined, targets };
          const ruleKey = `${res.metadata.namespace}/${res.metadata.name}/${r.name}`;
          for (const s of r.strategies) {
            if (!INBOUND_TYPES.has(s.type)) continue;
            if (s.type === 'concurrencyLimit' && s.side !== 'inbound') continue;
            let gate: Gate | undefined;
            try {
              gate = this.gateFor(ruleKey, s, share, kept);
            } catch {
              // A strategy the limiters refuse (out of their range) is skipped; the rule's others still apply.
            }
            if (gate !== undefined) steps.push({ rule, gate });
          }
        }
      }
      faults = compileFaults(this.governance.faultInjections(), this.service, this.wallClock.now());
    } catch {
      // A snapshot the compiler cannot read keeps what compiled so far rather than failing requests.
    }
    for (const [key, k] of this.kept) if (kept.get(key) !== k) k.gate.close();
    this.kept = kept;
    if (!steps.some((s) => s.gate instanceof AdaptiveGate) && this.releaseSignal !== undefined) {
      this.releaseSignal();
      this.releaseSignal = undefined;
      this.processSignal = undefined;
    }
    const plan: Plan = { version, steps, faults };
    this.plan = plan;
    return plan;
  }

  /**
   * The gate for one strategy, reused from the previous compile when the rule still has it. Rate gates are
   * reused only for the same strategy (and the same instance share): a bucket cannot change its rate.
   */
  private gateFor(ruleKey: string, s: Strategy, share: number, kept: Map<string, Kept>): Gate | undefined {
    const key = `${ruleKey}\0${s.type}`;
    const json = JSON.stringify(s);
    const prev = this.kept.get(key);
    let gate: Gate | undefined;
    switch (s.type) {
      case 'rateLimit': {
        const global = s.limitMode === 'global' && this.env.redis !== undefined;
        const shareOf = (s.limitMode === 'local' ? 1 : share) * this.processes;
        const id = global ? json : `${json}\0${shareOf}`;
        if (prev !== undefined && prev.json === id) gate = prev.gate;
        else gate = global ? new ClusterRateGate(s, { ...this.env, quotaKey: `${this.redisKeyPrefix}${this.service}:${ruleKey}` }) : new LocalRateGate(s, shareOf, this.clock);
        kept.set(key, { json: id, gate });
        return gate;
      }
      case 'concurrencyLimit': {
        if (this.processes > 1) s = { ...s, maxConcurrency: Math.max(1, Math.floor(s.maxConcurrency / this.processes)), ...(s.maxQueue !== undefined ? { maxQueue: Math.floor(s.maxQueue / this.processes) } : {}) };
        if (prev !== undefined && prev.gate instanceof ConcurrencyGate) {
          if (prev.json !== json) prev.gate.reconfigure(s);
          gate = prev.gate;
        } else gate = new ConcurrencyGate(s, this.env.wheel);
        break;
      }
      case 'adaptiveOverload': {
        if (prev !== undefined && prev.gate instanceof AdaptiveGate) {
          if (prev.json !== json) prev.gate.reconfigure(s);
          gate = prev.gate;
        } else gate = new AdaptiveGate(s, this.env);
        break;
      }
      default:
        return undefined;
    }
    kept.set(key, { json, gate });
    return gate;
  }

  private sharedSignal(): OverloadSignal {
    if (this.processSignal === undefined) {
      const { signal, release } = acquireProcessSignal();
      this.processSignal = signal;
      this.releaseSignal = release;
    }
    return this.processSignal;
  }
}
