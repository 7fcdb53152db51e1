import { PlinthError, parseSelector, publicKinds, requireKind } from '@plinth/core';
import { principalOf, type GuardDeps } from '../http/guard.js';
import type { Router } from '../http/router.js';
import { presentResource } from '../secrets/sealing.js';
import type { WatchHub } from '../watch/hub.js';
import { SseSink } from '../watch/sse.js';
import { intParam, revisionHeader } from './query.js';

export interface WatchApiDeps extends GuardDeps {
  hub: WatchHub;
  /** Counts open streams, for /metrics. */
  onOpen?: () => void;
  onClosed?: (reason: string) => void;
}

export function registerWatchRoutes(router: Router, deps: WatchApiDeps): void {
  router.add('GET', '/v1/watch', async (ctx) => {
    const p = principalOf(ctx);
    const kindsParam = ctx.query.get('kinds');
    const kinds = kindsParam ? [...new Set(kindsParam.split(',').map((k) => k.trim()).filter(Boolean))] : undefined;
    for (const k of kinds ?? []) requireKind(k);
    const namespace = ctx.query.get('namespace') || undefined;
    const selector = parseSelector(ctx.query.get('selector'));
    const lastEventId = revisionHeader(ctx.req.headers['last-event-id'], 'Last-Event-ID');
    const since = lastEventId ?? intParam(ctx.query, 'since');

    // Refuse outright only when nothing asked for could ever be visible; otherwise filter per change,
    // so a watcher across namespaces sees exactly the namespaces it may watch.
    const asked = kinds ?? publicKinds().map((k) => k.kind);
    const ns = namespace ?? '*';
    const anyAllowed = asked.some((k) => deps.identity.can(p, 'watch', k, ns)) || (namespace === undefined);
    if (!anyAllowed) {
      await deps.audit.record({ principal: p, action: 'watch', kind: asked.join(','), namespace: ns, name: '', outcome: 'denied', source: ctx.remote });
      throw new PlinthError('FORBIDDEN', `${p.subject} may not watch ${asked.join(', ')} in namespace ${ns}`);
    }

    const { req, res } = ctx;
    req.socket.setTimeout(0);
    req.socket.setNoDelay(true);
    let closed = false;
    const sink = new SseSink(
      res,
      {
        kinds: kinds ? new Set(kinds) : undefined,
        namespace,
        selector,
        allowed: (kind, namespace) => deps.identity.can(p, 'watch', kind, namespace),
      },
      presentResource,
      (reason) => {
        closed = true;
        deps.onClosed?.(reason);
      },
    );
    deps.onOpen?.();
    const unsubscribe = await deps.hub.subscribe(sink, since);
    const done = () => {
      unsubscribe();
      if (!closed) {
        closed = true;
        deps.onClosed?.('client');
      }
    };
    if (res.destroyed || closed) done();
    else res.on('close', done);
  });
}
