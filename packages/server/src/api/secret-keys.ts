import { PlinthError, SYSTEM_NAMESPACE } from '@plinth/core';
import type { Logger } from 'pino';
import { authorize, type GuardDeps } from '../http/guard.js';
import { sendJson } from '../http/problem.js';
import type { Router } from '../http/router.js';
import type { Keyring } from '../secrets/keyring.js';
import { isSealed, sealSecret, unsealSecret } from '../secrets/sealing.js';
import type { Store } from '../store/types.js';

/**
 * Re-seals every Secret not sealed with the primary key. Readers keep working throughout because the
 * old keys stay in the ring; a write that races us wins and is simply skipped (it is sealed anew anyway).
 */
export async function resealAll(store: Store, keyring: Keyring, log: Logger): Promise<{ resealed: number; remaining: number }> {
  let after: { namespace: string; name: string } | undefined;
  let resealed = 0;
  let remaining = 0;
  for (;;) {
    const page = await store.list('Secret', { limit: 200, after });
    for (const r of page.items) {
      if (!isSealed(r.spec) || r.spec.sealed.kid === keyring.primary) continue;
      const { namespace, name } = r.metadata;
      const data = unsealSecret(r.spec, namespace, name, keyring);
      const spec = sealSecret(r.spec.type === undefined ? { data } : { type: r.spec.type, data }, namespace, name, keyring);
      try {
        await store.put({ kind: 'Secret', namespace, name, labels: r.metadata.labels, annotations: r.metadata.annotations, spec, expectRevision: r.metadata.revision });
        resealed++;
      } catch (e) {
        if (e instanceof PlinthError && e.code === 'revision_conflict') {
          const now = await store.get('Secret', namespace, name);
          if (now && isSealed(now.spec) && now.spec.sealed.kid !== keyring.primary) remaining++;
          continue;
        }
        throw e;
      }
    }
    const last = page.items[page.items.length - 1];
    if (!page.more || !last) break;
    after = { namespace: last.metadata.namespace, name: last.metadata.name };
  }
  log.info({ resealed, remaining, kid: keyring.primary }, 'secrets re-sealed with the primary key');
  return { resealed, remaining };
}

export function registerSecretKeyRoutes(router: Router, deps: GuardDeps & { store: Store; keyring: Keyring; log: Logger }): void {
  router.add('POST', '/v1/secrets/keys/rotate', async (ctx) => {
    const p = await authorize(ctx, deps, 'update', 'SecretKey', SYSTEM_NAMESPACE);
    const before = deps.keyring.primary;
    const kid = deps.keyring.rotate();
    const { resealed, remaining } = await resealAll(deps.store, deps.keyring, deps.log);
    await deps.audit.record({
      principal: p,
      action: 'rotate',
      kind: 'SecretKey',
      namespace: SYSTEM_NAMESPACE,
      name: kid,
      outcome: 'allowed',
      source: ctx.remote,
      detail: `previous key ${before}; ${resealed} secrets re-sealed`,
    });
    sendJson(ctx.res, 200, { kid, previous: before, resealed, remaining });
  });
}
