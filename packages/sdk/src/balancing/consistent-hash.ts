import { fnv1a32 } from '@plinth/core';
import { monotonicClock, noEjections, type Balancer, type Clock, type EjectionView, type PickContext } from './balancer.js';
import type { Endpoint, EndpointList, EndpointSet } from './endpoints.js';
import { RoundRobinBalancer } from './round-robin.js';

export interface ConsistentHashOptions {
  /** Virtual nodes per endpoint of weight 100 (scaled by weight). Default 160, as ketama. */
  replicas?: number;
  ejections?: EjectionView;
  clock?: Clock;
  /** Used when a call carries no hash key. Default round robin. */
  fallback?: Balancer;
}

/**
 * Murmur3's 32-bit finalizer. FNV-1a alone clusters for inputs that differ only in their last characters
 * ("ep-1#0", "ep-1#1", ...), which would bunch virtual nodes on the ring; the finalizer spreads them.
 */
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function hashKey32(key: string): number {
  return mix32(fnv1a32(key));
}

/** A hash ring: sorted virtual-node points and, for each, the index of its endpoint in the list. */
class Ring {
  readonly points: Uint32Array;
  readonly owners: Uint32Array;

  constructor(items: readonly Endpoint[], replicas: number) {
    const pts: number[] = [];
    const own: number[] = [];
    for (let i = 0; i < items.length; i++) {
      const ep = items[i];
      if (ep === undefined) continue;
      // Vnode count depends only on the endpoint's own weight, never on the others', so one endpoint
      // leaving does not move anyone else's points: that is what keeps remapping minimal.
      const v = Math.max(1, Math.round((replicas * ep.weight) / 100));
      for (let r = 0; r < v; r++) {
        pts.push(hashKey32(`${ep.id}#${r}`));
        own.push(i);
      }
    }
    const order = pts.map((_, k) => k).sort((x, y) => (pts[x] ?? 0) - (pts[y] ?? 0) || (own[x] ?? 0) - (own[y] ?? 0));
    this.points = new Uint32Array(order.length);
    this.owners = new Uint32Array(order.length);
    order.forEach((k, pos) => {
      this.points[pos] = pts[k] ?? 0;
      this.owners[pos] = own[k] ?? 0;
    });
  }

  /** Position of the first point >= h, wrapping to 0. */
  locate(h: number): number {
    const p = this.points;
    let lo = 0;
    let hi = p.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((p[mid] ?? 0) < h) lo = mid + 1;
      else hi = mid;
    }
    return lo === p.length ? 0 : lo;
  }
}

/**
 * Consistent hashing on a key (the user id, a cart id): the same key reaches the same endpoint while the
 * fleet is stable, and when an endpoint leaves only the keys it owned (about 1/N) move. Ejected endpoints
 * are skipped by walking the ring forward, which sends their keys to the ring's next owner, as a departure
 * would. The ring is built once per candidate list; a pick is one string hash and a binary search.
 */
export class ConsistentHashBalancer implements Balancer {
  readonly name = 'consistent-hash';
  private readonly replicas: number;
  private readonly ejections: EjectionView;
  private readonly clock: Clock;
  private readonly fallback: Balancer;
  private readonly rings = new WeakMap<EndpointList, Ring>();

  constructor(opts: ConsistentHashOptions = {}) {
    this.replicas = opts.replicas ?? 160;
    this.ejections = opts.ejections ?? noEjections;
    this.clock = opts.clock ?? monotonicClock;
    this.fallback = opts.fallback ?? new RoundRobinBalancer({ ejections: this.ejections, clock: this.clock });
    if (!(this.replicas >= 1)) throw new RangeError('replicas must be >= 1');
  }

  pick(candidates: EndpointList, ctx?: PickContext): Endpoint | undefined {
    const key = ctx?.hashKey;
    if (key === undefined) return this.fallback.pick(candidates, ctx);
    const items = candidates.items;
    if (items.length <= 1) return items[0];
    let ring = this.rings.get(candidates);
    if (!ring) this.rings.set(candidates, (ring = new Ring(items, this.replicas)));
    const start = ring.locate(hashKey32(key));
    const first = items[ring.owners[start] ?? 0];
    if (this.ejections.activeEjections === 0 || first === undefined) return first;
    const now = this.clock.now();
    const len = ring.points.length;
    for (let k = 0; k < len; k++) {
      const ep = items[ring.owners[(start + k) % len] ?? 0];
      if (ep !== undefined && !this.ejections.isEjected(ep.id, now)) return ep;
    }
    return first; // everything ejected: panic, keep the key's home
  }

  onStart(ep: Endpoint): void {
    this.fallback.onStart?.(ep);
  }

  onEnd(ep: Endpoint): void {
    this.fallback.onEnd?.(ep);
  }

  onResult(ep: Endpoint, latencyMs: number, ok: boolean, now?: number): void {
    this.fallback.onResult?.(ep, latencyMs, ok, now);
  }

  retain(set: EndpointSet): void {
    this.fallback.retain?.(set);
  }
}
