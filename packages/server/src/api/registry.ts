import { PlinthError, type InstanceSpec } from '@plinth/core';
import { authorize, type GuardDeps } from '../http/guard.js';
import { sendJson } from '../http/problem.js';
import type { Router } from '../http/router.js';
import type { Leases } from '../registry/leases.js';
import type { Store } from '../store/types.js';

export interface RegistryApiDeps extends GuardDeps {
  store: Store;
  leases: Leases;
}

export function registerRegistryRoutes(router: Router, deps: RegistryApiDeps): void {
  router.add('POST', '/v1/leases/:namespace/:name', async (ctx) => {
    const { namespace, name } = ctx.params as { namespace: string; name: string };
    await authorize(ctx, deps, 'update', 'Instance', namespace, name);
    const { expiresAt, ttlSeconds } = await deps.leases.renew(namespace, name);
    sendJson(ctx.res, 200, { expiresAt: new Date(expiresAt).toISOString(), ttlSeconds });
  });

  router.add('POST', '/v1/registry/:namespace/:name/drain', async (ctx) => {
    const { namespace, name } = ctx.params as { namespace: string; name: string };
    const p = await authorize(ctx, deps, 'update', 'Instance', namespace, name);
    const cur = await deps.store.get('Instance', namespace, name);
    if (!cur) throw new PlinthError('NOT_FOUND', `Instance ${namespace}/${name} does not exist`);
    const spec = { ...(cur.spec as unknown as InstanceSpec), draining: true };
    const put = await deps.store.put({
      kind: 'Instance',
      namespace,
      name,
      labels: cur.metadata.labels,
      annotations: cur.metadata.annotations,
      spec,
      expectRevision: cur.metadata.revision,
    });
    if (put.type !== 'UNCHANGED') {
      await deps.audit.record({
        principal: p,
        action: 'drain',
        kind: 'Instance',
        namespace,
        name,
        outcome: 'allowed',
        source: ctx.remote,
        revisionBefore: cur.metadata.revision,
        revisionAfter: put.resource.metadata.revision,
      });
    }
    sendJson(ctx.res, 200, put.resource);
  });
}
