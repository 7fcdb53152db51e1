import { PlinthError, SYSTEM_NAMESPACE } from '@plinth/core';
import { readDocument } from '../http/body.js';
import { authorize, principalOf, type GuardDeps } from '../http/guard.js';
import { sendJson } from '../http/problem.js';
import type { RequestContext, Router } from '../http/router.js';
import type { Store } from '../store/types.js';
import type { IdentityService } from './identity-service.js';
import { CREDENTIAL_KIND, SIGNING_KEY_KIND } from './kinds.js';
import type { AuditRecorder, Principal } from './types.js';

export interface IdentityRouteDeps extends Pick<GuardDeps, 'settle'> {
  identity: IdentityService;
  audit: AuditRecorder;
  store: Store;
}

export const AUDIT_LOG_KIND = 'AuditLog';
const AUDIT_DEFAULT_LIMIT = 500;
const AUDIT_MAX_LIMIT = 5000;
/** A credential that never expires is the default; callers may ask for a shorter one (at most ten years). */
const MAX_CREDENTIAL_TTL_SECONDS = 10 * 365 * 24 * 3600;

export function registerIdentityRoutes(router: Router, deps: IdentityRouteDeps): void {
  const { identity, audit, store } = deps;

  router.add(
    'GET',
    '/.well-known/jwks.json',
    (ctx) => {
      // Verifiers cache it briefly; rotated keys stay listed far longer than this, so nothing breaks.
      sendJson(ctx.res, 200, identity.jwks(), { 'cache-control': 'public, max-age=60' });
    },
    { public: true },
  );

  router.add(
    'POST',
    '/v1/auth/token',
    async (ctx) => {
      let principal: Principal | undefined;
      try {
        principal = await identity.authenticate(header(ctx, 'authorization'));
        // A JWT must not renew itself, or a leaked token would live forever; only a credential is exchanged.
        if (principal.via !== 'credential') {
          throw new PlinthError('UNAUTHENTICATED', 'a token is exchanged for a credential (plinth_…), not for another token');
        }
      } catch (err) {
        if (err instanceof PlinthError && err.code === 'unauthenticated') {
          await audit.record({
            principal,
            action: 'login',
            kind: 'ServiceAccount',
            namespace: principal?.namespace ?? '',
            name: principal?.name ?? '',
            outcome: 'denied',
            source: ctx.remote,
            detail: err.message,
          });
        }
        throw err;
      }
      const issued = await identity.issueToken(principal);
      await audit.record({
        principal,
        action: 'login',
        kind: 'ServiceAccount',
        namespace: principal.namespace,
        name: principal.name,
        outcome: 'allowed',
        source: ctx.remote,
      });
      sendJson(ctx.res, 200, { access_token: issued.token, token_type: 'Bearer', expires_in: issued.expiresIn });
    },
    { public: true },
  );

  router.add('GET', '/v1/whoami', (ctx) => {
    const p = principalOf(ctx);
    sendJson(ctx.res, 200, { subject: p.subject, namespace: p.namespace, name: p.name, via: p.via });
  });

  router.add('POST', '/v1/serviceaccounts/:namespace/:name/credentials', async (ctx) => {
    const { namespace, name } = accountParams(ctx);
    const p = await authorize(ctx, deps, 'create', CREDENTIAL_KIND, namespace, name);
    const ttlSeconds = credentialTtl(await readDocument(ctx.req));
    let issued;
    try {
      issued = await identity.issueCredential(namespace, name, { ttlSeconds });
    } catch (err) {
      await recordFailure(audit, ctx, p, 'create', namespace, name, err);
      throw err;
    }
    try {
      await audit.record({
        principal: p,
        action: 'create',
        kind: CREDENTIAL_KIND,
        namespace,
        name,
        outcome: 'allowed',
        source: ctx.remote,
        revisionBefore: null,
        revisionAfter: issued.revision,
        detail: `credential ${issued.id}`,
      });
    } catch (err) {
      // Unaudited, the credential must not stay usable; its token was never shown, but revoke it anyway.
      await identity.revokeCredential(namespace, name, issued.id).catch(() => undefined);
      throw err;
    }
    const body: Record<string, unknown> = { id: issued.id, token: issued.token, createdAt: issued.createdAt };
    if (issued.expiresAt !== undefined) body.expiresAt = issued.expiresAt;
    sendJson(ctx.res, 201, body);
  });

  router.add('DELETE', '/v1/serviceaccounts/:namespace/:name/credentials/:id', async (ctx) => {
    const { namespace, name } = accountParams(ctx);
    const id = ctx.params.id ?? '';
    const p = await authorize(ctx, deps, 'delete', CREDENTIAL_KIND, namespace, name);
    let revs;
    try {
      revs = await identity.revokeCredential(namespace, name, id);
    } catch (err) {
      await recordFailure(audit, ctx, p, 'delete', namespace, name, err, `credential ${id}`);
      throw err;
    }
    await audit.record({
      principal: p,
      action: 'delete',
      kind: CREDENTIAL_KIND,
      namespace,
      name,
      outcome: 'allowed',
      source: ctx.remote,
      revisionBefore: revs.revisionBefore,
      revisionAfter: revs.revisionAfter,
      detail: `credential ${id}`,
    });
    await deps.settle?.(CREDENTIAL_KIND, revs.revisionAfter);
    sendJson(ctx.res, 200, { id, namespace, name, revoked: true });
  });

  router.add('POST', '/v1/auth/keys/rotate', async (ctx) => {
    const p = await authorize(ctx, deps, 'update', SIGNING_KEY_KIND, SYSTEM_NAMESPACE);
    let result;
    try {
      result = await identity.rotateSigningKey();
    } catch (err) {
      await recordFailure(audit, ctx, p, 'update', SYSTEM_NAMESPACE, '', err, undefined, SIGNING_KEY_KIND);
      throw err;
    }
    await audit.record({
      principal: p,
      action: 'update',
      kind: SIGNING_KEY_KIND,
      namespace: SYSTEM_NAMESPACE,
      name: result.kid,
      outcome: 'allowed',
      source: ctx.remote,
      detail: result.retired.length > 0 ? `rotated; retiring ${result.retired.join(', ')}` : 'rotated',
    });
    sendJson(ctx.res, 200, { kid: result.kid, retiring: result.retired });
  });

  router.add('GET', '/v1/audit', async (ctx) => {
    await authorize(ctx, deps, 'list', AUDIT_LOG_KIND, SYSTEM_NAMESPACE);
    const after = intParam(ctx.query, 'after', 0, Number.MAX_SAFE_INTEGER) ?? 0;
    const limit = intParam(ctx.query, 'limit', 1, AUDIT_MAX_LIMIT) ?? AUDIT_DEFAULT_LIMIT;
    // Head first: entries appended between the two reads only make the head look older, never wrong.
    const head = await store.auditHead();
    const items = await store.readAudit(after, limit);
    sendJson(ctx.res, 200, { items, head });
  });
}

