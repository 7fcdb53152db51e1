import type { FaultInjectionSpec, FaultToleranceSpec, Resource } from '@plinth/core';
import type { GovernanceSource } from '@plinth/sdk';
import type { EndpointSet } from '@plinth/sdk/balancing';
import type { LiveRoutes } from './routes.js';

/**
 * A GovernanceSource seen through a lens: the same snapshot, with the FaultTolerance (and FaultInjection)
 * lists rewritten once per version. The engine and the inbound pipelines only ever see sources, so this is
 * how the gateway puts route-level policy into the one policy core instead of growing a second one.
 */
abstract class Lens implements GovernanceSource {
  private seen = -1;
  private ft: readonly Resource<FaultToleranceSpec>[] = [];

  constructor(protected readonly base: GovernanceSource) {}

  get version(): number {
    return this.base.version + this.extraVersion();
  }

  faultTolerance(): readonly Resource<FaultToleranceSpec>[] {
    const v = this.version;
    if (v !== this.seen) {
      this.seen = v;
      this.ft = this.rewrite(this.base.faultTolerance());
    }
    return this.ft;
  }

  trafficPolicies() {
    return this.base.trafficPolicies();
  }

  faultInjections(): readonly Resource<FaultInjectionSpec>[] {
    return this.base.faultInjections();
  }

  endpoints(service: string): EndpointSet {
    return this.base.endpoints(service);
  }

  onChange(listener: () => void): () => void {
    return this.base.onChange(listener);
  }

  protected extraVersion(): number {
    return 0;
  }

  protected abstract rewrite(ft: readonly Resource<FaultToleranceSpec>[]): readonly Resource<FaultToleranceSpec>[];
}

/**
 * Route `retries` as engine retry rules: one FaultTolerance rule per route, targeting the route's service,
 * the upstream endpoints it sends to and its methods, for this gateway as the caller only. It sorts before
 * every real resource (empty namespace), so a route's own retries win over a namespace-wide retry rule for
 * the same calls, and draws from the callee's one retry budget.
 */
export class RouteRetryGovernance extends Lens {
  constructor(
    base: GovernanceSource,
    private readonly routes: LiveRoutes,
    private readonly self: string,
  ) {
    super(base);
  }

  protected override extraVersion(): number {
    return this.routes.feed.version;
  }

  protected rewrite(ft: readonly Resource<FaultToleranceSpec>[]): readonly Resource<FaultToleranceSpec>[] {
    const rules: FaultToleranceSpec['rules'] = [];
    for (const r of this.routes.table.routes) {
      const retries = r.spec.retries;
      if (retries === undefined || r.service === undefined || r.upstreamEndpoints === undefined) continue;
      rules.push({
        name: `route-${rules.length}`,
        targets: [
          {
            service: r.service,
            endpoints: [...r.upstreamEndpoints],
            ...(r.spec.match.methods ? { methods: r.spec.match.methods } : {}),
            callers: [this.self],
          },
        ],
        strategies: [
          {
            type: 'retry',
            maxAttempts: retries.attempts,
            retryOn: retries.on,
            backoffBaseMs: 25,
            backoffCapMs: 1000,
            budgetPercent: 20,
            minRetriesPerSecond: 10,
          },
        ],
      });
    }
    if (rules.length === 0) return ft;
    const synthetic = {
      apiVersion: 'plinth.dev/v1',
      kind: 'FaultTolerance',
      metadata: { namespace: '', name: 'gateway-routes', labels: {}, annotations: {}, revision: 0, createRevision: 0 },
      spec: { rules },
    } as unknown as Resource<FaultToleranceSpec>;
    return [synthetic, ...ft];
  }
}

/**
 * The same rules without retries: for calls whose body streams through and cannot be sent twice.
 * (The engine has no per-call "not retryable"; an `OutboundCall.retryable` flag would let one engine do both.)
 */
export class NoRetryGovernance extends Lens {
  protected rewrite(ft: readonly Resource<FaultToleranceSpec>[]): readonly Resource<FaultToleranceSpec>[] {
    return ft.map((res) => ({
      ...res,
      spec: { rules: res.spec.rules.map((rule) => ({ ...rule, strategies: rule.strategies.filter((s) => s.type !== 'retry') })).filter((rule) => rule.strategies.length > 0) },
    }));
  }
}

/**
 * Inbound governance of the edge: the rules as they are, minus FaultInjection, which the callee's own
 * pipeline applies (injecting at the edge too would double every delay). The sidecar IS the callee's
 * inbound, and keeps them.
 */
export class EdgeInboundGovernance extends Lens {
  override faultInjections(): readonly Resource<FaultInjectionSpec>[] {
    return [];
  }

  protected rewrite(ft: readonly Resource<FaultToleranceSpec>[]): readonly Resource<FaultToleranceSpec>[] {
    return ft;
  }
}
