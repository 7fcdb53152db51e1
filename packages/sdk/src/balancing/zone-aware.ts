import { monotonicClock, noEjections, type Balancer, type Clock, type EjectionView, type PickContext } from './balancer.js';
import type { Endpoint, EndpointList, EndpointSet } from './endpoints.js';

export interface ZoneAwareOptions {
  /** The caller's zone; undefined disables the preference. */
  localZone: string | undefined;
  /** The balancer that picks within the chosen zone (or across all zones on spill-over). */
  inner: Balancer;
  /** Spill over when the local zone has fewer non-ejected endpoints than this. Default 1. */
  minHealthy?: number;
  /** Spill over when more than this fraction of the local zone is ejected. Default 0.5. */
  maxEjectedFraction?: number;
  ejections?: EjectionView;
  clock?: Clock;
}

/**
 * Prefers endpoints in the caller's zone (cross-zone hops cost latency and, in clouds, money), and spills
 * over to the whole candidate list when the local zone is too thin or too sick to carry the load.
 *
 * The local sub-list comes from the EndpointList's zone index, built once per snapshot; the health check
 * only counts ejections when some exist, so the common case is one map lookup per pick.
 */
export class ZoneAwareBalancer implements Balancer {
  readonly name: string;
  readonly localZone: string | undefined;
  private readonly inner: Balancer;
  private readonly minHealthy: number;
  private readonly maxEjectedFraction: number;
  private readonly ejections: EjectionView;
  private readonly clock: Clock;

  constructor(opts: ZoneAwareOptions) {
    this.localZone = opts.localZone;
    this.inner = opts.inner;
    this.minHealthy = opts.minHealthy ?? 1;
    this.maxEjectedFraction = opts.maxEjectedFraction ?? 0.5;
    this.ejections = opts.ejections ?? noEjections;
    this.clock = opts.clock ?? monotonicClock;
    this.name = `zone-aware(${opts.inner.name})`;
  }

  pick(candidates: EndpointList, ctx?: PickContext): Endpoint | undefined {
    return this.inner.pick(this.select(candidates), ctx);
  }

  /** The list a pick draws from: the local zone's, or all of them on spill-over. */
  select(candidates: EndpointList): EndpointList {
    if (this.localZone === undefined) return candidates;
    const local = candidates.zone(this.localZone);
    if (local === undefined || local.size < this.minHealthy) return candidates;
    if (this.ejections.activeEjections === 0) return local;
    const now = this.clock.now();
    let ejected = 0;
    for (const ep of local.items) if (this.ejections.isEjected(ep.id, now)) ejected++;
    const healthy = local.size - ejected;
    if (healthy < this.minHealthy || ejected > local.size * this.maxEjectedFraction) return candidates;
    return local;
  }

  onStart(ep: Endpoint): void {
    this.inner.onStart?.(ep);
  }

  onEnd(ep: Endpoint): void {
    this.inner.onEnd?.(ep);
  }

  onResult(ep: Endpoint, latencyMs: number, ok: boolean, now?: number): void {
    this.inner.onResult?.(ep, latencyMs, ok, now);
  }

  retain(set: EndpointSet): void {
    this.inner.retain?.(set);
  }
}
