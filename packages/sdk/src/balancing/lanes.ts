import { bucketOf } from '@plinth/core';
import type { Random } from './balancer.js';
import type { EndpointList, EndpointSet } from './endpoints.js';

/*
 * Full-link gray release in OpenSergo TrafficLane terms: traffic is *coloured* at the edge (entry rules),
 * the colour travels in W3C baggage (`plinth.lane`, OpenSergo's `traceIdBaggage`), and every hop routes to
 * the callee's instances in that lane (Instance.spec.lane), falling back to the base lane where the callee
 * has none, so a lane only needs to deploy the services that changed.
 *
 * The types below are what a `TrafficPolicy` resource spec maps onto, field for field:
 *
 *   spec:
 *     lanes:
 *       - name: gray                  # LaneSpec.name  = Instance.spec.lane of its instances
 *         fallback: base              # LaneSpec.fallback: 'base' (default) | 'strict'
 *         match:                      # LaneSpec.match: LaneMatch[], any one admits a request (OR)
 *           - headers: { x-canary: { exact: "1" } }    # every condition of one LaneMatch must hold (AND)
 *           - cookies: { canary: { prefix: "on" } }
 *           - userPercent: 10                          # sticky on bucketOf(salt + ':' + user id)
 *           - weight: 5                                # non-sticky share of requests
 */

/** OpenSergo's StringMatch: exactly one of exact, prefix or regex. */
export type StringMatch = { readonly exact: string } | { readonly prefix: string } | { readonly regex: string };

/** Conditions that admit a request into a lane; all present conditions must hold. */
export interface LaneMatch {
  /** Request header name (any case) → match on its value. */
  readonly headers?: Readonly<Record<string, StringMatch>>;
  /** Cookie name → match on its value. */
  readonly cookies?: Readonly<Record<string, StringMatch>>;
  /**
   * Percent of users (0..100, 0.01 resolution) admitted by a stable hash of their id: the same user gets the
   * same answer on every request and every host. Requests without a user id do not match.
   */
  readonly userPercent?: number;
  /** Percent of requests (0..100) admitted at random; not sticky. */
  readonly weight?: number;
}

/** What a call in a lane does when the callee has no instances in it. */
export type LaneFallback = 'base' | 'strict';

/** One lane of a TrafficPolicy. */
export interface LaneSpec {
  readonly name: string;
  /** Default 'base'. */
  readonly fallback?: LaneFallback;
  /** Entry rules: a request matching any one enters the lane. Empty or absent: nobody enters at the edge. */
  readonly match?: readonly LaneMatch[];
  /** Salt of the user-id hash; default the lane name, so two 10% lanes do not take the same users. */
  readonly salt?: string;
}

/** A flattened entry rule, as `matchLane` evaluates them (first match wins, in policy order). */
export interface LaneRule {
  readonly lane: string;
  readonly match: LaneMatch;
  readonly salt?: string;
}

/** The request facts lane entry looks at. Header names are lower case (as node:http delivers them). */
export interface LaneRequest {
  readonly headers: Readonly<Record<string, string | undefined>>;
  /** Parsed cookies; when absent, the `cookie` header is scanned for the names a rule needs. */
  readonly cookies?: Readonly<Record<string, string | undefined>>;
  readonly userId?: string | undefined;
}

export function laneRulesOf(lanes: readonly LaneSpec[]): LaneRule[] {
  const rules: LaneRule[] = [];
  for (const l of lanes)
    for (const m of l.match ?? []) rules.push(l.salt === undefined ? { lane: l.name, match: m } : { lane: l.name, match: m, salt: l.salt });
  return rules;
}

// Compiled regexes, cached on the match object: policies are compiled once per snapshot, not per request.
const regexCache = new WeakMap<object, RegExp | null>();
const MAX_REGEX_LENGTH = 1024;

