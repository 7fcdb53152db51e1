import { monotonicClock, noEjections, type Balancer, type Clock, type EjectionView, type PickContext, type Random } from './balancer.js';
import type { Endpoint, EndpointList, EndpointSet } from './endpoints.js';

export interface P2COptions {
  clock?: Clock;
  random?: Random;
  ejections?: EjectionView;
  /** Time constant of the latency average: an observation's weight halves every ~0.7·decayMs. Default 10 s. */
  decayMs?: number;
  /**
   * A failed call counts as at least this latency, and at least 4x the current average: fast failures
   * (connection refused in 1 ms) must not make a broken endpoint look like the fastest one. Default 50 ms.
   */
  failurePenaltyMs?: number;
  /** Ceiling of any single observation, and the cost of an unmeasured endpoint with calls pending. Default 10 s. */
  maxPenaltyMs?: number;
}

class Stats {
  ewma = 0;
  stamp = 0;
  inflight = 0;
  measured = false;
}

/**
 * Power of two choices over a peak-EWMA cost (Finagle's and Linkerd's default): pick two distinct endpoints
 * at random and send to the cheaper, where cost = latency average × (in-flight + 1).
 *
 * Peak EWMA: a slower observation replaces the average at once (react to trouble immediately), faster ones
 * blend in with a weight that depends on elapsed time, not call count. When read, the average also decays
 * toward zero with time, so an endpoint that was avoided after a spike is tried again without help.
 * An endpoint never measured costs 0 while idle (so new instances get probed) and a large penalty once a
 * call to it is pending (so a slow newcomer is not flooded before its first answer).
 */
export class P2CBalancer implements Balancer {
  readonly name = 'p2c';
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly ejections: EjectionView;
  private readonly decayMs: number;
  private readonly failurePenaltyMs: number;
  private readonly maxPenaltyMs: number;
  private readonly stats = new Map<string, Stats>();
  /** The last endpoint looked up: a call's onStart, onEnd and onResult name the same one, one Map lookup for three. */
  private lastId: string | undefined;
  private lastStats: Stats | undefined;

  constructor(opts: P2COptions = {}) {
    this.clock = opts.clock ?? monotonicClock;
    this.random = opts.random ?? Math.random;
    this.ejections = opts.ejections ?? noEjections;
    this.decayMs = opts.decayMs ?? 10_000;
    this.failurePenaltyMs = opts.failurePenaltyMs ?? 50;
    this.maxPenaltyMs = opts.maxPenaltyMs ?? 10_000;
    if (!(this.decayMs > 0)) throw new RangeError('decayMs must be > 0');
  }

  pick(candidates: EndpointList, ctx?: PickContext): Endpoint | undefined {
    const items = candidates.items;
    const n = items.length;
    if (n <= 1) return items[0];
    const now = ctx?.now ?? this.clock.now();
    const ej = this.ejections;
    let a: Endpoint | undefined;
    let b: Endpoint | undefined;
    // A few redraws dodge ejected endpoints cheaply; the cap keeps the worst case bounded.
    for (let attempt = 0; attempt < 4; attempt++) {
      const i = Math.floor(this.random() * n) % n;
      let j = Math.floor(this.random() * (n - 1)) % (n - 1);
      if (j >= i) j++;
      a = items[i];
      b = items[j];
      if (ej.activeEjections === 0) break;
      const aOk = a !== undefined && !ej.isEjected(a.id, now);
      const bOk = b !== undefined && !ej.isEjected(b.id, now);
      if (aOk && bOk) break;
      if (aOk || bOk) return aOk ? a : b;
      if (attempt === 3) return this.scanUsable(items, i, now) ?? a; // all ejected: panic
    }
    if (a === undefined || b === undefined) return a ?? b;
    return this.cost(b, now) < this.cost(a, now) ? b : a;
  }

  onStart(ep: Endpoint): void {
    this.statsOf(ep.id).inflight++;
  }

  onEnd(ep: Endpoint): void {
    const s = ep.id === this.lastId ? this.lastStats : this.stats.get(ep.id);
    if (s && s.inflight > 0) s.inflight--;
  }

  onResult(ep: Endpoint, latencyMs: number, ok: boolean, now: number = this.clock.now()): void {
    const s = this.statsOf(ep.id);
    let rtt = Math.max(0, latencyMs);
    if (!ok) rtt = Math.max(rtt, this.failurePenaltyMs, this.decayed(s, now) * 4);
    rtt = Math.min(rtt, this.maxPenaltyMs);
    const w = Math.exp(-Math.max(0, now - s.stamp) / this.decayMs);
    s.ewma = rtt > s.ewma || !s.measured ? rtt : s.ewma * w + rtt * (1 - w);
    s.stamp = now;
    s.measured = true;
  }

  retain(set: EndpointSet): void {
    // In-flight counts of vanished endpoints would never come back down; drop them with the endpoint.
    for (const id of this.stats.keys()) if (!set.has(id)) this.stats.delete(id);
    this.lastId = this.lastStats = undefined;
  }

  /** Current cost of an endpoint (lower is better); exposed for metrics and tests. */
  cost(ep: Endpoint, now: number = this.clock.now()): number {
    const s = this.stats.get(ep.id);
    if (!s) return 0;
    const avg = this.decayed(s, now);
    if (!s.measured) return s.inflight > 0 ? this.maxPenaltyMs + s.inflight : 0;
    return avg * (s.inflight + 1);
  }

  private decayed(s: Stats, now: number): number {
    if (s.ewma === 0) return 0;
    return s.ewma * Math.exp(-Math.max(0, now - s.stamp) / this.decayMs);
  }

  private scanUsable(items: readonly Endpoint[], start: number, now: number): Endpoint | undefined {
    for (let k = 0; k < items.length; k++) {
      const ep = items[(start + k) % items.length];
      if (ep !== undefined && !this.ejections.isEjected(ep.id, now)) return ep;
    }
    return undefined;
  }

  private statsOf(id: string): Stats {
    if (id === this.lastId) return this.lastStats!;
    let s = this.stats.get(id);
    if (!s) this.stats.set(id, (s = new Stats()));
    this.lastId = id;
    this.lastStats = s;
    return s;
  }
}
