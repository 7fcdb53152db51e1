import type { IncomingHttpHeaders } from 'node:http';
import { BlockList, isIP } from 'node:net';
import { bucketOf, parseCidr, RouteSpec, templateParams, type AuthMode, type RequestHeaderModifier, type Resource, type RouteClientIps, type RouteOidc, type RouteRedirect, type ServiceSplit, type StringMatch } from '@plinth/core';
import type { RetryOverride } from '@plinth/sdk/client';
import { compileCompression, type CompiledCompression } from './compression.js';
import { compileExternalAuth, externalAuthNames, type CompiledExternalAuth } from './external-auth.js';
import type { ResourceFeed } from './feed.js';

/** A route's CORS policy with its answer headers prepared once. */
export interface CompiledCors {
  readonly anyOrigin: boolean;
  readonly origins: ReadonlySet<string>;
  readonly methods: ReadonlySet<string>;
  readonly allowMethods: string;
  /** Empty: no allow-headers answer, so browsers send only CORS-safelisted headers (never a reflection of the ask). */
  readonly allowHeaders: string;
  readonly exposeHeaders: string;
  readonly credentials: boolean;
  readonly maxAge: string;
}

/**
 * A route's header edits, ready for the message's header loop: names to leave out (removed, or replaced by
 * `set`), and the pairs to append (`set` values, then `add` values), flat, lower-case names.
 */
export interface HeaderEdit {
  readonly drop: ReadonlySet<string>;
  readonly append: readonly string[];
}

/** `also`: more names to drop (headers the gateway sets itself on this route, such as an oidc route's claim headers). */
export function compileHeaderEdit(m: RequestHeaderModifier | undefined, also: readonly string[] = []): HeaderEdit | undefined {
  if (m === undefined && also.length === 0) return undefined;
  const drop = new Set<string>(also.map((n) => n.toLowerCase()));
  if (m === undefined) return { drop, append: Object.freeze([]) };
  const append: string[] = [];
  for (const name of m.remove ?? []) drop.add(name.toLowerCase());
  for (const [name, value] of Object.entries(m.set ?? {})) {
    drop.add(name.toLowerCase());
    append.push(name.toLowerCase(), value);
  }
  for (const [name, value] of Object.entries(m.add ?? {})) append.push(name.toLowerCase(), value);
  return drop.size === 0 && append.length === 0 ? undefined : { drop, append: Object.freeze(append) };
}

/** A route's clientIps as node's BlockList (subnets of both families; IPv4-mapped IPv6 addresses match IPv4 ones). */
export class ClientIpRule {
  private readonly allow: BlockList | undefined;
  private readonly deny: BlockList | undefined;

  constructor(c: RouteClientIps) {
    this.allow = c.allow && blockList(c.allow);
    this.deny = c.deny && blockList(c.deny);
  }

  /** An address that is not one (a made-up X-Forwarded-For entry) is admitted by no allow list. */
  admits(ip: string | undefined): boolean {
    const family = ip === undefined ? 0 : isIP(ip);
    if (family === 0) return this.allow === undefined;
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (this.deny !== undefined && this.deny.check(ip!, type)) return false;
    return this.allow === undefined || this.allow.check(ip!, type);
  }
}

/** Blocks the Route kind validated already (parseCidr). */
function blockList(blocks: readonly string[]): BlockList {
  const list = new BlockList();
  for (const b of blocks) {
    const c = parseCidr(b)!;
    const type = c.family === 4 ? 'ipv4' : 'ipv6';
    if (c.bits === undefined) list.addAddress(c.address, type);
    else list.addSubnet(c.address, c.bits, type);
  }
  return list;
}

export interface CompiledAuth {
  readonly mode: AuthMode;
  readonly audiences: readonly string[] | undefined;
  readonly requiredRoles: readonly string[] | undefined;
  /** mode mtls: the SPIFFE trust domains accepted; undefined, any. */
  readonly trustDomains: ReadonlySet<string> | undefined;
  /** mode oidc: the provider and what the route asks of its tokens. */
  readonly oidc: RouteOidc | undefined;
  /** mode external: the authorization service and what passes between it, the client and the upstream. */
  readonly external: CompiledExternalAuth | undefined;
}

