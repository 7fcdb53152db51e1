import type { FaultInjectionSpec, FaultToleranceSpec, Resource, RetryStrategy } from '@plinth/core';
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

type Shape = Pick<RetryStrategy, 'backoffBaseMs' | 'backoffCapMs' | 'budgetPercent' | 'minRetriesPerSecond'>;

/** The schema's defaults, for a service no FaultTolerance retry rule speaks of. */
const DEFAULT_SHAPE: Shape = { backoffBaseMs: 25, backoffCapMs: 1000, budgetPercent: 20, minRetriesPerSecond: 10 };

/**
 * Per callee, the backoff and budget of the first FaultTolerance retry rule that applies to `self`'s calls,
 * in the engine's order (resource namespace/name, then rule order): that rule shapes the callee's one
 * retry budget.
 */
function retryShapes(ft: readonly Resource<FaultToleranceSpec>[], self: string): Map<string, Shape> {
  const out = new Map<string, Shape>();
  const key = (r: Resource<FaultToleranceSpec>) => `${r.metadata.namespace}/${r.metadata.name}`;
  for (const res of [...ft].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))) {
    for (const rule of res.spec.rules) {
      const retry = rule.strategies.find((s): s is RetryStrategy => s.type === 'retry');
      if (retry === undefined) continue;
      for (const t of rule.targets) {
        if (out.has(t.service) || (t.callers !== undefined && !t.callers.includes(self))) continue;
        out.set(t.service, { backoffBaseMs: retry.backoffBaseMs, backoffCapMs: retry.backoffCapMs, budgetPercent: retry.budgetPercent, minRetriesPerSecond: retry.minRetriesPerSecond });
      }
    }
  }
  return out;
}

/**
 * Route `retries` as engine retry rules: one FaultTolerance rule per route, targeting the route's service,
 * the upstream endpoints it sends to and its methods, for this gateway as the caller only. The route says
 * how many tries and on which statuses; the backoff and the budget stay those of the callee's own retry
 * rule, if it has one, so adding a route never loosens the retry budget an operator set for a service.
 *
 * The resource sorts before every real one (empty namespace), so for the calls it targets a route's
 * retries win over a namespace-wide retry rule, and its retries draw from the callee's one budget. The
 * rules match upstream method and path, not the route: routes reaching the same upstream paths of a service
 * share the retries of the first of them that has some.
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
    let shapes: Map<string, Shape> | undefined;
    for (const r of this.routes.table.routes) {
      const retries = r.spec.retries;
      if (retries === undefined || r.service === undefined || r.upstreamEndpoints === undefined) continue;
      shapes ??= retryShapes(ft, this.self);
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
        strategies: [{ type: 'retry', maxAttempts: retries.attempts, retryOn: retries.on, ...(shapes.get(r.service) ?? DEFAULT_SHAPE) }],
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
