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

/**
 * e^-x. Between calls of a busy caller x (elapsed / decayMs) is tiny, and there the Taylor polynomial is
 * exact to ~1e-10 relative at a fraction of Math.exp's cost (twice per call).
 */
function decay(x: number): number {
  return x < 1e-3 && x > -1e-3 ? 1 - x + 0.5 * x * x : Math.exp(-x);
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
  /**
   * Per candidate list (lists live as long as their snapshot), the Stats of its items in list order: a pick
   * reads two array slots instead of two Map lookups. Rebuilt lazily after `retain`.
   */
  private byList = new WeakMap<EndpointList, Stats[]>();
  private lastList: EndpointList | undefined;
  private lastListStats: Stats[] = [];
  /** The endpoint picked (or looked up) last: a call's onStart, onEnd and onResult name it, and find it here. */
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
    let i = 0;
    let j = 0;
    // A few redraws dodge ejected endpoints cheaply; the cap keeps the worst case bounded.
    for (let attempt = 0; attempt < 4; attempt++) {
      // One draw for both: the fraction left over from the first index is as uniform as the draw itself.
      const x = this.random() * n;
      i = Math.floor(x);
      j = Math.floor((x - i) * (n - 1));
      if (i >= n) i = n - 1;
      if (j >= n - 1) j = n - 2;
      if (j >= i) j++;
      if (ej.activeEjections === 0) break;
      const aOk = !ej.isEjected(items[i]!.id, now);
      const bOk = !ej.isEjected(items[j]!.id, now);
      if (aOk && bOk) break;
      if (aOk || bOk) return this.picked(items[aOk ? i : j]!);
      if (attempt === 3) return this.scanUsable(items, i, now) ?? items[i]; // all ejected: panic
    }
    const stats = candidates === this.lastList ? this.lastListStats : this.statsOfList(candidates);
    const sa = stats[i]!;
    const sb = stats[j]!;
    const b = this.cheaper(sb, sa, now);
    const ep = items[b ? j : i]!;
    this.lastId = ep.id;
    this.lastStats = b ? sb : sa;
    return ep;
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
    if (rtt > s.ewma || !s.measured) s.ewma = rtt;
    else {
      const w = decay(Math.max(0, now - s.stamp) / this.decayMs);
      s.ewma = s.ewma * w + rtt * (1 - w);
    }
    s.stamp = now;
    s.measured = true;
  }

  retain(set: EndpointSet): void {
    // In-flight counts of vanished endpoints would never come back down; drop them with the endpoint.
    for (const id of this.stats.keys()) if (!set.has(id)) this.stats.delete(id);
    this.lastId = this.lastStats = undefined;
    // The lists may hold Stats just dropped: rebuild them from the Map on their next pick.
    this.byList = new WeakMap();
    this.lastList = undefined;
    this.lastListStats = [];
  }

  /** Current cost of an endpoint (lower is better); exposed for metrics and tests. */
  cost(ep: Endpoint, now: number = this.clock.now()): number {
    const s = this.stats.get(ep.id);
    return s === undefined ? 0 : this.costOf(s, now);
  }

  /** `costOf(b) < costOf(a)`, with one exp instead of two when both are measured. */
  private cheaper(b: Stats, a: Stats, now: number): boolean {
    if (!a.measured || !b.measured || a.ewma === 0 || b.ewma === 0) return this.costOf(b, now) < this.costOf(a, now);
    // ewma_b·e^(-tb/d)·(in_b+1) < ewma_a·e^(-ta/d)·(in_a+1), both sides divided by e^(-ta/d).
    const ta = Math.max(0, now - a.stamp);
    const tb = Math.max(0, now - b.stamp);
    const f = ta === tb ? 1 : 1 / decay((ta - tb) / this.decayMs);
    return b.ewma * f * (b.inflight + 1) < a.ewma * (a.inflight + 1);
  }

  private costOf(s: Stats, now: number): number {
    if (!s.measured) return s.inflight > 0 ? this.maxPenaltyMs + s.inflight : 0;
    return this.decayed(s, now) * (s.inflight + 1);
  }

  private decayed(s: Stats, now: number): number {
    if (s.ewma === 0) return 0;
    return s.ewma * decay(Math.max(0, now - s.stamp) / this.decayMs);
  }

  /** The Stats of a list's items, in list order, created for items not seen yet (they cost 0 until used). */
  private statsOfList(list: EndpointList): Stats[] {
    let arr = this.byList.get(list);
    if (arr === undefined) {
      arr = [];
      for (const ep of list.items) {
        let s = this.stats.get(ep.id);
        if (s === undefined) this.stats.set(ep.id, (s = new Stats()));
        arr.push(s);
      }
      this.byList.set(list, arr);
    }
    this.lastList = list;
    this.lastListStats = arr;
    return arr;
  }

  /** An endpoint picked without comparing costs: becomes the one onStart, onEnd and onResult find first. */
  private picked(ep: Endpoint): Endpoint {
    this.statsOf(ep.id);
    return ep;
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
