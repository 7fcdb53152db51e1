import type { Endpoint, EndpointList, EndpointSet } from './endpoints.js';

/**
 * Milliseconds on a monotonic-enough clock; injectable so tests drive time by hand. The same clock as the
 * limiters' and the timer wheel's: `monotonicClock` is one object shared by all (epoch-aligned
 * `performance.now()`, its time origin read once).
 */
export { monotonicClock, type Clock } from '../ratelimit/clock.js';

/** A uniform random number in [0, 1); injectable so distributions are reproducible in tests. */
export type Random = () => number;

export interface PickContext {
  /** Key for consistent hashing (e.g. the user id); other balancers ignore it. */
  hashKey?: string | undefined;
  /** The balancer's clock as the caller just read it, if it did: saves a read (~60 ns) on the hot path. */
  now?: number | undefined;
}

/**
 * One load-balancing strategy. `pick` is the hot path: it must not allocate per call and must not filter
 * (the EndpointList is already restricted to routable endpoints of the right lane).
 *
 * The owner of a balancer reports the life of each call: `onStart` when it is sent, `onEnd` when it
 * finishes, `onResult` with its latency and outcome (and the clock reading the latency ended at, when the
 * owner has it, so the balancer need not read the clock again). Balancers that do not care leave them out.
 */
export interface Balancer {
  readonly name: string;
  pick(candidates: EndpointList, ctx?: PickContext): Endpoint | undefined;
  onStart?(ep: Endpoint): void;
  onEnd?(ep: Endpoint): void;
  onResult?(ep: Endpoint, latencyMs: number, ok: boolean, now?: number): void;
  /** Called on a snapshot change so per-endpoint state of vanished endpoints can be dropped. */
  retain?(set: EndpointSet): void;
}

/** What a balancer needs to know about outlier ejection; implemented by OutlierDetector. */
export interface EjectionView {
  /**
   * An upper bound on the endpoints currently ejected (expired ejections may still count until the next
   * sweep). Zero lets balancers skip every `isEjected` lookup: the common case costs one load.
   */
  readonly activeEjections: number;
  isEjected(id: string, now: number): boolean;
}

export const noEjections: EjectionView = { activeEjections: 0, isEjected: () => false };

/**
 * Index of the first endpoint at or after `start` (cyclically) that is not ejected, or -1 when all are.
 * Callers decide what "all ejected" means (usually: panic and ignore ejection, as Envoy's panic threshold
 * does, because sending to a possibly-bad endpoint beats failing every call).
 */
export function nextUsable(items: readonly Endpoint[], start: number, ej: EjectionView, now: number): number {
  const n = items.length;
  for (let k = 0; k < n; k++) {
    const i = (start + k) % n;
    const ep = items[i];
    if (ep !== undefined && !ej.isEjected(ep.id, now)) return i;
  }
  return -1;
}
