import type { FaultInjectionSpec, FaultToleranceSpec, Resource, TrafficPolicySpec } from '@plinth/core';
import type { GovernanceSource } from '@plinth/sdk';
import type { EndpointSet } from '@plinth/sdk/balancing';

const NO_FAULTS: readonly Resource<FaultInjectionSpec>[] = Object.freeze([]);

/**
 * Inbound governance of the edge: the rules as they are, minus FaultInjection, which the callee's own
 * pipeline applies (injecting at the edge too would double every delay). The sidecar IS the callee's
 * inbound, and keeps them.
 */
export class EdgeInboundGovernance implements GovernanceSource {
  constructor(private readonly base: GovernanceSource) {}

  get version(): number {
    return this.base.version;
  }

  faultTolerance(): readonly Resource<FaultToleranceSpec>[] {
    return this.base.faultTolerance();
  }

  trafficPolicies(): readonly Resource<TrafficPolicySpec>[] {
    return this.base.trafficPolicies();
  }

  faultInjections(): readonly Resource<FaultInjectionSpec>[] {
    return NO_FAULTS;
  }

  endpoints(service: string): EndpointSet {
    return this.base.endpoints(service);
  }

  onChange(listener: () => void): () => void {
    return this.base.onChange(listener);
  }
}