function header(ctx: RequestContext, name: string): string | undefined {
  const v = ctx.req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function accountParams(ctx: RequestContext): { namespace: string; name: string } {
  return { namespace: ctx.params.namespace ?? '', name: ctx.params.name ?? '' };
}

function credentialTtl(body: unknown): number | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body !== 'object' || Array.isArray(body)) throw new PlinthError('BAD_REQUEST', 'the body must be an object such as {"ttlSeconds": 86400}');
  const extra = Object.keys(body).filter((k) => k !== 'ttlSeconds');
  if (extra.length > 0) throw new PlinthError('BAD_REQUEST', `unknown field ${extra[0]!.slice(0, 64)} (only ttlSeconds is accepted)`);
  const ttl = (body as { ttlSeconds?: unknown }).ttlSeconds;
  if (ttl === undefined) return undefined;
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_CREDENTIAL_TTL_SECONDS) {
    throw new PlinthError('BAD_REQUEST', `ttlSeconds must be a whole number from 1 to ${MAX_CREDENTIAL_TTL_SECONDS}`);
  }
  return ttl;
}

function intParam(q: URLSearchParams, name: string, min: number, max: number): number | undefined {
  const raw = q.get(name);
  if (raw === null || raw === '') return undefined;
  if (!/^\d{1,16}$/.test(raw)) throw new PlinthError('INVALID_PARAMETER', `${name} must be a non-negative integer`);
  const n = Number(raw);
  if (n < min || n > max) throw new PlinthError('INVALID_PARAMETER', `${name} must be between ${min} and ${max}`);
  return n;
}

async function recordFailure(
  audit: AuditRecorder,
  ctx: RequestContext,
  p: Principal,
  action: string,
  namespace: string,
  name: string,
  err: unknown,
  detail?: string,
  kind = CREDENTIAL_KIND,
): Promise<void> {
  const why = err instanceof PlinthError ? err.message : 'internal error';
  await audit.record({
    principal: p,
    action,
    kind,
    namespace,
    name,
    outcome: 'failed',
    source: ctx.remote,
    detail: detail === undefined ? why : `${detail}: ${why}`,
  });
}
