import { monotonicClock, type Clock, type EjectionView } from './balancer.js';
import type { EndpointSet } from './endpoints.js';

export interface OutlierOptions {
  /** Consecutive failed calls that eject an endpoint. Default 5 (Envoy's consecutive_5xx). */
  consecutiveFailures?: number;
  /** First ejection lasts this long; each repeat doubles it. Default 30 s. */
  baseEjectionMs?: number;
  /** Ceiling of the exponential ejection time. Default 300 s. */
  maxEjectionMs?: number;
  /**
   * At most this share of the population may be ejected at once. Default 50. At least one endpoint may be
   * ejected when there are two or more, and never the last one: ejecting everything would turn a partial
   * outage into a total one.
   */
  maxEjectionPercent?: number;
  clock?: Clock;
}

interface EndpointState {
  consecutive: number;
  /** Ejections in a row without a quiet period; drives the exponential duration. */
  multiplier: number;
  /** End of the last ejection (0 = never ejected). */
  lastUntil: number;
}

/**
 * Outlier ejection for one upstream service. Fed per endpoint by call results (consecutive failures) and
 * by the per-instance circuit breaker (error ratio, slow-call ratio: the breaker owns the windows, an
 * open breaker ejects here), read by the balancers through `isEjected`.
 *
 * No timers: ejections expire lazily when read, so an idle client holds no scheduled work.
 */
export class OutlierDetector implements EjectionView {
  readonly consecutiveFailures: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  readonly maxEjectionPercent: number;
  private readonly clock: Clock;
  private readonly state = new Map<string, EndpointState>();
  /** The last endpoint's state: results mostly repeat the endpoint just looked up. */
  private lastId: string | undefined;
  private lastState: EndpointState | undefined;
  /** id → ejected until (clock ms). May hold expired entries until the next sweep. */
  private readonly ejected = new Map<string, number>();
  private population = 0;
  /** Endpoints with a failure streak under way: while none, a success has nothing to reset (no lookup). */
  private streaks = 0;

  constructor(opts: OutlierOptions = {}) {
    this.consecutiveFailures = opts.consecutiveFailures ?? 5;
    this.baseEjectionMs = opts.baseEjectionMs ?? 30_000;
    this.maxEjectionMs = opts.maxEjectionMs ?? 300_000;
    this.maxEjectionPercent = opts.maxEjectionPercent ?? 50;
    this.clock = opts.clock ?? monotonicClock;
    if (!(this.consecutiveFailures >= 1)) throw new RangeError('consecutiveFailures must be >= 1');
    if (!(this.baseEjectionMs > 0) || !(this.maxEjectionMs >= this.baseEjectionMs))
      throw new RangeError('need 0 < baseEjectionMs <= maxEjectionMs');
    if (!(this.maxEjectionPercent >= 0 && this.maxEjectionPercent <= 100))
      throw new RangeError('maxEjectionPercent must be within [0, 100]');
  }

  get activeEjections(): number {
    return this.ejected.size;
  }

  isEjected(id: string, now: number): boolean {
    const until = this.ejected.get(id);
    if (until === undefined) return false;
    if (until > now) return true;
    this.ejected.delete(id);
    return false;
  }

  /** Endpoints ejected at `now`, after dropping expired ejections. */
  ejectedCount(now: number = this.clock.now()): number {
    for (const [id, until] of this.ejected) if (until <= now) this.ejected.delete(id);
    return this.ejected.size;
  }

  /** Ids ejected at `now` (for metrics and the console; allocates). */
  ejectedIds(now: number = this.clock.now()): string[] {
    this.ejectedCount(now);
    return [...this.ejected.keys()];
  }

  /** Size of the fleet the cap is a share of. `retain` sets it from a snapshot. */
  setPopulation(n: number): void {
    this.population = Math.max(0, Math.floor(n));
  }

