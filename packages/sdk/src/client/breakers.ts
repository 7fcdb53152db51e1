import type { CircuitBreakerStrategy, FallbackAction } from '@plinth/core';
import type { EndpointSet } from '../balancing/endpoints.js';
import type { Clock } from '../ratelimit/clock.js';
import { breakerOptionsOf, CircuitBreaker, statusClassifier, type BreakerOptions, type BreakerState } from '../resilience/breaker.js';

export interface BreakerHooks {
  /** An instance breaker opened (or was forced open): the instance should be ejected. */
  onInstanceOpen?(id: string): void;
  onInstanceClosed?(id: string): void;
  onState?(upstream: string, state: BreakerState): void;
  onDrop?(upstream: string): void;
}

/** Instance breakers a group remembers for lookup without the Map. */
const RECENT = 4;

/** The upstream name of a service-scope breaker in metrics and `inspect`. */
export const SERVICE_UPSTREAM = '*';

/**
 * The breakers of one rule for one callee: a single one (scope service) or one per instance (scope instance),
 * created on first use and kept for as long as the rule and the instance exist, never per request (opossum's
 * leak). A rule change reconfigures them in place, keeping their windows.
 */
export class BreakerGroup {
  readonly scope: 'instance' | 'service';
  fallback: FallbackAction | undefined;
  isFailure: (status: number) => boolean;
  private opts: BreakerOptions;
  private json: string;
  private service: CircuitBreaker | undefined;
  private readonly instances = new Map<string, CircuitBreaker>();
  /**
   * The instance breakers looked up most recently, by id: calls spread over a handful of instances, and a
   * short scan of ids (the endpoints' own strings, so mostly a pointer compare) beats hashing for the Map.
   */
  private recentIds: (string | undefined)[] = new Array<string | undefined>(RECENT).fill(undefined);
  private recentBreakers: (CircuitBreaker | undefined)[] = new Array<CircuitBreaker | undefined>(RECENT).fill(undefined);
  private recentNext = 0;

  constructor(
    readonly ruleKey: string,
    strategy: CircuitBreakerStrategy,
    fallback: FallbackAction | undefined,
    private readonly clock: Clock,
    private readonly hooks: BreakerHooks = {},
  ) {
    this.scope = strategy.scope ?? 'instance';
    this.fallback = fallback;
    this.opts = breakerOptionsOf(strategy);
    this.json = JSON.stringify(strategy);
    this.isFailure = statusClassifier(strategy.failureStatuses);
  }

  /** Adopts a new revision of the rule; the breakers keep their state unless the options changed. */
  update(strategy: CircuitBreakerStrategy, fallback: FallbackAction | undefined): void {
    this.fallback = fallback;
    const json = JSON.stringify(strategy);
    if (json === this.json) return;
    this.json = json;
    this.opts = breakerOptionsOf(strategy);
    this.isFailure = statusClassifier(strategy.failureStatuses);
    this.service?.reconfigure(this.opts);
    for (const b of this.instances.values()) b.reconfigure(this.opts);
  }

  forService(): CircuitBreaker {
    return (this.service ??= this.create(SERVICE_UPSTREAM));
  }

  forInstance(id: string): CircuitBreaker {
    const ids = this.recentIds;
    for (let i = 0; i < RECENT; i++) if (ids[i] === id) return this.recentBreakers[i]!;
    let b = this.instances.get(id);
    if (b === undefined) this.instances.set(id, (b = this.create(id)));
    const k = this.recentNext;
    ids[k] = id;
    this.recentBreakers[k] = b;
    this.recentNext = k + 1 === RECENT ? 0 : k + 1;
    return b;
  }

  private forgetRecent(): void {
    this.recentIds.fill(undefined);
    this.recentBreakers.fill(undefined);
  }

  /** Drops the breakers of instances that left the fleet. */
  retain(set: EndpointSet): void {
    this.forgetRecent();
    for (const id of this.instances.keys())
      if (!set.has(id)) {
        this.instances.delete(id);
        this.hooks.onDrop?.(id);
      }
  }

  /** Called when the rule is gone: its breakers go with it. */
  dispose(): void {
    if (this.service) this.hooks.onDrop?.(SERVICE_UPSTREAM);
    for (const id of this.instances.keys()) this.hooks.onDrop?.(id);
    this.service = undefined;
    this.instances.clear();
    this.forgetRecent();
  }

  /** upstream → breaker, for inspection and metrics (allocates). */
  entries(): [string, CircuitBreaker][] {
    const out: [string, CircuitBreaker][] = [];
    if (this.service) out.push([SERVICE_UPSTREAM, this.service]);
    for (const e of this.instances) out.push(e);
    return out;
  }

  private create(upstream: string): CircuitBreaker {
    const b = new CircuitBreaker(this.opts, this.clock);
    const h = this.hooks;
    b.onStateChange((_from, to) => {
      h.onState?.(upstream, to);
      if (upstream === SERVICE_UPSTREAM) return;
      if (to.kind === 'open' || to.kind === 'forcedOpen') h.onInstanceOpen?.(upstream);
      else if (to.kind === 'closed') h.onInstanceClosed?.(upstream);
    });
    h.onState?.(upstream, b.state);
    return b;
  }
}
