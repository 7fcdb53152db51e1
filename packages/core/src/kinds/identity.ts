import { z } from 'zod';
import { dnsName } from './common.js';

export const VERBS = ['get', 'list', 'watch', 'create', 'update', 'delete', 'reveal'] as const;
export type Verb = (typeof VERBS)[number];

export const PolicyRule = z.strictObject({
  verbs: z.array(z.union([z.enum(VERBS), z.literal('*')])).min(1).max(16),
  /** Kind names, or "*". Non-resource capabilities have kinds of their own: AuditLog, SigningKey, SecretKey, Credential. */
  kinds: z.array(z.string().min(1).max(64)).min(1).max(64),
  /** Namespaces, or "*". */
  namespaces: z.array(z.union([dnsName, z.literal('*')])).min(1).max(256),
});
export type PolicyRule = z.infer<typeof PolicyRule>;

export const RoleSpec = z.strictObject({
  description: z.string().max(1024).optional(),
  rules: z.array(PolicyRule).max(128),
});
export type RoleSpec = z.infer<typeof RoleSpec>;

export const Subject = z.strictObject({
  kind: z.literal('ServiceAccount'),
  namespace: dnsName,
  name: dnsName,
});
export type Subject = z.infer<typeof Subject>;

/** Grants a Role of the binding's own namespace to subjects. */
export const RoleBindingSpec = z.strictObject({
  role: dnsName,
  subjects: z.array(Subject).min(1).max(256),
});
export type RoleBindingSpec = z.infer<typeof RoleBindingSpec>;

/** An identity for a workload or a person's tooling; it holds credentials exchanged for short-lived JWTs. */
export const ServiceAccountSpec = z.strictObject({
  description: z.string().max(1024).optional(),
});
export type ServiceAccountSpec = z.infer<typeof ServiceAccountSpec>;

/** Subject string used in tokens and the audit log. */
export function subjectId(s: { namespace: string; name: string }): string {
  return `ServiceAccount:${s.namespace}/${s.name}`;
}
