import type { FaultInjectionSpec, FaultToleranceSpec, Resource, TrafficPolicySpec } from '@plinth/core';
import { EndpointSet, type InstanceLike } from '../balancing/endpoints.js';
import type { ControlPlaneClient } from '../control-plane-client.js';

/** The kinds the governance engine consumes; a control-plane client for it must hold them all. */
export const GOVERNANCE_KINDS = ['Instance', 'FaultTolerance', 'TrafficPolicy', 'FaultInjection'] as const;

/**
 * Everything the data plane decides from, read from the last pushed snapshot. Consumers (inbound pipeline,
 * outbound client, gateway) compile what they need once per `version` and keep the compiled form; nothing
 * on a per-request path reads resources. `version` moves on every change, so a consumer checks one number
 * per call (or listens to `onChange`) to know its compiled form is stale.
 */
export interface GovernanceSource {
  readonly version: number;
  faultTolerance(): readonly Resource<FaultToleranceSpec>[];
  trafficPolicies(): readonly Resource<TrafficPolicySpec>[];
  faultInjections(): readonly Resource<FaultInjectionSpec>[];
  /** Instances of one service as an EndpointSet, the same object until that service's instances change. */
  endpoints(service: string): EndpointSet;
  /** Called after every change (already visible through the getters). Returns an unsubscribe function. */
  onChange(listener: () => void): () => void;
}

type Listener = () => void;

interface InstanceResource {
  metadata: { name: string };
  spec: InstanceLike;
}

/**
 * An in-memory source whose resources are set by hand: for tests, for a service run without a control plane
 * (static configuration), and as the building block of `controlPlaneGovernance`.
 */
export class StaticGovernance implements GovernanceSource {
  private v = 0;
  private ft: Resource<FaultToleranceSpec>[] = [];
  private tp: Resource<TrafficPolicySpec>[] = [];
  private fi: Resource<FaultInjectionSpec>[] = [];
  private instances: InstanceResource[] = [];
  private readonly sets = new Map<string, EndpointSet>();
  private readonly listeners = new Set<Listener>();

  get version(): number {
    return this.v;
  }

  faultTolerance(): readonly Resource<FaultToleranceSpec>[] {
    return this.ft;
  }

  trafficPolicies(): readonly Resource<TrafficPolicySpec>[] {
    return this.tp;
  }

  faultInjections(): readonly Resource<FaultInjectionSpec>[] {
    return this.fi;
  }

  endpoints(service: string): EndpointSet {
    let set = this.sets.get(service);
    if (set === undefined) {
      const own: [string, InstanceResource['spec']][] = [];
      for (const r of this.instances) if (r.spec.service === service) own.push([r.metadata.name, r.spec]);
      set = own.length === 0 ? EndpointSet.empty : EndpointSet.fromInstances(own);
      this.sets.set(service, set);
    }
    return set;
  }

  onChange(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Replaces the resources of the kinds given; the others are kept. */
  set(state: {
    faultTolerance?: readonly Resource<FaultToleranceSpec>[];
    trafficPolicies?: readonly Resource<TrafficPolicySpec>[];
    faultInjections?: readonly Resource<FaultInjectionSpec>[];
    instances?: readonly { metadata: { name: string }; spec: InstanceResource['spec'] }[];
  }): void {
    if (state.faultTolerance) this.ft = [...state.faultTolerance];
    if (state.trafficPolicies) this.tp = [...state.trafficPolicies];
    if (state.faultInjections) this.fi = [...state.faultInjections];
    if (state.instances) {
      this.instances = [...state.instances];
      this.sets.clear();
    }
    this.bump();
  }

  /** Drops the cached EndpointSet of one service (its instances changed). */
  protected invalidate(service: string | undefined): void {
    if (service === undefined) this.sets.clear();
    else this.sets.delete(service);
  }

  protected replaceInstances(instances: InstanceResource[]): void {
    this.instances = instances;
  }

  protected bump(): void {
    this.v++;
    for (const l of this.listeners) {
      try {
        l();
      } catch {
        // A consumer's failure to recompile must not stop the others from seeing the change.
      }
    }
  }
}

/**
 * A governance source fed by a control-plane client's snapshot (which must hold GOVERNANCE_KINDS). Changes
 * are coalesced: a burst of watch events (a relist, an `apply -f` of many resources) bumps the version once,
 * on the next microtask, so consumers recompile once.
 */
export function controlPlaneGovernance(client: Pick<ControlPlaneClient, 'list' | 'on'>, namespace?: string): GovernanceSource & { close(): void } {
  return new ClientGovernance(client, namespace);
}

class ClientGovernance extends StaticGovernance {
  private pending = false;
  private dirtyServices = new Set<string | undefined>();
  private readonly off: () => void;

  constructor(private readonly client: Pick<ControlPlaneClient, 'list' | 'on'>, private readonly namespace: string | undefined) {
    super();
    this.reload();
    this.off = client.on('change', (ev) => {
      if (ev.resource.kind === 'Instance') {
        const svc = (ev.resource.spec as { service?: unknown }).service;
        this.dirtyServices.add(typeof svc === 'string' ? svc : undefined);
      } else if (!(GOVERNANCE_KINDS as readonly string[]).includes(ev.resource.kind)) return;
      this.schedule();
    });
  }

  close(): void {
    this.off();
  }

  private schedule(): void {
    if (this.pending) return;
    this.pending = true;
    queueMicrotask(() => {
      this.pending = false;
      this.reload();
    });
  }

  private reload(): void {
    const f = this.namespace === undefined ? {} : { namespace: this.namespace };
    const list = <S>(kind: string) => this.client.list(kind, f) as unknown as Resource<S>[];
    for (const s of this.dirtyServices) this.invalidate(s);
    this.dirtyServices.clear();
    this.replaceInstances(list<InstanceResource['spec']>('Instance') as unknown as InstanceResource[]);
    super.set({
      faultTolerance: list<FaultToleranceSpec>('FaultTolerance'),
      trafficPolicies: list<TrafficPolicySpec>('TrafficPolicy'),
      faultInjections: list<FaultInjectionSpec>('FaultInjection'),
    });
  }
}