/**
 * One Route, compiled. Immutable: a request keeps the object it matched for its whole life, so a route
 * changed mid-request does not change that request.
 */
export interface CompiledRoute {
  /** `namespace/name`: the metrics label and the log field. */
  readonly id: string;
  readonly name: string;
  readonly spec: RouteSpec;
  /** The one upstream service; undefined for a split, a static answer or a redirect. */
  readonly service: string | undefined;
  /** The services sharing the route's traffic, with their weights. */
  readonly split: CompiledSplit | undefined;
  /**
   * The upstream service for one request: the route's own, or the split's draw (by the caller's identity or
   * address when sticky); undefined for a route that answers by itself.
   */
  serviceFor(identity: string | undefined, ip: string | undefined): string | undefined;
  readonly staticAnswer: { readonly status: number; readonly body: Buffer; readonly headers: Readonly<Record<string, string>> } | undefined;
  readonly redirect: CompiledRedirect | undefined;
  readonly timeoutMs: number | undefined;
  /** `streamIdleTimeoutMs`, 0 without: the answer's body is then bounded by the deadline. */
  readonly streamIdleMs: number;
  readonly maxBodyBytes: number;
  readonly cors: CompiledCors | undefined;
  readonly compression: CompiledCompression | undefined;
  readonly auth: CompiledAuth;
  /** Parameter values in template order, or NO_PARAMS; undefined when the path does not match. */
  matchPath(path: string): readonly string[] | undefined;
  /** Methods, headers and query parameters (the path matched already); `search` is the query with its `?`, or ''. */
  matchRest(method: string, headers: IncomingHttpHeaders, search: string): boolean;
  /** The path sent upstream (without the query). */
  rewrite(path: string, params: readonly string[]): string;
  /** The route's `retries`, as the engine takes them per call (one object per compiled route). */
  readonly retry: RetryOverride | undefined;
  readonly requestHeaders: HeaderEdit | undefined;
  readonly responseHeaders: HeaderEdit | undefined;
  readonly clientIps: ClientIpRule | undefined;
  /** Shadow traffic: the service copies go to, and the share of requests copied (0 to 1). */
  readonly mirror: { readonly service: string; readonly share: number } | undefined;
}

export interface CompiledSplit {
  readonly backends: readonly { readonly service: string; readonly weight: number }[];
  pick(identity: string | undefined, ip: string | undefined): string;
}

/**
 * Weights (adding up to 100) as upper bounds in 10,000 buckets; a sticky key hashes to a bucket salted with
 * the route's id, so two routes splitting the same callers draw independently.
 */
function compileSplit(id: string, s: ServiceSplit): CompiledSplit {
  const services: string[] = [];
  const bounds: number[] = [];
  let acc = 0;
  for (const b of s.backends) {
    if (b.weight === 0) continue;
    acc += b.weight * 100;
    services.push(b.service);
    bounds.push(acc);
  }
  const by = s.stickyBy;
  const salt = `${id}:`;
  return {
    backends: s.backends,
    pick(identity, ip) {
      const key = by === 'identity' ? identity : by === 'clientIp' ? ip : undefined;
      const bucket = key === undefined ? Math.floor(Math.random() * 10_000) : bucketOf(salt + key);
      for (let i = 0; i < bounds.length - 1; i++) if (bucket < bounds[i]!) return services[i]!;
      return services[services.length - 1]!;
    },
  };
}

/** A route's redirect: its status, and the Location for a request. */
export interface CompiledRedirect {
  readonly status: number;
  /**
   * `scheme` and `host` (its Host header, with any port) as the client addressed the gateway; `path` normalized,
   * `query` with its `?`. Undefined when the Location would take a Host that is no host name.
   */
  location(scheme: 'http' | 'https', host: string, path: string, params: readonly string[], query: string): string | undefined;
}

