import {
  LANE_LABEL,
  PlinthError,
  SERVICE_LABEL,
  deepEqual,
  validationError,
  type ConfigSpec,
  type InstanceSpec,
  type Resource,
  type RoleSpec,
  type RoleBindingSpec,
  type SecretSpec,
  type ValidResource,
} from '@plinth/core';
import { validateConfigContent } from '../config/content.js';
import type { Identity, Principal } from '../identity/types.js';
import type { Keyring } from '../secrets/keyring.js';
import { isSealed, sealSecret, unsealSecret } from '../secrets/sealing.js';
import type { Store } from '../store/types.js';

export interface AdmissionDeps {
  store: Store;
  identity: Identity;
  keyring: Keyring;
}

export interface Admitted {
  labels: Record<string, string>;
  spec: unknown;
  leaseExpiresAt?: number;
}

/**
 * Kind-specific rules applied after schema validation and before the write: derived labels, content
 * checks, sealing, privilege-escalation checks. `current` is the stored resource, if any.
 */
export async function admit(v: ValidResource, current: Resource | undefined, p: Principal, deps: AdmissionDeps): Promise<Admitted> {
  switch (v.kind) {
    case 'Instance': {
      const spec = v.spec as InstanceSpec;
      const labels: Record<string, string> = { ...v.labels, [SERVICE_LABEL]: spec.service };
      if (spec.lane !== undefined) labels[LANE_LABEL] = spec.lane;
      else delete labels[LANE_LABEL];
      return { labels, spec, leaseExpiresAt: Date.now() + spec.leaseTtlSeconds * 1000 };
    }
    case 'Config':
      validateConfigContent(v.spec as ConfigSpec);
      return { labels: v.labels, spec: v.spec };
    case 'Secret': {
      const spec = v.spec as SecretSpec;
      // Sealing uses a fresh IV each time; re-use the stored ciphertext when nothing changed, so an
      // idempotent apply stays "unchanged" instead of writing a new revision.
      if (current && isSealed(current.spec) && current.spec.type === spec.type) {
        const before = unsealSecret(current.spec, v.namespace, v.name, deps.keyring);
        if (deepEqual(before, spec.data) && current.spec.sealed.kid === deps.keyring.primary) return { labels: v.labels, spec: current.spec };
      }
      return { labels: v.labels, spec: sealSecret(spec, v.namespace, v.name, deps.keyring) };
    }
    case 'Role':
      deps.identity.assertCanGrant(p, (v.spec as RoleSpec).rules);
      return { labels: v.labels, spec: v.spec };
    case 'RoleBinding': {
      const spec = v.spec as RoleBindingSpec;
      const role = await deps.store.get('Role', v.namespace, spec.role);
      if (!role) throw validationError([{ field: 'spec.role', message: `no Role ${spec.role} in namespace ${v.namespace}` }]);
      deps.identity.assertCanGrant(p, (role.spec as unknown as RoleSpec).rules);
      return { labels: v.labels, spec };
    }
    default:
      return { labels: v.labels, spec: v.spec };
  }
}

/** The writable part of an old revision, for rollback: Secrets are re-sealed with the current key. */
export function contentOf(r: Resource, keyring: Keyring): { labels: Record<string, string>; annotations: Record<string, string>; spec: unknown } {
  let spec: unknown = r.spec;
  if (r.kind === 'Secret') {
    if (!isSealed(r.spec)) throw new PlinthError('INTERNAL', 'stored Secret is not sealed');
    const data = unsealSecret(r.spec, r.metadata.namespace, r.metadata.name, keyring);
    spec = r.spec.type === undefined ? { data } : { type: r.spec.type, data };
  }
  return { labels: r.metadata.labels, annotations: r.metadata.annotations, spec };
}
