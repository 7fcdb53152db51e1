export { monotonicClock, nextUsable, noEjections } from './balancer.js';
export type { Balancer, Clock, EjectionView, PickContext, Random } from './balancer.js';
export { BASE_LANE, EndpointList, EndpointSet, endpointOf, isRoutable } from './endpoints.js';
export type { Endpoint, InstanceLike } from './endpoints.js';
export { P2CBalancer, type P2COptions } from './p2c.js';
export { RoundRobinBalancer, type RoundRobinOptions } from './round-robin.js';
export { WeightedBalancer, type WeightedOptions } from './weighted.js';
export { ConsistentHashBalancer, hashKey32, type ConsistentHashOptions } from './consistent-hash.js';
export { ZoneAwareBalancer, type ZoneAwareOptions } from './zone-aware.js';
export { OutlierDetector, type OutlierOptions } from './outlier.js';
export { LaneRouter, cookieValue, laneRulesOf, matchLane, routeLane, stringMatches } from './lanes.js';
export type { LaneFallback, LaneMatch, LaneRequest, LaneRule, LaneSpec, StringMatch } from './lanes.js';
export {
  BAGGAGE_MAX_BYTES,
  BAGGAGE_MAX_MEMBER_BYTES,
  BAGGAGE_MAX_MEMBERS,
  getBaggage,
  getLane,
  getUserId,
  isBaggageKey,
  isInternalBaggageKey,
  isStress,
  parseBaggage,
  serializeBaggage,
  setBaggage,
  setLane,
  setStress,
  setUserId,
  stripInternal,
} from './baggage.js';
export type { Baggage, BaggageEntry } from './baggage.js';
export {
  FLAG_SAMPLED,
  childContext,
  formatTraceparent,
  isSampled,
  newTraceContext,
  parseTraceparent,
  randomSpanId,
  randomTraceId,
} from './traceparent.js';
export type { TraceContext } from './traceparent.js';