/** The path a route sends on (rewrite) or redirects to: the matched prefix replaced, a template filled, or the path as it came. */
function pathBuilder(p: RouteSpec['match']['path'], to: { readonly prefix?: string | undefined; readonly path?: string | undefined } | undefined): (path: string, params: readonly string[]) => string {
  if (to?.prefix !== undefined && p.prefix !== undefined) {
    const from = p.prefix;
    const prefix = to.prefix;
    return (path) => joinPrefix(prefix, path.slice(from.length));
  }
  if (to?.path !== undefined) {
    const names = p.template !== undefined ? templateParams(p.template) : [];
    const parts = to.path.split('/').map((s) => (s.startsWith(':') ? names.indexOf(s.slice(1)) : s));
    return (_path, params) => {
      let out = '';
      for (let i = 1; i < parts.length; i++) {
        const part = parts[i]!;
        out += '/' + (typeof part === 'number' ? (params[part] ?? '') : part);
      }
      return out === '' ? '/' : out;
    };
  }
  return (path) => path;
}

const DEFAULT_PORT = { http: 80, https: 443 } as const;

/**
 * The Gateway API's RequestRedirect: each part not set is the request's. A scheme set without a port takes
 * its well-known one; a port that is the scheme's well-known one is left out of the Location.
 */
function compileRedirect(r: RouteRedirect, build: (path: string, params: readonly string[]) => string): CompiledRedirect {
  return {
    status: r.status,
    location(scheme, host, path, params, query) {
      const to = r.scheme ?? scheme;
      const h = splitHost(host);
      if (h === undefined && (r.host === undefined || (r.port === undefined && r.scheme === undefined))) return undefined;
      const { name, port } = h ?? { name: '', port: undefined };
      const p = r.port ?? (r.scheme !== undefined ? undefined : port);
      const shown = p === undefined || p === DEFAULT_PORT[to] ? '' : `:${p}`;
      return `${to}://${r.host ?? name}${shown}${build(path, params)}${query}`;
    },
  };
}

