import type { LoadBalancing, RouteSplit, VersionRoute } from '@plinth/core';
import { getBaggage, type Baggage } from '../balancing/baggage.js';
import type { Random } from '../balancing/balancer.js';
import { EndpointList } from '../balancing/endpoints.js';
import { cookieValue } from '../balancing/lanes.js';
import { requestMatches, type MatchRequest } from '../governance/match.js';

/**
 * The sub-list of a candidate list a split selects, built once per (list, split) and kept as long as both
 * live: the list belongs to an EndpointSet (one snapshot), the split to a TrafficPolicy revision. Keeping the
 * identity stable matters as much as not filtering per call: balancers key their state on the list.
 */
const restricted = new WeakMap<EndpointList, WeakMap<RouteSplit, EndpointList>>();

function splitAdmits(split: RouteSplit, version: string, metadata: Readonly<Record<string, string>>): boolean {
  if (split.version !== undefined && split.version !== version) return false;
  if (split.labels !== undefined) for (const k in split.labels) if (metadata[k] !== split.labels[k]) return false;
  return true;
}

export function restrictToSplit(list: EndpointList, split: RouteSplit): EndpointList {
  let bySplit = restricted.get(list);
  if (bySplit === undefined) restricted.set(list, (bySplit = new WeakMap()));
  let sub = bySplit.get(split);
  if (sub === undefined) {
    const items = list.items.filter((ep) => splitAdmits(split, ep.version, ep.metadata));
    sub = items.length === list.size ? list : new EndpointList(items);
    bySplit.set(split, sub);
  }
  return sub;
}

/** A split drawn by weight; weights add up to 100 (the schema checks it). */
export function drawSplit(splits: readonly RouteSplit[], random: Random): RouteSplit | undefined {
  let r = random() * 100;
  let last: RouteSplit | undefined;
  for (const s of splits) {
    if (s.weight <= 0) continue;
    if (r < s.weight) return s;
    r -= s.weight;
    last = s;
  }
  return last; // rounding left r just above the sum
}

/**
 * The candidates of one call after version routing: the first route whose match holds picks a split by
 * weight. A split whose instances are not running (a version not deployed yet in this lane) leaves the
 * candidates as they were: a rollout plan must not turn into an outage.
 */
export function routeCandidates(routes: readonly VersionRoute[], list: EndpointList, req: MatchRequest, random: Random): EndpointList {
  for (const route of routes) {
    if (!requestMatches(route.match, req)) continue;
    const split = drawSplit(route.splits, random);
    if (split === undefined) return list;
    const sub = restrictToSplit(list, split);
    return sub.size > 0 ? sub : list;
  }
  return list;
}

/** Where a consistent-hash key comes from, compiled once per LoadBalancing entry. */
export type HashKeyOf = (headers: Readonly<Record<string, string>>, baggage: Baggage | undefined) => string | undefined;

const noKey: HashKeyOf = () => undefined;

export function hashKeyOf(lb: LoadBalancing): HashKeyOf {
  const hk = lb.hashKey;
  if (hk === undefined || hk.name === undefined) return noKey; // source ip: the caller is the client, there is no client ip
  const name = hk.name;
  const lower = name.toLowerCase();
  switch (hk.source) {
    case 'header':
      return (h) => h[lower];
    case 'cookie':
      return (h) => cookieValue(h['cookie'], name);
    case 'baggage':
      return (_h, b) => (b === undefined ? undefined : getBaggage(b, name));
    default:
      return noKey;
  }
}
