import type { Health, InstanceSpec } from '@plinth/core';

/**
 * One routable copy of a service, as the data plane sees it. Built once per registry snapshot change and
 * shared, read-only, by every pick until the next change.
 *
 * Optional facts are `T | undefined` rather than optional properties so every Endpoint has the same shape
 * (one hidden class for V8, monomorphic property loads on the pick path).
 */
export interface Endpoint {
  readonly id: string;
  readonly service: string;
  readonly version: string;
  readonly address: string;
  /** Traffic lane; undefined is the base lane. */
  readonly lane: string | undefined;
  readonly zone: string | undefined;
  readonly region: string | undefined;
  readonly weight: number;
  readonly draining: boolean;
  readonly health: Health;
  readonly metadata: Readonly<Record<string, string>>;
}

/**
 * The fields of an Instance spec an endpoint needs. Defaults (weight, health, draining) may be missing when
 * a spec arrives without having gone through the schema, so they are optional here and defaulted below.
 */
export type InstanceLike = Pick<InstanceSpec, 'service' | 'version' | 'address'> &
  Partial<Pick<InstanceSpec, 'lane' | 'zone' | 'region' | 'weight' | 'draining' | 'health' | 'metadata'>>;

const EMPTY_METADATA: Readonly<Record<string, string>> = Object.freeze({});

/** The lane name OpenSergo's VirtualWorkloads use for "no tag"; treated the same as an absent lane. */
export const BASE_LANE = '_base';

export function endpointOf(id: string, spec: InstanceLike): Endpoint {
  const lane = spec.lane === undefined || spec.lane === '' || spec.lane === BASE_LANE ? undefined : spec.lane;
  return Object.freeze({
    id,
    service: spec.service,
    version: spec.version,
    address: spec.address,
    lane,
    zone: spec.zone,
    region: spec.region,
    weight: spec.weight ?? 100,
    draining: spec.draining ?? false,
    health: spec.health ?? 'passing',
    metadata: spec.metadata ?? EMPTY_METADATA,
  });
}

/** Whether an endpoint may receive new calls. Weight 0 is an operator's way to stop new traffic, like draining. */
export function isRoutable(ep: Endpoint): boolean {
  return !ep.draining && ep.health !== 'critical' && ep.weight > 0;
}

/**
 * An immutable candidate list: what a balancer picks from. Balancers key their per-list state (ring, cursor,
 * smooth-weight counters) on the list's identity, so a list must be reused for as long as its snapshot lives;
 * EndpointSet guarantees that by building every list once.
 */
export class EndpointList {
  readonly items: readonly Endpoint[];
  readonly totalWeight: number;
  private readonly zones: ReadonlyMap<string, EndpointList> | undefined;

  constructor(items: readonly Endpoint[], indexZones = true) {
    this.items = Object.freeze([...items]);
    let w = 0;
    for (const ep of this.items) w += ep.weight;
    this.totalWeight = w;
    if (indexZones) {
      const byZone = new Map<string, Endpoint[]>();
      for (const ep of this.items) {
        if (ep.zone === undefined) continue;
        let arr = byZone.get(ep.zone);
        if (!arr) byZone.set(ep.zone, (arr = []));
        arr.push(ep);
      }
      const zones = new Map<string, EndpointList>();
      for (const [z, arr] of byZone) zones.set(z, new EndpointList(arr, false));
      this.zones = zones;
    }
  }

  get size(): number {
    return this.items.length;
  }

  /** The endpoints of this list in one zone (same identity on every call). */
  zone(name: string): EndpointList | undefined {
    return this.zones?.get(name);
  }

  zoneNames(): IterableIterator<string> {
    return (this.zones ?? new Map<string, EndpointList>()).keys();
  }
}

const EMPTY_LIST = new EndpointList([]);

/**
 * Every routable endpoint of one service, indexed by lane and, within each lane, by zone. Draining, critical
 * and zero-weight instances are left out here, once, so that a pick never filters.
 */
export class EndpointSet {
  /** Every routable endpoint, in every lane. */
  readonly all: EndpointList;
  /** Routable endpoints without a lane. */
  readonly base: EndpointList;
  /** Instances seen but not routable (draining, critical, weight 0): for metrics and readiness checks. */
  readonly excluded: number;
  private readonly byLane: ReadonlyMap<string, EndpointList>;
  private readonly byId: ReadonlyMap<string, Endpoint>;

  static readonly empty = new EndpointSet([]);

  /** Builds a set from instances as `[id, spec]` pairs (the id is the Instance resource's name). */
  static fromInstances(instances: Iterable<readonly [string, InstanceLike]>): EndpointSet {
    const eps: Endpoint[] = [];
    for (const [id, spec] of instances) eps.push(endpointOf(id, spec));
    return new EndpointSet(eps);
  }

  /** Builds a set from Instance resources as a snapshot holds them. */
  static fromResources(resources: Iterable<{ metadata: { name: string }; spec: InstanceLike }>): EndpointSet {
    const eps: Endpoint[] = [];
    for (const r of resources) eps.push(endpointOf(r.metadata.name, r.spec));
    return new EndpointSet(eps);
  }

  constructor(endpoints: Iterable<Endpoint>) {
    const routable: Endpoint[] = [];
    let excluded = 0;
    for (const ep of endpoints) {
      if (isRoutable(ep)) routable.push(ep);
      else excluded++;
    }
    // Sorted by id so that every client holding the same snapshot sees the same order (round robin offsets,
    // test determinism); the cost is paid once per snapshot, not per pick.
    routable.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.excluded = excluded;
    this.all = new EndpointList(routable);
    const lanes = new Map<string | undefined, Endpoint[]>();
    const byId = new Map<string, Endpoint>();
    for (const ep of routable) {
      byId.set(ep.id, ep);
      let arr = lanes.get(ep.lane);
      if (!arr) lanes.set(ep.lane, (arr = []));
      arr.push(ep);
    }
    const baseArr = lanes.get(undefined);
    this.base = baseArr ? new EndpointList(baseArr) : EMPTY_LIST;
    const byLane = new Map<string, EndpointList>();
    for (const [lane, arr] of lanes) if (lane !== undefined) byLane.set(lane, new EndpointList(arr));
    this.byLane = byLane;
    this.byId = byId;
  }

  get size(): number {
    return this.all.size;
  }

  /** Routable endpoints in a named lane, or undefined when the callee has none there. */
  lane(name: string): EndpointList | undefined {
    return this.byLane.get(name);
  }

  laneNames(): IterableIterator<string> {
    return this.byLane.keys();
  }

  get(id: string): Endpoint | undefined {
    return this.byId.get(id);
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }
}