/** A Host header: a DNS name or IPv4 address, or an IPv6 literal, and a port. */
const HOST_HEADER = /^(?:([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)|(\[[0-9a-f:.]+\]))(?::(\d{1,5}))?$/i;

/**
 * `shop.example:8443` or `[::1]:8443` into the name and the port (undefined without one); undefined for a
 * header that is no host, so that what a client sends as Host (`evil.example/x`, `a@evil.example`) never
 * becomes a Location elsewhere.
 */
function splitHost(host: string): { name: string; port: number | undefined } | undefined {
  const m = HOST_HEADER.exec(host);
  if (m === null) return undefined;
  const port = m[3] === undefined ? undefined : Number(m[3]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  return { name: (m[1] ?? m[2]!).toLowerCase(), port };
}

export interface RouteMatch {
  readonly route: CompiledRoute;
  readonly params: readonly string[];
}

export const NO_PARAMS: readonly string[] = Object.freeze([]);

function stringMatcher(m: StringMatch): (v: string | undefined) => boolean {
  if (m.exact !== undefined) {
    const e = m.exact;
    return (v) => v === e;
  }
  if (m.prefix !== undefined) {
    const p = m.prefix;
    return (v) => v !== undefined && v.startsWith(p);
  }
  const re = new RegExp(m.regex ?? '');
  return (v) => v !== undefined && re.test(v);
}

function headerText(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** `/api` matches `/api` and `/api/…`; `/api/` matches what starts with it. */
function prefixMatches(prefix: string, path: string): boolean {
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || prefix.endsWith('/') || path.charCodeAt(prefix.length) === 47;
}

interface Segment {
  /** Undefined for a parameter. */
  readonly literal: string | undefined;
}

function segmentsOf(template: string): Segment[] {
  return template
    .split('/')
    .slice(1)
    .map((s) => ({ literal: s.startsWith(':') ? undefined : s }));
}

function templateMatcher(template: string): (path: string) => readonly string[] | undefined {
  const segs = segmentsOf(template);
  const nParams = segs.filter((s) => s.literal === undefined).length;
  return (path) => {
    // Walk the path once, comparing segment by segment; allocate only the parameter values.
    let params: string[] | undefined;
    let pos = 1;
    for (let i = 0; i < segs.length; i++) {
      if (pos > path.length) return undefined;
      let end = path.indexOf('/', pos);
      if (end < 0) end = path.length;
      const lit = segs[i]!.literal;
      if (lit === undefined) {
        if (end === pos) return undefined; // a parameter is never empty
        (params ??= []).push(path.slice(pos, end));
      } else if (end - pos !== lit.length || !path.startsWith(lit, pos)) return undefined;
      pos = end + 1;
    }
    if (pos <= path.length) return undefined; // more segments than the template
    return nParams === 0 ? NO_PARAMS : params;
  };
}

function joinPrefix(replacement: string, rest: string): string {
  if (rest === '') return replacement;
  if (replacement.endsWith('/')) return rest.startsWith('/') ? replacement + rest.slice(1) : replacement + rest;
  return rest.startsWith('/') ? replacement + rest : `${replacement}/${rest}`;
}

function literalLength(template: string): number {
  let n = 0;
  for (const s of template.split('/').slice(1)) n += 1 + (s.startsWith(':') ? 0 : s.length);
  return n;
}

interface Ranked {
  readonly route: CompiledRoute;
  /** 0 exact, 1 template or prefix, 2 regex. */
  readonly kind: number;
  readonly literal: number;
  readonly template: boolean;
  readonly conditions: number;
  readonly priority: number;
}

function compare(a: Ranked, b: Ranked): number {
  return (
    a.kind - b.kind ||
    b.literal - a.literal ||
    (a.template === b.template ? 0 : a.template ? -1 : 1) ||
    b.conditions - a.conditions ||
    b.priority - a.priority ||
    (a.route.id < b.route.id ? -1 : a.route.id > b.route.id ? 1 : 0)
  );
}

/** Compiles one Route resource, or throws (a spec this gateway cannot read). */
export function compileRoute(res: Resource<unknown>): { route: CompiledRoute; rank: Omit<Ranked, 'route'> } {
  const parsed = RouteSpec.safeParse(res.spec);
  if (!parsed.success) throw new Error(`Route ${res.metadata.namespace}/${res.metadata.name}: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  const spec = parsed.data;
  const p = spec.match.path;
  let matchPath: (path: string) => readonly string[] | undefined;
  let kind = 1;
  let literal = 0;
  let template = false;
  if (p.exact !== undefined) {
    const e = p.exact;
    matchPath = (path) => (path === e ? NO_PARAMS : undefined);
    kind = 0;
    literal = e.length;
  } else if (p.prefix !== undefined) {
    const pre = p.prefix;
    matchPath = (path) => (prefixMatches(pre, path) ? NO_PARAMS : undefined);
    literal = pre.length;
  } else if (p.template !== undefined) {
    matchPath = templateMatcher(p.template);
    literal = literalLength(p.template);
    template = true;
  } else {
    const re = new RegExp(p.regex ?? '');
    matchPath = (path) => (re.test(path) ? NO_PARAMS : undefined);
    kind = 2;
  }

  const methods = spec.match.methods ? new Set<string>(spec.match.methods) : undefined;
  const headerConds = spec.match.headers ? Object.entries(spec.match.headers).map(([n, m]) => [n.toLowerCase(), stringMatcher(m)] as const) : [];
  const queryConds = spec.match.query ? Object.entries(spec.match.query).map(([n, m]) => [n, stringMatcher(m)] as const) : [];
  const matchRest = (method: string, headers: IncomingHttpHeaders, search: string): boolean => {
    if (methods !== undefined && !methods.has(method)) return false;
    for (const [n, m] of headerConds) if (!m(headerText(headers, n))) return false;
    if (queryConds.length > 0) {
      // Parsed only for routes that ask, and only once their method and headers held.
      const params = new URLSearchParams(search);
      for (const [n, m] of queryConds) if (!m(params.get(n) ?? undefined)) return false;
    }
    return true;
  };

  const rewrite = pathBuilder(p, spec.rewrite);

  const c = spec.cors;
  const cors: CompiledCors | undefined = c && {
    anyOrigin: c.allowOrigins.includes('*'),
    origins: new Set(c.allowOrigins),
    methods: new Set(c.allowMethods),
    allowMethods: c.allowMethods.join(', '),
    allowHeaders: c.allowHeaders.join(', '),
    exposeHeaders: c.exposeHeaders.join(', '),
    credentials: c.allowCredentials,
    maxAge: String(c.maxAgeSec),
  };

  const external = spec.auth.external && compileExternalAuth(spec.auth.external);
  const id = `${res.metadata.namespace}/${res.metadata.name}`;
  const st = spec.static;
  const one = spec.service;
  const split = spec.split && compileSplit(id, spec.split);
  const route: CompiledRoute = {
    id,
    name: res.metadata.name,
    spec,
    service: one,
    split,
    serviceFor: split !== undefined ? split.pick : () => one,
    staticAnswer: st && { status: st.status, body: Buffer.from(st.body), headers: st.headers },
    redirect: spec.redirect && compileRedirect(spec.redirect, pathBuilder(p, spec.redirect)),
    timeoutMs: spec.timeoutMs,
    streamIdleMs: spec.streamIdleTimeoutMs ?? 0,
    maxBodyBytes: spec.maxBodyBytes,
    cors,
    compression: compileCompression(spec.compression),
    auth: { mode: spec.auth.mode, audiences: spec.auth.audiences, requiredRoles: spec.auth.requiredRoles, trustDomains: spec.auth.trustDomains && new Set(spec.auth.trustDomains), oidc: spec.auth.oidc, external },
    matchPath,
    matchRest,
    rewrite,
    retry: spec.retries && Object.freeze({ maxAttempts: spec.retries.attempts, retryOn: Object.freeze([...spec.retries.on]) }),
    // A client's own headers named like the route's claim headers (or the authorization service's) never pass:
    // only the verified token (or the service) sets them.
    requestHeaders: compileHeaderEdit(spec.requestHeaders, [...Object.values(spec.auth.oidc?.claimHeaders ?? {}), ...externalAuthNames(external)]),
    responseHeaders: compileHeaderEdit(spec.responseHeaders),
    clientIps: spec.clientIps && new ClientIpRule(spec.clientIps),
    mirror: spec.mirror && spec.mirror.percent > 0 ? Object.freeze({ service: spec.mirror.service, share: spec.mirror.percent / 100 }) : undefined,
  };
  return { route, rank: { kind, literal, template, conditions: (methods ? 1 : 0) + headerConds.length + queryConds.length, priority: spec.priority } };
}

class Bucket {
  readonly exact = new Map<string, CompiledRoute[]>();
  readonly ordered: CompiledRoute[] = [];
  private rankedExact = new Map<string, Ranked[]>();
  private rankedOrdered: Ranked[] = [];

  add(r: Ranked): void {
    const e = r.route.spec.match.path.exact;
    if (e !== undefined) {
      let arr = this.rankedExact.get(e);
      if (!arr) this.rankedExact.set(e, (arr = []));
      arr.push(r);
    } else this.rankedOrdered.push(r);
  }

  seal(): void {
    for (const [path, arr] of this.rankedExact) this.exact.set(path, arr.sort(compare).map((r) => r.route));
    this.ordered.push(...this.rankedOrdered.sort(compare).map((r) => r.route));
    this.rankedExact = new Map();
    this.rankedOrdered = [];
  }

  match(method: string, path: string, headers: IncomingHttpHeaders, search: string): RouteMatch | undefined {
    const ex = this.exact.get(path);
    if (ex !== undefined) for (const route of ex) if (route.matchRest(method, headers, search)) return { route, params: NO_PARAMS };
    for (const route of this.ordered) {
      const params = route.matchPath(path);
      if (params !== undefined && route.matchRest(method, headers, search)) return { route, params };
    }
    return undefined;
  }
}

/**
 * Every Route of the namespace compiled into a matcher: host (exact, then `*.` wildcards longest first, then
 * routes without hosts) → exact path map → the other paths in precedence order. Built once per feed version.
 */
export class RouteTable {
  static readonly empty = new RouteTable([]);

  readonly routes: readonly CompiledRoute[];
  /** Routes that could not be compiled, with why (logged by the gateway). */
  readonly errors: readonly string[];
  private readonly hosts = new Map<string, Bucket>();
  private readonly wildcards: { suffix: string; bucket: Bucket }[] = [];
  private readonly any = new Bucket();

  constructor(resources: readonly Resource<unknown>[]) {
    const routes: CompiledRoute[] = [];
    const errors: string[] = [];
    const wild = new Map<string, Bucket>();
    for (const res of resources) {
      let compiled;
      try {
        compiled = compileRoute(res);
      } catch (e) {
        errors.push((e as Error).message);
        continue;
      }
      const ranked: Ranked = { route: compiled.route, ...compiled.rank };
      routes.push(compiled.route);
      const hosts = compiled.route.spec.hosts;
      if (hosts === undefined) {
        this.any.add(ranked);
        continue;
      }
      for (const h of hosts) {
        if (h.startsWith('*.')) {
          const suffix = h.slice(1);
          let b = wild.get(suffix);
          if (!b) wild.set(suffix, (b = new Bucket()));
          b.add(ranked);
        } else {
          let b = this.hosts.get(h);
          if (!b) this.hosts.set(h, (b = new Bucket()));
          b.add(ranked);
        }
      }
    }
    for (const b of this.hosts.values()) b.seal();
    for (const [suffix, bucket] of wild) {
      bucket.seal();
      this.wildcards.push({ suffix, bucket });
    }
    this.wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
    this.any.seal();
    this.routes = routes;
    this.errors = errors;
  }

  /** `host` lower case without the port; `method` upper case; `path` without the query; `search` the query with its `?`, or ''. */
  match(host: string, method: string, path: string, headers: IncomingHttpHeaders, search = ''): RouteMatch | undefined {
    if (this.hosts.size > 0) {
      const b = this.hosts.get(host);
      if (b !== undefined) {
        const m = b.match(method, path, headers, search);
        if (m !== undefined) return m;
      }
    }
    for (const w of this.wildcards) {
      if (host.length > w.suffix.length && host.endsWith(w.suffix)) {
        const m = w.bucket.match(method, path, headers, search);
        if (m !== undefined) return m;
      }
    }
    return this.any.match(method, path, headers, search);
  }

  /** The upstream services the routes name. */
  services(): string[] {
    const names = new Set<string>();
    for (const r of this.routes) {
      if (r.service !== undefined) names.add(r.service);
      for (const b of r.split?.backends ?? []) names.add(b.service);
    }
    return [...names];
  }
}

/** A feed of Routes as a RouteTable, recompiled on the first lookup after the feed moved. */
export class LiveRoutes {
  private version = -1;
  private current = RouteTable.empty;

  constructor(
    readonly feed: ResourceFeed,
    private readonly onErrors?: (errors: readonly string[]) => void,
  ) {}

  get table(): RouteTable {
    const v = this.feed.version;
    if (v !== this.version) {
      this.version = v;
      this.current = new RouteTable(this.feed.list());
      if (this.current.errors.length > 0) this.onErrors?.(this.current.errors);
    }
    return this.current;
  }
}

/** `.` and `..` segments resolved (RFC 3986 §5.2.4), `%2e` counted as a dot, so `/a/../admin` cannot dodge `/admin`'s route. */
export function normalizePath(path: string): string {
  if (path.indexOf('/.') < 0 && (path.indexOf('%') < 0 || !/%2e/i.test(path))) return path;
  const segs = path.split('/');
  const out: string[] = [];
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    const d = s.replace(/%2e/gi, '.');
    if (d === '.') {
      if (i === segs.length - 1) out.push('');
      continue;
    }
    if (d === '..') {
      out.pop();
      if (i === segs.length - 1) out.push('');
      continue;
    }
    out.push(s);
  }
  return '/' + out.join('/');
}
