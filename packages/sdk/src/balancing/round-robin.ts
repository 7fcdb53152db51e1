import { noEjections, nextUsable, type Balancer, type Clock, type EjectionView, type Random, monotonicClock } from './balancer.js';
import type { Endpoint, EndpointList } from './endpoints.js';

export interface RoundRobinOptions {
  ejections?: EjectionView;
  clock?: Clock;
  /** Picks each list's starting offset, so that many clients do not all hit the first endpoint first. */
  random?: Random;
}

interface Cursor {
  next: number;
}

/** Round robin over a list, skipping ejected endpoints. One cursor per candidate list. */
export class RoundRobinBalancer implements Balancer {
  readonly name = 'round-robin';
  private readonly ejections: EjectionView;
  private readonly clock: Clock;
  private readonly random: Random;
  // Keyed on list identity: lists live as long as their snapshot, so cursors go with them.
  private readonly cursors = new WeakMap<EndpointList, Cursor>();

  constructor(opts: RoundRobinOptions = {}) {
    this.ejections = opts.ejections ?? noEjections;
    this.clock = opts.clock ?? monotonicClock;
    this.random = opts.random ?? Math.random;
  }

  pick(candidates: EndpointList): Endpoint | undefined {
    const items = candidates.items;
    const n = items.length;
    if (n === 0) return undefined;
    let c = this.cursors.get(candidates);
    if (!c) this.cursors.set(candidates, (c = { next: Math.floor(this.random() * n) % n }));
    let i = c.next % n;
    if (this.ejections.activeEjections > 0) {
      const u = nextUsable(items, i, this.ejections, this.clock.now());
      if (u >= 0) i = u; // else every endpoint is ejected: panic and keep plain rotation
    }
    c.next = (i + 1) % n;
    return items[i];
  }
}
