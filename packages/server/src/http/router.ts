import type { IncomingMessage, ServerResponse } from 'node:http';
import { PlinthError } from '@plinth/core';
import type { Principal } from '../identity/types.js';

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: Record<string, string>;
  query: URLSearchParams;
  /** Client address, for the audit log. */
  remote: string;
  /** Set before the handler runs on routes that require authentication. */
  principal: Principal | undefined;
}

export type Handler = (ctx: RequestContext) => Promise<void> | void;

export interface RouteOptions {
  /** Anonymous access (JWKS, health, token exchange which authenticates by itself). */
  public?: boolean;
}

interface Route {
  pattern: string;
  method: string;
  segments: string[];
  handler: Handler;
  options: RouteOptions;
}

export interface Match {
  /** The pattern, for metrics labels. */
  route: string;
  handler: Handler;
  params: Record<string, string>;
  options: RouteOptions;
}

/**
 * A small segment router: `/v1/resources/:kind/:namespace/:name`. Literal segments win over parameters.
 * Few routes, matched once per request; a trie would be overkill.
 */
export class Router {
  private routes: Route[] = [];

  add(method: string, pattern: string, handler: Handler, options: RouteOptions = {}): void {
    this.routes.push({ pattern, method, segments: pattern.split('/').filter(Boolean), handler, options });
    // Literal-first ordering, so /v1/resources/:kind/:ns/:name/history beats nothing and /v1/x/literal beats /v1/x/:p.
    this.routes.sort((a, b) => score(b) - score(a));
  }

  match(method: string, path: string): Match {
    const parts = path.split('/').filter(Boolean);
    let decoded: string[];
    try {
      decoded = parts.map((p) => decodeURIComponent(p));
    } catch {
      throw new PlinthError('BAD_REQUEST', 'malformed percent-encoding in the path');
    }
    let pathMatched = false;
    for (const r of this.routes) {
      if (r.segments.length !== decoded.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < r.segments.length; i++) {
        const s = r.segments[i]!;
        const v = decoded[i]!;
        if (s.startsWith(':')) params[s.slice(1)] = v;
        else if (s !== v) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
      pathMatched = true;
      if (r.method === method || (method === 'HEAD' && r.method === 'GET')) return { route: r.pattern, handler: r.handler, params, options: r.options };
    }
    if (pathMatched) throw new PlinthError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path.slice(0, 200)}`);
    throw new PlinthError('ROUTE_NOT_FOUND', `no endpoint ${path.slice(0, 200)}`);
  }
}

function score(r: Route): number {
  let s = r.segments.length * 100;
  for (const seg of r.segments) if (!seg.startsWith(':')) s += 1;
  return s;
}
