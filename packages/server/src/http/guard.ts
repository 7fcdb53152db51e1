import { PlinthError } from '@plinth/core';
import type { AuditRecorder, Identity, Principal } from '../identity/types.js';
import type { RequestContext } from './router.js';

export interface GuardDeps {
  identity: Identity;
  audit: AuditRecorder;
  /**
   * Waits until this server enforces a committed write of `kind` at `revision` (its identity caches follow
   * the change log, a moment behind the commit): a revoked credential or a changed role binding is in force
   * when the response arrives. Absent, writes answer at commit.
   */
  settle?: (kind: string, revision: number) => Promise<void>;
}

/** The authenticated caller; routes marked public have none. */
export function principalOf(ctx: RequestContext): Principal {
  if (!ctx.principal) throw new PlinthError('UNAUTHENTICATED');
  return ctx.principal;
}

/**
 * RBAC check for one call. A denial is written to the audit log before the 403 goes out.
 * `name` is what the call addressed ('' for lists and watches).
 */
export async function authorize(ctx: RequestContext, deps: GuardDeps, verb: string, kind: string, namespace: string, name = ''): Promise<Principal> {
  const p = principalOf(ctx);
  if (deps.identity.can(p, verb, kind, namespace)) return p;
  await deps.audit.record({ principal: p, action: verb, kind, namespace, name, outcome: 'denied', source: ctx.remote });
  throw new PlinthError('FORBIDDEN', `${p.subject} may not ${verb} ${kind} in namespace ${namespace}`);
}