export function stringMatches(m: StringMatch, value: string | undefined): boolean {
  if (value === undefined) return false;
  if ('exact' in m) return value === m.exact;
  if ('prefix' in m) return value.startsWith(m.prefix);
  let re = regexCache.get(m);
  if (re === undefined) {
    try {
      // Anchored, like OpenSergo's and Envoy's safe_regex: a regex that matches a substring is a policy bug.
      re = m.regex.length > MAX_REGEX_LENGTH ? null : new RegExp(`^(?:${m.regex})$`);
    } catch {
      re = null; // an invalid regex never matches rather than failing requests
    }
    regexCache.set(m, re);
  }
  return re !== null && re.test(value);
}

/** The value of one cookie in a `Cookie` header, without building a map of all of them. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  let i = 0;
  while (i < header.length) {
    let end = header.indexOf(';', i);
    if (end < 0) end = header.length;
    const eq = header.indexOf('=', i);
    if (eq > i && eq < end && header.slice(i, eq).trim() === name) {
      let v = header.slice(eq + 1, end).trim();
      if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
      return v;
    }
    i = end + 1;
  }
  return undefined;
}

function laneMatches(rule: LaneRule, req: LaneRequest, random: Random): boolean {
  const m = rule.match;
  if (m.headers)
    for (const name in m.headers) {
      const sm = m.headers[name];
      if (sm === undefined || !stringMatches(sm, req.headers[name.toLowerCase()])) return false;
    }
  if (m.cookies)
    for (const name in m.cookies) {
      const sm = m.cookies[name];
      const v = req.cookies ? req.cookies[name] : cookieValue(req.headers['cookie'], name);
      if (sm === undefined || !stringMatches(sm, v)) return false;
    }
  if (m.userPercent !== undefined) {
    if (req.userId === undefined || req.userId === '') return false;
    if (bucketOf(`${rule.salt ?? rule.lane}:${req.userId}`) >= Math.round(m.userPercent * 100)) return false;
  }
  // The random draw comes last so it is only spent on requests that passed the other conditions.
  if (m.weight !== undefined && !(random() * 100 < m.weight)) return false;
  return true;
}

/**
 * The lane a request enters at the edge: the first rule that matches, or undefined (the base lane).
 * Only the edge (gateway, or a service's inbound side for untrusted callers) calls this; inside the mesh
 * the lane is read from baggage.
 */
export function matchLane(rules: readonly LaneRule[], request: LaneRequest, random: Random = Math.random): string | undefined {
  for (const r of rules) if (laneMatches(r, request, random)) return r.lane;
  return undefined;
}

/**
 * Routing of one call: the callee's endpoints in the request's lane when it has any, else its base lane,
 * unless the lane is strict. Undefined means no endpoint may serve the call.
 * Returns EndpointSet-owned lists, so balancer state keyed on them survives across calls.
 */
export function routeLane(set: EndpointSet, lane: string | undefined, fallback: LaneFallback = 'base'): EndpointList | undefined {
  if (lane !== undefined) {
    const inLane = set.lane(lane);
    if (inLane !== undefined && inLane.size > 0) return inLane;
    if (fallback === 'strict') return undefined;
  }
  return set.base.size > 0 ? set.base : undefined;
}

/** Lane routing with per-lane fallbacks from a TrafficPolicy, precomputed into a map. */
export class LaneRouter {
  private readonly fallbacks: ReadonlyMap<string, LaneFallback>;
  readonly rules: readonly LaneRule[];

  constructor(lanes: readonly LaneSpec[] = [], private readonly defaultFallback: LaneFallback = 'base') {
    const f = new Map<string, LaneFallback>();
    for (const l of lanes) if (l.fallback !== undefined) f.set(l.name, l.fallback);
    this.fallbacks = f;
    this.rules = laneRulesOf(lanes);
  }

  fallbackOf(lane: string): LaneFallback {
    return this.fallbacks.get(lane) ?? this.defaultFallback;
  }

  route(set: EndpointSet, lane: string | undefined): EndpointList | undefined {
    return routeLane(set, lane, lane === undefined ? 'base' : this.fallbackOf(lane));
  }

  /** Edge entry: the lane for a request that arrived without a trusted one. */
  enter(request: LaneRequest, random?: Random): string | undefined {
    return matchLane(this.rules, request, random);
  }
}
