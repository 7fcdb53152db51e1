import type { z } from 'zod';
import { ConfigSpec } from './config.js';
import { FaultInjectionSpec, FaultToleranceSpec, TrafficPolicySpec } from './governance.js';
import { RoleBindingSpec, RoleSpec, ServiceAccountSpec } from './identity.js';
import { AlertRuleSpec, SloSpec } from './observability.js';
import { InstanceSpec, ServiceSpec } from './registry.js';
import { RouteSpec } from './route.js';
import { SecretSpec } from './secret.js';

export interface KindDef {
  kind: string;
  description: string;
  /** Schema of the spec a client writes. */
  schema: z.ZodType;
  /** Values are sealed at rest and never listed. */
  sealed?: boolean;
  /** Kept by the server for itself; never served by the resource API or the watch. */
  internal?: boolean;
}

const kinds = new Map<string, KindDef>();

export function defineKind(def: KindDef): KindDef {
  if (kinds.has(def.kind)) throw new Error(`kind ${def.kind} is defined twice`);
  kinds.set(def.kind, def);
  return def;
}

export function getKind(kind: string): KindDef | undefined {
  return kinds.get(kind);
}

/** Kinds the resource API serves (internal ones excluded). */
export function publicKinds(): KindDef[] {
  return [...kinds.values()].filter((k) => !k.internal);
}

defineKind({ kind: 'Service', description: 'A service and its owning team', schema: ServiceSpec });
defineKind({ kind: 'Instance', description: 'A running instance of a service, alive while its lease is renewed', schema: InstanceSpec });
defineKind({ kind: 'Config', description: 'Configuration content with optional schema and gray variants', schema: ConfigSpec });
defineKind({ kind: 'Secret', description: 'Values encrypted at rest, shown only to identities granted reveal', schema: SecretSpec, sealed: true });
defineKind({ kind: 'ServiceAccount', description: 'An identity that exchanges credentials for short-lived tokens', schema: ServiceAccountSpec });
defineKind({ kind: 'Role', description: 'Verbs on kinds in namespaces', schema: RoleSpec });
defineKind({ kind: 'RoleBinding', description: 'Grants a role to subjects', schema: RoleBindingSpec });
defineKind({ kind: 'FaultTolerance', description: 'Rate limits, concurrency limits, breakers, retries and timeouts bound to targets (OpenSergo FaultToleranceRule)', schema: FaultToleranceSpec });
defineKind({ kind: 'TrafficPolicy', description: 'Traffic lanes, version routing, load balancing and trusted baggage (OpenSergo TrafficLane, RouterRule)', schema: TrafficPolicySpec });
defineKind({ kind: 'FaultInjection', description: 'Delay and abort faults for chaos experiments, with an expiry', schema: FaultInjectionSpec });
defineKind({ kind: 'Route', description: 'Gateway route: host/path/method/header match to a service, rewrite, timeouts, CORS, auth', schema: RouteSpec });
defineKind({ kind: 'Slo', description: 'A service level objective (availability or latency) with multi-window burn-rate alerts', schema: SloSpec });
defineKind({ kind: 'AlertRule', description: 'A threshold over RED figures of a service, endpoint or edge, held for some periods', schema: AlertRuleSpec });

export * from './common.js';
export * from './config.js';
export * from './governance.js';
export * from './identity.js';
export * from './observability.js';
export * from './registry.js';
export * from './route.js';
export * from './secret.js';
