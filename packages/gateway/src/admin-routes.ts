import type { IncomingHttpHeaders, Server } from 'node:http';
import { HTTP_METHODS, PROBLEM_CONTENT_TYPE } from '@plinth/core';
import { GatewayCodes, problemBody, type GatewayCode } from './errors.js';
import { hardenedServer, listenOn, parseListen, urlOf } from './listen.js';
import { normalizePath, type LiveRoutes } from './routes.js';

/** An admin answer: status and JSON body. */
export interface AdminAnswer {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

const JSON_TYPE = 'application/json';

/** An admin answer with a JSON body. */
export function jsonAnswer(status: number, body: string): AdminAnswer {
  return { status, contentType: JSON_TYPE, body };
}

/** An admin answer with a problem document (RFC 9457). */
export function problemAnswer(code: GatewayCode, status: number, detail: string): AdminAnswer {
  return { status, contentType: PROBLEM_CONTENT_TYPE, body: problemBody(code, status, detail) };
}

/** The admin listener on `listen` (`host:port`, or an inherited socket as `parseListen` takes it), answering every request by `answer` of its path and query. */
export async function listenAdmin(listen: string, answer: (target: string) => Promise<AdminAnswer>): Promise<{ server: Server; url: string }> {
  const server = hardenedServer((req, res) => {
    answer(req.url ?? '/').then(
      (a) => {
        res.writeHead(a.status, { 'content-type': a.contentType, 'content-length': Buffer.byteLength(a.body), 'cache-control': 'no-store' });
        res.end(a.body);
      },
      () => res.destroy(),
    );
  });
  const { host, port } = await listenOn(server, parseListen(listen));
  return { server, url: urlOf(host, port) };
}

/** Closes an admin listener and its connections: scrapes and probes hold nothing worth waiting for. */
export function closeAdmin(server: Server): Promise<void> {
  return new Promise<void>((r) => {
    server.close(() => r());
    server.closeAllConnections();
  });
}

const METHODS: ReadonlySet<string> = new Set(HTTP_METHODS);

/**
 * `GET /routes`: the Routes the gateway serves, as it compiled them (precedence is the table's, see the
 * Route kind), and those it could not compile with why. What an operator checks first when a request does
 * not go where they meant it to.
 */
export function routesAnswer(routes: LiveRoutes): AdminAnswer {
  const table = routes.table;
  const list = table.routes.map((r) => ({ id: r.id, service: r.service ?? null, split: r.split?.backends ?? null, static: r.staticAnswer !== undefined, redirect: r.redirect !== undefined, auth: r.auth.mode, spec: r.spec }));
  return jsonAnswer(200, JSON.stringify({ routes: list, errors: table.errors }));
}

/**
 * `GET /routes/match?method=GET&host=shop.example.com&path=/orders/7?color=red&header.x-lane=gray`: which
 * route a request of that method, host, path, query and headers takes, and what it sends upstream, without
 * sending it; for a sticky split, `identity=` or `ip=` tells the backend that caller is drawn to.
 */
export function matchAnswer(routes: LiveRoutes, query: URLSearchParams): AdminAnswer {
  const method = (query.get('method') ?? 'GET').toUpperCase();
  if (!METHODS.has(method)) return bad(`method must be one of ${HTTP_METHODS.join(', ')}`);
  const rawPath = query.get('path');
  if (rawPath === null || !rawPath.startsWith('/')) return bad('path must be given and start with /');
  const q = rawPath.indexOf('?');
  const path = normalizePath(q < 0 ? rawPath : rawPath.slice(0, q));
  const host = (query.get('host') ?? '').toLowerCase().replace(/:\d+$/, '');
  const headers: IncomingHttpHeaders = {};
  for (const [k, v] of query) if (k.startsWith('header.') && k.length > 7) headers[k.slice(7).toLowerCase()] = v;
  const search = q < 0 ? '' : rawPath.slice(q);
  const m = routes.table.match(host, method, path, headers, search);
  if (m === undefined) return jsonAnswer(404, JSON.stringify({ match: null, detail: `no route for ${method} ${host}${path}` }));
  const r = m.route;
  const upstreamPath = r.service === undefined && r.split === undefined ? null : r.rewrite(path, m.params) + search;
  // A split's draw: known for a sticky one given the caller (`identity`) or the address (`ip`) it hashes on.
  const sticky = r.spec.split?.stickyBy;
  const key = sticky === 'identity' ? query.get('identity') : sticky === 'clientIp' ? query.get('ip') : null;
  const service = r.service ?? (r.split !== undefined && key !== null ? r.split.pick(key, key) : null);
  const split = r.split === undefined ? null : { backends: r.split.backends, stickyBy: sticky ?? null };
  // Where a redirect would send a client that asked for that host over `scheme` (default http).
  const scheme = query.get('scheme') === 'https' ? 'https' : 'http';
  const redirect = r.redirect === undefined ? null : { status: r.redirect.status, location: r.redirect.location(scheme, query.get('host') ?? '', path, m.params, search) ?? null };
  return jsonAnswer(200, JSON.stringify({ match: { route: r.id, service, split, static: r.staticAnswer !== undefined, redirect, auth: r.auth.mode, upstreamPath, params: m.params } }));
}

function bad(detail: string): AdminAnswer {
  return problemAnswer(GatewayCodes.badRequest, 400, detail);
}
