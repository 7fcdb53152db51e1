import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { PlinthError } from '@plinth/core';
import { sendProblem } from './http/problem.js';
import type { RequestContext, Router } from './http/router.js';
import type { Identity, Principal } from './identity/types.js';
import type { Metrics } from './metrics.js';

const AUTH_CACHE_MAX = 10_000;
const AUTH_CACHE_MS = 30_000;

/**
 * Verified tokens for a short while: a renewal storm of thousands of instances would otherwise spend
 * most of its CPU on ECDSA verification. Cleared whenever identities, credentials or keys change, so a
 * revocation takes effect at once.
 */
export class AuthCache {
  private entries = new Map<string, { p: Principal; until: number }>();

  get(token: string, now: number): Principal | undefined {
    const e = this.entries.get(token);
    if (!e) return undefined;
    if (e.until < now) {
      this.entries.delete(token);
      return undefined;
    }
    return e.p;
  }

  set(token: string, p: Principal, now: number, expiresAt?: number): void {
    if (this.entries.size >= AUTH_CACHE_MAX) this.entries.clear();
    this.entries.set(token, { p, until: Math.min(now + AUTH_CACHE_MS, expiresAt ?? Infinity) });
  }

  clear(): void {
    this.entries.clear();
  }
}

function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const exp = (JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown }).exp;
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export interface AppDeps {
  router: Router;
  identity: Identity;
  authCache: AuthCache;
  metrics: Metrics;
  log: Logger;
}

export function createRequestHandler(deps: AppDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { router, identity, authCache, metrics, log } = deps;

  async function authenticate(req: IncomingMessage): Promise<Principal> {
    const header = req.headers.authorization;
    const now = Date.now();
    if (header) {
      const hit = authCache.get(header, now);
      if (hit) return hit;
    }
    const p = await identity.authenticate(header);
    if (header) authCache.set(header, p, now, jwtExpiry(header.replace(/^Bearer\s+/i, '')));
    return p;
  }

  return (req, res) => {
    const started = process.hrtime.bigint();
    let route = 'unmatched';
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://plinth.invalid');
    } catch {
      sendProblem(res, new PlinthError('BAD_REQUEST', 'malformed request target'));
      return;
    }
    const ctx: RequestContext = {
      req,
      res,
      url,
      params: {},
      query: url.searchParams,
      remote: req.socket.remoteAddress ?? 'unknown',
      principal: undefined,
    };
    res.on('finish', () => {
      if (route === '/v1/watch') return;
      metrics.requests.inc({ method: req.method ?? '', route, status: String(res.statusCode) });
      metrics.latency.observe({ method: req.method ?? '', route }, Number(process.hrtime.bigint() - started) / 1e9);
    });
    void (async () => {
      try {
        const m = router.match(req.method ?? 'GET', url.pathname);
        route = m.route;
        ctx.params = m.params;
        if (!m.options.public) ctx.principal = await authenticate(req);
        await m.handler(ctx);
      } catch (e) {
        if (e instanceof PlinthError && e.status >= 500) log.error({ err: e, cause: e.cause }, 'request failed');
        sendProblem(res, e, url.pathname.slice(0, 200), (err) => log.error({ err, url: url.pathname }, 'unexpected error'));
        // An unread body must not be left on a keep-alive socket.
        if (!req.complete) req.resume();
      }
    })();
  };
}