  /** On a snapshot change: adopt the new fleet size and forget endpoints that are gone. */
  retain(set: EndpointSet): void {
    this.population = set.size;
    for (const [id, s] of this.state)
      if (!set.has(id)) {
        this.clearStreak(s);
        this.state.delete(id);
      }
    this.lastId = this.lastState = undefined;
    for (const id of this.ejected.keys()) if (!set.has(id)) this.ejected.delete(id);
  }

  /** How many endpoints may be ejected at once, given the population. */
  maxEjected(): number {
    // Endpoints we have heard about count even before the first snapshot, so an early failure storm is
    // still capped against something.
    const pop = Math.max(this.population, this.state.size);
    if (pop <= 1) return 0;
    return Math.min(pop - 1, Math.max(1, Math.floor((pop * this.maxEjectionPercent) / 100)));
  }

  /**
   * Ejects `id` until `untilMs` (on this detector's clock). Returns false when the cap forbids it; extending
   * an ejection that is already in force is always allowed.
   */
  eject(id: string, untilMs: number): boolean {
    const now = this.clock.now();
    if (untilMs <= now) return false;
    const current = this.ejected.get(id);
    if (current !== undefined && current > now) {
      if (untilMs > current) this.ejected.set(id, untilMs);
      this.stateOf(id).lastUntil = Math.max(untilMs, current);
      return true;
    }
    if (this.ejectedCount(now) >= this.maxEjected()) return false;
    this.ejected.set(id, untilMs);
    this.stateOf(id).lastUntil = untilMs;
    return true;
  }

  /** Ejects `id` for the exponential duration its history earns. Returns whether it was ejected. */
  ejectNow(id: string): boolean {
    const now = this.clock.now();
    const s = this.stateOf(id);
    if (this.isEjected(id, now)) return true;
    // The multiplier decays by one per base period spent healthy, computed lazily instead of on a timer.
    if (s.lastUntil > 0 && s.multiplier > 0) {
      const quiet = Math.max(0, Math.floor((now - s.lastUntil) / this.baseEjectionMs));
      s.multiplier = Math.max(0, s.multiplier - quiet);
    }
    const duration = Math.min(this.maxEjectionMs, this.baseEjectionMs * 2 ** s.multiplier);
    if (!this.eject(id, now + duration)) return false;
    s.multiplier = Math.min(s.multiplier + 1, 30);
    this.clearStreak(s);
    return true;
  }

  /** Lifts an ejection early (an operator, or a successful active health check). */
  uneject(id: string): void {
    this.ejected.delete(id);
  }

  /** Feeds one call outcome. Returns true when this result ejected the endpoint. */
  record(id: string, ok: boolean): boolean {
    if (ok && this.streaks === 0) return false;
    const s = this.stateOf(id);
    if (ok) {
      this.clearStreak(s);
      return false;
    }
    if (s.consecutive++ === 0) this.streaks++;
    if (s.consecutive < this.consecutiveFailures) return false;
    return this.ejectNow(id);
  }

  /**
   * Hook for the per-instance circuit breaker: an opening breaker (error ratio, slow-call ratio or
   * consecutive failures over its window) ejects the endpoint; closing it clears the failure streak.
   */
  onBreakerStateChange(id: string, state: 'open' | 'half-open' | 'closed' | 'isolated' | 'disabled'): void {
    if (state === 'open' || state === 'isolated') this.ejectNow(id);
    else if (state === 'closed') this.clearStreak(this.stateOf(id));
  }

  private clearStreak(s: EndpointState): void {
    if (s.consecutive === 0) return;
    s.consecutive = 0;
    this.streaks--;
  }

  private stateOf(id: string): EndpointState {
    if (id === this.lastId) return this.lastState!;
    let s = this.state.get(id);
    if (!s) this.state.set(id, (s = { consecutive: 0, multiplier: 0, lastUntil: 0 }));
    this.lastId = id;
    this.lastState = s;
    return s;
  }
}
