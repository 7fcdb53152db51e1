import { monotonicClock, noEjections, type Balancer, type Clock, type EjectionView } from './balancer.js';
import type { Endpoint, EndpointList } from './endpoints.js';

export interface WeightedOptions {
  ejections?: EjectionView;
  clock?: Clock;
}

/**
 * Smooth weighted round robin (nginx's algorithm): every pick adds each endpoint's weight to its running
 * score, takes the highest and subtracts the total from it. Weights 5:1:1 give a a b a c a a rather than
 * a a a a a b c, so a heavy endpoint never receives a burst. O(n) per pick with no allocation; the scores
 * live in one typed array per candidate list.
 */
export class WeightedBalancer implements Balancer {
  readonly name = 'weighted';
  private readonly ejections: EjectionView;
  private readonly clock: Clock;
  private readonly scores = new WeakMap<EndpointList, Float64Array>();

  constructor(opts: WeightedOptions = {}) {
    this.ejections = opts.ejections ?? noEjections;
    this.clock = opts.clock ?? monotonicClock;
  }

  pick(candidates: EndpointList): Endpoint | undefined {
    const items = candidates.items;
    const n = items.length;
    if (n === 0) return undefined;
    let cur = this.scores.get(candidates);
    if (!cur) this.scores.set(candidates, (cur = new Float64Array(n)));
    const ej = this.ejections.activeEjections > 0 ? this.ejections : undefined;
    const best = this.round(items, cur, ej, ej ? this.clock.now() : 0);
    // Every endpoint ejected: panic, ignore ejection rather than fail every call.
    return items[best >= 0 ? best : this.round(items, cur, undefined, 0)];
  }

  private round(items: readonly Endpoint[], cur: Float64Array, ej: EjectionView | undefined, now: number): number {
    let total = 0;
    let best = -1;
    let bestScore = -Infinity;
    for (let i = 0; i < items.length; i++) {
      const ep = items[i];
      if (ep === undefined || (ej !== undefined && ej.isEjected(ep.id, now))) continue;
      const s = (cur[i] ?? 0) + ep.weight;
      cur[i] = s;
      total += ep.weight;
      if (s > bestScore) {
        bestScore = s;
        best = i;
      }
    }
    if (best >= 0) cur[best] = bestScore - total;
    return best;
  }
}
