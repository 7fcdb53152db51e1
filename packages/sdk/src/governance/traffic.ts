import { bucketOf, type LaneEntryRule, type LoadBalancing, type Resource, type TrafficPolicySpec, type TrustedIdentity, type VersionRoute } from '@plinth/core';
import type { Random } from '../balancing/balancer.js';
import type { EndpointList, EndpointSet } from '../balancing/endpoints.js';
import { requestMatches, type MatchRequest } from './match.js';

/** What lane entry looks at: the request plus the user id from baggage (for sticky percentages). */
export interface EntryRequest extends MatchRequest {
  readonly userId: string | undefined;
}

interface CompiledLane {
  readonly name: string;
  readonly services: ReadonlySet<string>;
  readonly strict: boolean;
}

interface CompiledEntry {
  readonly lane: string;
  readonly rule: LaneEntryRule;
}

export interface SubjectRef {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
}

const DEFAULT_LB: LoadBalancing = { service: '*', policy: 'p2c' };

/**
 * Every TrafficPolicy of a namespace merged and compiled once per snapshot. Policies apply in name order; for a
 * lane or a load-balancing entry named twice, the first policy wins; routes are concatenated in that order
 * (first match wins), so splitting one namespace's traffic rules over several resources stays predictable.
 */
export class CompiledTraffic {
  private readonly lanes = new Map<string, CompiledLane>();
  private readonly entries: CompiledEntry[] = [];
  private readonly routes = new Map<string, VersionRoute[]>();
  private readonly lb = new Map<string, LoadBalancing>();
  private readonly defaultLb: LoadBalancing;
  private readonly trusted: TrustedIdentity[] = [];

  static readonly empty = new CompiledTraffic([]);

  constructor(policies: readonly Resource<TrafficPolicySpec>[]) {
    const sorted = [...policies].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
    let star: LoadBalancing | undefined;
    for (const p of sorted) {
      const s = p.spec;
      for (const l of s.lanes ?? []) {
        if (this.lanes.has(l.name)) continue;
        this.lanes.set(l.name, { name: l.name, services: new Set(l.services), strict: l.mode === 'strict' });
        for (const rule of l.entry ?? []) this.entries.push({ lane: l.name, rule });
      }
      for (const r of s.routing ?? []) {
        let arr = this.routes.get(r.service);
        if (!arr) this.routes.set(r.service, (arr = []));
        arr.push(r);
      }
      for (const b of s.loadBalancing ?? []) {
        if (b.service === '*') star ??= b;
        else if (!this.lb.has(b.service)) this.lb.set(b.service, b);
      }
      this.trusted.push(...(s.trustedIdentities ?? []));
    }
    this.defaultLb = star ?? DEFAULT_LB;
  }

  /** Lane entry at the first hop: the lane of the first matching entry rule, or undefined (base lane). */
  enter(req: EntryRequest, random: Random = Math.random): string | undefined {
    for (const e of this.entries) if (entryMatches(e, req, random)) return e.lane;
    return undefined;
  }

  get hasEntryRules(): boolean {
    return this.entries.length > 0;
  }

  /**
   * The candidates for a call to `service` in `lane`. A lane that lists the callee routes to its lane instances,
   * else to the base lane (fallbackToBase) or nowhere (strict: undefined). A lane no policy declares (set by a
   * trusted client) uses lane instances where they exist, else the base lane. Returns EndpointSet-owned lists so
   * balancer state keyed on them lives as long as the snapshot.
   */
  candidates(set: EndpointSet, service: string, lane: string | undefined): EndpointList | undefined {
    if (lane !== undefined) {
      const inLane = set.lane(lane);
      const declared = this.lanes.get(lane);
      if (declared === undefined || declared.services.has(service)) {
        if (inLane !== undefined && inLane.size > 0) return inLane;
        if (declared?.strict === true && declared.services.has(service)) return undefined;
      }
    }
    return set.base.size > 0 ? set.base : undefined;
  }

  /** Version routes of one callee, in evaluation order. */
  routesFor(service: string): readonly VersionRoute[] {
    return this.routes.get(service) ?? NO_ROUTES;
  }

  loadBalancingFor(service: string): LoadBalancing {
    return this.lb.get(service) ?? this.defaultLb;
  }

  /** The internal baggage keys (`plinth.*`) a subject may send through the edge; empty for everyone else. */
  trustedKeys(subject: SubjectRef | undefined): readonly string[] {
    if (subject === undefined) return NO_KEYS;
    const keys: string[] = [];
    for (const t of this.trusted) {
      const s = t.subject;
      if (s.kind === subject.kind && s.name === subject.name && (s.namespace === undefined || s.namespace === subject.namespace)) keys.push(...t.baggageKeys);
    }
    return keys;
  }
}

const NO_ROUTES: readonly VersionRoute[] = Object.freeze([]);
const NO_KEYS: readonly string[] = Object.freeze([]);

function entryMatches(e: CompiledEntry, req: EntryRequest, random: Random): boolean {
  const r = e.rule;
  if (!requestMatches(r.match, req)) return false;
  if (r.userIdHashPercent !== undefined) {
    if (req.userId === undefined || req.userId === '') return false;
    // Salted with the lane so that lanes at 5% each do not all take the same 5% of users.
    if (bucketOf(`${e.lane}:${req.userId}`) >= Math.round(r.userIdHashPercent * 100)) return false;
  }
  // The random draw comes last so it is only spent on requests that passed the other conditions.
  if (r.weight !== undefined && !(random() * 100 < r.weight)) return false;
  return true;
}
