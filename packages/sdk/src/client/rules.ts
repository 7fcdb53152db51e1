import type { CircuitBreakerStrategy, ConcurrencyLimitStrategy, FallbackAction, FaultToleranceSpec, Resource, RetryStrategy } from '@plinth/core';
import { compileTarget, type CompiledTarget } from '../governance/match.js';

/**
 * One FaultTolerance rule as it applies to the calls of one caller (`self`) into one callee: only the
 * targets naming that callee and admitting that caller are kept, and only the outbound strategies.
 */
export interface OutboundRule {
  /** `namespace/resource/rule`: stable across revisions, the key breakers and bulkheads are kept under. */
  readonly key: string;
  readonly targets: readonly CompiledTarget[];
  /** Some target admits every method and path: the rule applies to every call, no per-call matching. */
  readonly unconditional: boolean;
  readonly breaker: CircuitBreakerStrategy | undefined;
  readonly retry: RetryStrategy | undefined;
  readonly timeoutMs: number | undefined;
  /** A concurrencyLimit with side outbound. */
  readonly bulkhead: ConcurrencyLimitStrategy | undefined;
  readonly fallback: FallbackAction | undefined;
}

function byName(a: Resource<FaultToleranceSpec>, b: Resource<FaultToleranceSpec>): number {
  const ka = `${a.metadata.namespace}/${a.metadata.name}`;
  const kb = `${b.metadata.namespace}/${b.metadata.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/**
 * The outbound rules of `self`, grouped by callee, in resource-name then rule order (the order in which the
 * first matching rule wins per strategy type). Rules without an outbound strategy are left out, so callees
 * governed only by inbound limits cost nothing here.
 */
export function outboundRules(resources: readonly Resource<FaultToleranceSpec>[], self: string): Map<string, OutboundRule[]> {
  const out = new Map<string, OutboundRule[]>();
  for (const res of [...resources].sort(byName)) {
    for (const rule of res.spec.rules) {
      let breaker: CircuitBreakerStrategy | undefined;
      let retry: RetryStrategy | undefined;
      let timeoutMs: number | undefined;
      let bulkhead: ConcurrencyLimitStrategy | undefined;
      for (const s of rule.strategies) {
        if (s.type === 'circuitBreaker') breaker = s;
        else if (s.type === 'retry') retry = s;
        else if (s.type === 'timeout') timeoutMs = s.timeoutMs;
        else if (s.type === 'concurrencyLimit' && s.side === 'outbound') bulkhead = s;
      }
      if (!breaker && !retry && timeoutMs === undefined && !bulkhead) continue;
      const perService = new Map<string, CompiledTarget[]>();
      for (const t of rule.targets) {
        if (t.callers !== undefined && !t.callers.includes(self)) continue;
        let arr = perService.get(t.service);
        if (!arr) perService.set(t.service, (arr = []));
        arr.push(compileTarget(t));
      }
      for (const [service, targets] of perService) {
        const unconditional = rule.targets.some((t) => t.service === service && t.endpoints === undefined && t.methods === undefined && (t.callers === undefined || t.callers.includes(self)));
        let arr = out.get(service);
        if (!arr) out.set(service, (arr = []));
        arr.push({
          key: `${res.metadata.namespace}/${res.metadata.name}/${rule.name}`,
          targets,
          unconditional,
          breaker,
          retry,
          timeoutMs,
          bulkhead,
          fallback: rule.fallbackAction,
        });
      }
    }
  }
  return out;
}

export function ruleMatches(r: OutboundRule, method: string, path: string, self: string): boolean {
  if (r.unconditional) return true;
  for (const t of r.targets) if (t.matches(method, path, self)) return true;
  return false;
}
