import { z } from 'zod';
import { defineKind, dnsName, SYSTEM_NAMESPACE } from '@plinth/core';

export const SIGNING_KEY_KIND = 'SigningKey';
export const CREDENTIAL_KIND = 'Credential';
/** Both live beside the admin account, in the one Store every server shares. */
export const IDENTITY_NAMESPACE = SYSTEM_NAMESPACE;

const isoTime = z.iso.datetime({ offset: true });
const b64url = z.string().regex(/^[A-Za-z0-9_-]+$/);

export const SealedValue = z.strictObject({
  kid: z.string().min(1).max(128),
  iv: z.string().min(1).max(64),
  tag: z.string().min(1).max(64),
  data: z.string().min(1).max(8192),
});

export const PublicEcJwk = z.strictObject({
  kty: z.literal('EC'),
  crv: z.literal('P-256'),
  x: b64url,
  y: b64url,
});
export type PublicEcJwk = z.infer<typeof PublicEcJwk>;

/** A token-signing key pair; its private half is sealed with the Keyring (aad `SigningKey/<kid>`). */
export const SigningKeySpec = z.strictObject({
  kid: dnsName,
  alg: z.literal('ES256'),
  publicJwk: PublicEcJwk,
  privateKey: SealedValue,
  createdAt: isoTime,
  /** Set when a newer key took over: tokens signed with this key have expired by then. */
  retireAfter: isoTime.optional(),
});
export type SigningKeySpec = z.infer<typeof SigningKeySpec>;

/** The stored half of a `plinth_<id>_<secret>` credential: only a hash of the secret. Resource name = id. */
export const CredentialSpec = z.strictObject({
  account: z.strictObject({ namespace: dnsName, name: dnsName }),
  /**
   * createRevision of the ServiceAccount the credential was issued to: a ServiceAccount deleted and
   * created again under the same name is a new identity and must not inherit old credentials.
   */
  accountCreateRevision: z.int().nonnegative(),
  /** sha256 of the secret, hex. */
  secretHash: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: isoTime,
  expiresAt: isoTime.optional(),
});
export type CredentialSpec = z.infer<typeof CredentialSpec>;

export function signingKeyAad(kid: string): string {
  return `${SIGNING_KEY_KIND}/${kid}`;
}

defineKind({ kind: SIGNING_KEY_KIND, description: 'A token-signing key (ES256), private half sealed', schema: SigningKeySpec, internal: true });
defineKind({ kind: CREDENTIAL_KIND, description: 'A service-account credential (hash of its secret only)', schema: CredentialSpec, internal: true });
