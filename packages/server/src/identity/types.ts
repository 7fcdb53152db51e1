import type { PolicyRule } from '@plinth/core';

/** An authenticated caller. */
export interface Principal {
  /** `ServiceAccount:namespace/name` */
  subject: string;
  namespace: string;
  name: string;
  /** How it proved itself. */
  via: 'jwt' | 'credential';
}

/** Authentication and authorization, as the HTTP layer sees them. */
export interface Identity {
  /** Resolves a bearer token (JWT issued by this server, or a raw credential). Throws UNAUTHENTICATED. */
  authenticate(authorization: string | undefined): Promise<Principal>;
  /** RBAC decision: may `p` do `verb` on `kind` in `namespace`? */
  can(p: Principal, verb: string, kind: string, namespace: string): boolean;
  /** Throws ESCALATION_DENIED unless `p` holds every permission the rules grant. */
  assertCanGrant(p: Principal, rules: readonly PolicyRule[]): void;
}

export interface AuditRecord {
  principal: Principal | undefined;
  action: string;
  kind: string;
  namespace: string;
  name: string;
  outcome: 'allowed' | 'denied' | 'failed';
  source: string;
  revisionBefore?: number | null | undefined;
  revisionAfter?: number | null | undefined;
  detail?: string | null | undefined;
}

/** Appends to the hash-chained audit log. Mutations await it, so an unaudited change never answers 2xx. */
export interface AuditRecorder {
  record(r: AuditRecord): Promise<void>;
}
