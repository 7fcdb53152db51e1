import type { RequestMatch, Target } from '@plinth/core';
import { cookieValue, stringMatches, type StringMatch } from '../balancing/lanes.js';

/** The request facts that targets and request matches look at. Header names are lower case. */
export interface MatchRequest {
  readonly method: string;
  /** The path without the query string. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

function header(req: MatchRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** OpenSergo's HttpRequestMatch: every given condition must hold. */
export function requestMatches(m: RequestMatch | undefined, req: MatchRequest): boolean {
  if (m === undefined) return true;
  if (m.methods !== undefined && !(m.methods as readonly string[]).includes(req.method)) return false;
  if (m.path !== undefined && !stringMatches(m.path as StringMatch, req.path)) return false;
  if (m.headers !== undefined)
    for (const name in m.headers) {
      const sm = m.headers[name];
      if (sm === undefined || !stringMatches(sm as StringMatch, header(req, name.toLowerCase()))) return false;
    }
  if (m.cookies !== undefined) {
    const cookies = header(req, 'cookie');
    for (const name in m.cookies) {
      const sm = m.cookies[name];
      if (sm === undefined || !stringMatches(sm as StringMatch, cookieValue(cookies, name))) return false;
    }
  }
  return true;
}

/**
 * An endpoint pattern as a predicate: `/orders` exact, `/orders/*` exactly one more segment, `/orders/**` the
 * prefix itself or anything below it. A trailing slash on the request path is ignored.
 */
export function endpointMatcher(pattern: string): (path: string) => boolean {
  if (pattern.endsWith('/**')) {
    const base = pattern.slice(0, -3);
    const prefix = `${base}/`;
    return (p) => {
      const path = trimSlash(p);
      return path === base || path.startsWith(prefix) || (base === '' && path.startsWith('/'));
    };
  }
  if (pattern.endsWith('/*')) {
    const prefix = pattern.slice(0, -1);
    return (p) => {
      const path = trimSlash(p);
      return path.length > prefix.length && path.startsWith(prefix) && path.indexOf('/', prefix.length) < 0;
    };
  }
  const exact = trimSlash(pattern);
  return (p) => trimSlash(p) === exact;
}

function trimSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

/** A Target compiled once per snapshot: does a call of `method path` by `caller` into the target's service match? */
export interface CompiledTarget {
  readonly service: string;
  matches(method: string, path: string, caller: string | undefined): boolean;
}

export function compileTarget(t: Target): CompiledTarget {
  const endpoints = t.endpoints?.map(endpointMatcher);
  const methods = t.methods as readonly string[] | undefined;
  const callers = t.callers;
  return {
    service: t.service,
    matches(method, path, caller) {
      if (methods !== undefined && !methods.includes(method)) return false;
      if (callers !== undefined && (caller === undefined || !callers.includes(caller))) return false;
      if (endpoints === undefined) return true;
      for (const m of endpoints) if (m(path)) return true;
      return false;
    },
  };
}

/** The path part of a request target (`/a/b?x=1` → `/a/b`). */
export function pathOf(url: string): string {
  const q = url.indexOf('?');
  const h = url.indexOf('#');
  const end = q < 0 ? (h < 0 ? url.length : h) : h < 0 ? q : Math.min(q, h);
  return end === url.length ? url : url.slice(0, end);
}
