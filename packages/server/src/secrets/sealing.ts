import { PlinthError, type Resource, type SealedSecretSpec, type SecretSpec, type ShownSecretSpec } from '@plinth/core';
import type { Keyring } from './keyring.js';

/** Binds ciphertext to its resource, so sealed values cannot be moved to another Secret. */
export function secretAad(namespace: string, name: string): string {
  return `Secret/${namespace}/${name}`;
}

export function sealSecret(spec: SecretSpec, namespace: string, name: string, keyring: Keyring): SealedSecretSpec {
  const keys = Object.keys(spec.data).sort();
  const sealed = keyring.seal(JSON.stringify(spec.data), secretAad(namespace, name));
  const out: SealedSecretSpec = { keys, sealed };
  if (spec.type !== undefined) out.type = spec.type;
  return out;
}

export function isSealed(spec: unknown): spec is SealedSecretSpec {
  return typeof spec === 'object' && spec !== null && 'sealed' in spec && 'keys' in spec;
}

export function unsealSecret(spec: SealedSecretSpec, namespace: string, name: string, keyring: Keyring): Record<string, string> {
  try {
    return JSON.parse(keyring.unseal(spec.sealed, secretAad(namespace, name)).toString('utf8')) as Record<string, string>;
  } catch (e) {
    if (e instanceof PlinthError) throw e;
    throw new PlinthError('INTERNAL', `Secret ${namespace}/${name} cannot be unsealed`, { cause: e });
  }
}

/** What anyone reading a Secret sees: its key names, never its values. */
export function presentResource(r: Resource): Resource {
  if (r.kind !== 'Secret' || !isSealed(r.spec)) return r;
  const shown: ShownSecretSpec = { keys: r.spec.keys };
  if (r.spec.type !== undefined) shown.type = r.spec.type;
  return { ...r, spec: shown as unknown as Record<string, unknown> };
}

export function revealResource(r: Resource, keyring: Keyring): Resource {
  if (r.kind !== 'Secret' || !isSealed(r.spec)) return r;
  const shown = presentResource(r);
  (shown.spec as unknown as ShownSecretSpec).data = unsealSecret(r.spec, r.metadata.namespace, r.metadata.name, keyring);
  return shown;
}
