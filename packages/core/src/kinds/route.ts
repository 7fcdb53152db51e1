/**
 * Kind Route: how the gateway maps an incoming request (host, path, method, headers) to an upstream service
 * or to a fixed answer, and what it does on the way: rewrite, timeouts, retries, header edits, body limit, CORS, auth.
 *
 * Precedence between routes that all match a request, so that adding a route never silently shadows a more
 * specific one: exact host before `*.` wildcard before no `hosts`; then exact paths, then templates and
 * prefixes by the number of literal characters (longest first; a template before a prefix of the same
 * length), then regexes; then routes with more conditions (methods, headers); then higher `priority`; then
 * the name. Paths are matched as received (percent-encoded), after dot segments are resolved.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { dnsName } from './common.js';
import { headerName, HTTP_METHODS, StringMatch, statusMatcher } from './governance.js';

type Ctx = z.core.$RefinementCtx;

function issue(ctx: Ctx, path: PropertyKey[], message: string): void {
  ctx.addIssue({ code: 'custom', path, message });
}

/** `api.example.com`, or `*.example.com` (one or more labels in front of example.com). Lower case. */
export const hostPattern = z
  .string()
  .min(1)
  .max(253)
  .regex(/^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'expected a lower-case host name such as api.example.com or *.example.com (no port)');

const pathText = z
  .string()
  .min(1)
  .max(1024)
  .regex(/^\/[^\s?#]*$/, "expected a path starting with '/' (no query or fragment)");

const TEMPLATE_SEGMENT = /^(:[A-Za-z_][A-Za-z0-9_]*|[^/:]*)$/;

/** The `:name` parameters of a path template, in order. */
export function templateParams(template: string): string[] {
  const out: string[] = [];
  for (const seg of template.split('/')) if (seg.startsWith(':')) out.push(seg.slice(1));
  return out;
}

/** Every `:name` of a path built from a template must be a parameter of the route's match.path.template. */
function checkParamsOf(built: string, p: PathMatch, ctx: Ctx, at: PropertyKey[]): void {
  const have = new Set(p.template !== undefined ? templateParams(p.template) : []);
  for (const name of templateParams(built)) if (!have.has(name)) issue(ctx, at, `parameter :${name} is not a parameter of match.path.template`);
}

function checkTemplate(t: string, ctx: Ctx, path: PropertyKey[]): void {
  const segs = t.split('/').slice(1);
  const seen = new Set<string>();
  for (const seg of segs) {
    if (!TEMPLATE_SEGMENT.test(seg)) {
      issue(ctx, path, `segment ${JSON.stringify(seg)}: a parameter is a whole segment such as :id`);
      return;
    }
    if (seg.startsWith(':')) {
      if (seen.has(seg)) issue(ctx, path, `parameter ${seg} appears twice`);
      seen.add(seg);
    }
  }
}

/** Exactly one of exact, prefix (at a segment boundary: `/api` matches `/api` and `/api/x`, not `/apix`), regex or template. */
export const PathMatch = z
  .strictObject({
    exact: pathText.optional(),
    prefix: pathText.optional(),
    /** A JavaScript regular expression tested against the whole path (anchor it yourself). */
    regex: z.string().min(1).max(512).optional(),
    /** `/orders/:id`: literal segments and `:name` parameters, one segment each. */
    template: pathText.optional(),
  })
  .superRefine((m, ctx) => {
    const set = [m.exact, m.prefix, m.regex, m.template].filter((v) => v !== undefined).length;
    if (set !== 1) issue(ctx, [], 'expected exactly one of exact, prefix, regex or template');
    if (m.regex !== undefined) {
      try {
        new RegExp(m.regex);
      } catch {
        issue(ctx, ['regex'], 'not a valid regular expression');
      }
    }
    if (m.template !== undefined) checkTemplate(m.template, ctx, ['template']);
  });
export type PathMatch = z.infer<typeof PathMatch>;

/** A query parameter's name as it is decoded: any text but empty, at most 256 characters. */
const queryName = z.string().min(1).max(256);

export const RouteMatch = z.strictObject({
  path: PathMatch,
  /** Absent: every method. */
  methods: z.array(z.enum(HTTP_METHODS)).min(1).max(HTTP_METHODS.length).optional(),
  /** All must hold; names match case-insensitively. */
  headers: z.record(headerName, StringMatch).optional(),
  /**
   * Query parameters, all must hold: names match exactly (case-sensitive, as the Gateway API's queryParams),
   * each against the parameter's first value, percent-decoded; a parameter that is absent fails every match.
   */
  query: z.record(queryName, StringMatch).optional(),
});
export type RouteMatch = z.infer<typeof RouteMatch>;

/** A fixed answer given by the gateway itself (a redirect, a maintenance page, a robots.txt). */
export const StaticAnswer = z.strictObject({
  status: z.int().min(200).max(599),
  body: z.string().max(64 * 1024).default(''),
  headers: z.record(headerName, z.string().max(4096)).default({}),
});
export type StaticAnswer = z.infer<typeof StaticAnswer>;

/**
 * A redirect answered by the gateway (the Kubernetes Gateway API's RequestRedirect): each part left out is
 * the request's own. The query string is kept.
 */
export const RouteRedirect = z
  .strictObject({
    scheme: z.enum(['http', 'https']).optional(),
    /** A host name (no wildcard, no port). */
    host: hostPattern.refine((h) => !h.startsWith('*.'), 'expected a host name, not a wildcard').optional(),
    /** Absent: the well-known port of `scheme` when that is set (left out of Location), else the request's. */
    port: z.int().min(1).max(65535).optional(),
    /** Replaces the matched prefix (match.path.prefix only), as rewrite.prefix. */
    prefix: pathText.optional(),
    /** The whole path, from a template using the parameters of match.path.template, as rewrite.path. */
    path: pathText.optional(),
    /** 301 and 308 are permanent (cached by browsers), 302, 303 and 307 not; 307 and 308 keep the method and body. */
    status: z.union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)]).default(302),
  })
  .superRefine((r, ctx) => {
    if (r.prefix !== undefined && r.path !== undefined) issue(ctx, ['path'], 'expected at most one of prefix or path');
    if (r.path !== undefined) checkTemplate(r.path, ctx, ['path']);
    if (r.scheme === undefined && r.host === undefined && r.port === undefined && r.prefix === undefined && r.path === undefined) {
      issue(ctx, [], 'expected at least one of scheme, host, port, prefix or path: a redirect to the same URL loops');
    }
  });
export type RouteRedirect = z.infer<typeof RouteRedirect>;

/** Compressed by default: text, and the structured types that are text underneath. */
export const DEFAULT_COMPRESSIBLE_TYPES = ['text/*', 'application/json', 'application/javascript', 'application/xml', 'application/problem+json', 'application/x-ndjson', 'image/svg+xml'];

/** Answer compression at the edge (see gateway.md, Compression). */
export const RouteCompression = z.strictObject({
  /** In the route's order of preference, among those the client accepts. */
  encodings: z
    .array(z.enum(['br', 'gzip']))
    .min(1)
    .max(2)
    .refine((a) => new Set(a).size === a.length, 'each encoding once')
    .default(['br', 'gzip']),
  /** Media types (`application/json`), or `text/*` for every subtype. */
  types: z
    .array(z.string().regex(/^[a-z0-9!#$&^_.+-]+\/([a-z0-9!#$&^_.+-]+|\*)$/, 'expected a lower-case media type such as application/json or text/*'))
    .min(1)
    .max(64)
    .default(DEFAULT_COMPRESSIBLE_TYPES),
  /** Answers known to be smaller are sent as they are (compression would cost more than it saves). */
  minBytes: z.int().min(0).max(1024 * 1024 * 1024).default(1024),
});
export type RouteCompression = z.infer<typeof RouteCompression>;

export const RouteRewrite = z
  .strictObject({
    /** Replaces the matched prefix (match.path.prefix only): prefix /api + rewrite / sends /api/orders as /orders. */
    prefix: pathText.optional(),
    /** The whole path, from a template using the parameters of match.path.template: `/v2/orders/:id`. */
    path: pathText.optional(),
  })
  .superRefine((r, ctx) => {
    if ((r.prefix === undefined) === (r.path === undefined)) issue(ctx, [], 'expected exactly one of prefix or path');
    if (r.path !== undefined) checkTemplate(r.path, ctx, ['path']);
  });
export type RouteRewrite = z.infer<typeof RouteRewrite>;

/** Mapped onto the engine's retry (full jitter, retry budget, idempotent methods or Idempotency-Key only). */
export const RouteRetries = z.strictObject({
  /** Total tries, the first included. */
  attempts: z.int().min(1).max(10),
  on: z.array(statusMatcher).min(1).max(64).default([502, 503, 504]),
});
export type RouteRetries = z.infer<typeof RouteRetries>;

const origin = z
  .string()
  .max(2048)
  .refine((o) => o === '*' || /^https?:\/\/[^/\s]+$/.test(o), { message: 'expected "*" or an origin such as https://shop.example.com' });

export const RouteCors = z.strictObject({
  allowOrigins: z.array(origin).min(1).max(256),
  allowMethods: z.array(z.enum(HTTP_METHODS)).min(1).max(HTTP_METHODS.length).default(['GET', 'HEAD', 'POST']),
  allowHeaders: z.array(headerName).max(64).default([]),
  exposeHeaders: z.array(headerName).max(64).default([]),
  allowCredentials: z.boolean().default(false),
  maxAgeSec: z.int().min(0).max(86_400).default(600),
});
export type RouteCors = z.infer<typeof RouteCors>;

/** A field value as node:http takes it: visible Latin-1 characters, spaces and tabs; no line breaks. */
const headerValue = z
  .string()
  .max(8192)
  .regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'expected a header value of visible characters, spaces and tabs (no line breaks or other control characters)');

/**
 * Names a route may not edit on the request: framing and connection headers, and those the gateway owns (the
 * forwarding chain, the trace and baggage it continues, the identity it verified, the deadline, the caller),
 * whose values upstreams trust because only the gateway sets them (every `plinth-` header among them).
 */
const REQUEST_OWNED = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect', 'traceparent', 'tracestate', 'baggage', 'grpc-timeout', 'forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-client-cert']);
/** A header (lower case) only the gateway sets on the request upstream. */
export function ownedOnRequest(lower: string): boolean {
  return REQUEST_OWNED.has(lower) || lower.startsWith('plinth-');
}

/** On the answer: framing and connection headers, and a gRPC status (it belongs to the call's outcome). */
function ownedOnAnswer(lower: string): boolean {
  return RESPONSE_OWNED.has(lower);
}

const RESPONSE_OWNED = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'grpc-status', 'grpc-message', 'grpc-status-details-bin']);

const MAX_EDITS = 64;

/**
 * Header edits, as the Kubernetes Gateway API's header modifiers: `set` replaces (or adds) a header, `add`
 * appends a value beside any the message has, `remove` drops it. Names match case-insensitively.
 */
function headerModifier(owned: (lower: string) => boolean, side: string) {
  return z
    .strictObject({
      set: z.record(headerName, headerValue).optional(),
      add: z.record(headerName, headerValue).optional(),
      remove: z.array(headerName).min(1).max(MAX_EDITS).optional(),
    })
    .superRefine((m, ctx) => {
      const seen = new Map<string, string>();
      for (const part of ['set', 'add', 'remove'] as const) {
        const v = m[part];
        if (v === undefined) continue;
        const names = Array.isArray(v) ? v : Object.keys(v);
        if (part !== 'remove' && names.length > MAX_EDITS) issue(ctx, [part], `at most ${MAX_EDITS} headers`);
        for (let i = 0; i < names.length; i++) {
          const name = names[i]!;
          const lower = name.toLowerCase();
          const at = [part, part === 'remove' ? i : name];
          if (owned(lower)) {
            issue(ctx, at, `the gateway owns ${lower} on the ${side}; a route cannot edit it`);
            continue;
          }
          const before = seen.get(lower);
          if (before !== undefined) issue(ctx, at, `${lower} is edited twice (${before} and ${part}); name a header once`);
          else seen.set(lower, part);
        }
      }
    });
}

export const RequestHeaderModifier = headerModifier(ownedOnRequest, 'request');
export type RequestHeaderModifier = z.infer<typeof RequestHeaderModifier>;
export const ResponseHeaderModifier = headerModifier(ownedOnAnswer, 'answer');
export type ResponseHeaderModifier = z.infer<typeof ResponseHeaderModifier>;

/**
 * Shadow traffic: a copy of the route's requests (all, or `percent` of them) sent to another service, whose
 * answer is dropped. The copy carries the pressure-test mark, so services and figures keep it apart from
 * real traffic.
 */
export const RouteMirror = z.strictObject({
  service: dnsName,
  /** Share of requests copied, 0 to 100. */
  percent: z.number().min(0).max(100).default(100),
});
export type RouteMirror = z.infer<typeof RouteMirror>;

/**
 * A traffic split across services (the Gateway API's weighted backendRefs): a migration from one service to
 * another, or an A/B test of two implementations. Each request goes to one backend, drawn by weight; with
 * `stickyBy` the draw is a hash of the verified caller (`identity`) or the client address (`clientIp`), so
 * one caller stays on one backend while the weights hold. Lanes and version splits choose instances within
 * a service; this chooses the service.
 */
export const ServiceSplit = z
  .strictObject({
    backends: z
      .array(
        z.strictObject({
          service: dnsName,
          /** Share of requests, 0 to 100; the backends' weights add up to 100. */
          weight: z.int().min(0).max(100),
        }),
      )
      .min(2)
      .max(16),
    /** Absent: each request drawn at random. A request without an identity (or address) is drawn at random. */
    stickyBy: z.enum(['identity', 'clientIp']).optional(),
  })
  .superRefine((s, ctx) => {
    const sum = s.backends.reduce((a, b) => a + b.weight, 0);
    if (sum !== 100) issue(ctx, ['backends'], `weights must add up to 100 (they add up to ${sum})`);
    const seen = new Set<string>();
    s.backends.forEach((b, i) => {
      if (seen.has(b.service)) issue(ctx, ['backends', i, 'service'], `${b.service} is named twice`);
      seen.add(b.service);
    });
  });
export type ServiceSplit = z.infer<typeof ServiceSplit>;

/** `10.0.0.0/8`, `2001:db8::/32`, or one address (`bits` undefined); undefined when it is neither. */
export function parseCidr(s: string): { readonly address: string; readonly family: 4 | 6; readonly bits: number | undefined } | undefined {
  const slash = s.indexOf('/');
  const address = slash < 0 ? s : s.slice(0, slash);
  const family = isIP(address);
  if (family !== 4 && family !== 6) return undefined;
  if (slash < 0) return { address, family, bits: undefined };
  const bits = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > (family === 4 ? 32 : 128)) return undefined;
  return { address, family, bits: Number(bits) };
}

const cidr = z
  .string()
  .max(64)
  .refine((s) => parseCidr(s) !== undefined, { message: 'expected an IP address or a CIDR block such as 10.0.0.0/8 or 2001:db8::/32' });

/**
 * Which client addresses may use the route (the address the gateway sees, or behind `--trust-proxy` the one
 * the nearest trusted proxy saw): one in `deny` never, and with `allow`, only one in it.
 */
export const RouteClientIps = z
  .strictObject({
    allow: z.array(cidr).min(1).max(1024).optional(),
    deny: z.array(cidr).min(1).max(1024).optional(),
  })
  .refine((c) => c.allow !== undefined || c.deny !== undefined, { message: 'expected allow, deny or both' });
export type RouteClientIps = z.infer<typeof RouteClientIps>;

export const AUTH_MODES = ['jwt', 'apiKey', 'anonymous', 'any', 'mtls', 'oidc', 'external'] as const;
export type AuthMode = (typeof AUTH_MODES)[number];

/** A SPIFFE trust domain: lower-case letters, digits, dots, dashes and underscores (SPIFFE ID spec §2.1). */
export const trustDomain = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[a-z0-9._-]+$/, 'expected a SPIFFE trust domain such as prod.example.com (lower case, no scheme or path)');

/** An address the gateway may fetch an OpenID provider's documents from: https, or plain http to this machine only (a local IdP in development). */
export function isProviderUrl(s: string): boolean {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return false;
  }
  return u.protocol === 'https:' || (u.protocol === 'http:' && (u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]'));
}

const PROVIDER_URL = 'expected an https:// URL (http:// only to 127.0.0.1, localhost or [::1])';

const jwksUri = z.string().max(2048).refine(isProviderUrl, { message: PROVIDER_URL });

/** A JWT claim name (top-level claims only). */
const claimName = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9_.:-]+$/, 'expected a claim name');

/**
 * End users' tokens from an OpenID Connect provider (Keycloak, Auth0, Cognito, Entra ID, …), verified at the
 * edge against the provider's keys: signature (asymmetric algorithms only), issuer, audience, expiry.
 */
export const RouteOidc = z
  .strictObject({
    /** The `iss` the tokens carry, exactly. */
    issuer: z.string().min(1).max(2048),
    /** Absent: taken from the issuer's discovery document (`<issuer>/.well-known/openid-configuration`). */
    jwksUri: jwksUri.optional(),
    /** The token's `aud` must name one of these (the client id or API identifier registered at the provider). */
    audiences: z.array(z.string().min(1).max(256)).min(1).max(32),
    /** The claim that names the user: the identity `User:<value>`, and `user.id` in the request's baggage. */
    userClaim: claimName.default('sub'),
    /** Scopes the token must all carry (`scope`, space-separated, or `scp`, a list). */
    requiredScopes: z.array(z.string().min(1).max(256).regex(/^\S+$/, 'expected a scope without spaces')).min(1).max(32).optional(),
    /** Claims sent upstream as headers (claim → header name); a client's own headers of those names never pass. */
    claimHeaders: z.record(claimName, headerName).optional(),
  })
  .superRefine((o, ctx) => {
    if (o.jwksUri === undefined && !isProviderUrl(o.issuer)) issue(ctx, ['issuer'], `without jwksUri the issuer is where its keys are discovered: ${PROVIDER_URL}`);
    const names = Object.values(o.claimHeaders ?? {});
    if (names.length > 16) issue(ctx, ['claimHeaders'], 'at most 16 claims');
    const seen = new Set<string>();
    for (const [claim, name] of Object.entries(o.claimHeaders ?? {})) {
      const lower = name.toLowerCase();
      if (ownedOnRequest(lower) || lower === 'authorization' || lower === 'cookie') issue(ctx, ['claimHeaders', claim], `the gateway owns ${lower}; name another header`);
      else if (seen.has(lower)) issue(ctx, ['claimHeaders', claim], `${lower} is named for two claims`);
      seen.add(lower);
    }
  });
export type RouteOidc = z.infer<typeof RouteOidc>;

/** Headers an authorization service is never asked to see or send: framing, and what the gateway sets itself. */
const NOT_FOR_AUTHZ = new Set(['host', 'connection', 'keep-alive', 'content-length', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'expect']);

/**
 * Authorization by a service of the shop's own (auth mode external), as Traefik's ForwardAuth and nginx's
 * auth_request ask it: for each request the gateway sends a GET to `path` of `service` (through the engine:
 * discovery, balancing, breakers) with the request's method, scheme, host, URI and address in
 * X-Forwarded-* headers and the client's `requestHeaders`. A 2xx answer lets the request through, with the
 * answer's `upstreamHeaders`; any other answer goes to the client as it came (status, body, `clientHeaders`):
 * a 401, or a 302 to a login page. oauth2-proxy, Authelia and Authentik speak this.
 */
export const RouteExternalAuth = z
  .strictObject({
    service: dnsName,
    path: pathText.default('/'),
    /** The client's headers the service sees (absent from the request: not sent). */
    requestHeaders: z.array(headerName).max(32).default(['authorization', 'cookie']),
    /** Headers of a 2xx answer sent upstream; a client's own headers of those names never pass. */
    upstreamHeaders: z.array(headerName).max(32).default([]),
    /** Headers of a refusal passed to the client, beside its content type. */
    clientHeaders: z.array(headerName).max(32).default(['www-authenticate', 'location', 'set-cookie']),
    /** A 2xx answer's header naming the end user: the identity `User:<value>`, and `user.id` in the baggage. */
    userHeader: headerName.optional(),
    /** Budget of the check, retries included; past it the request gets 503. */
    timeoutMs: z.int().min(1).max(60_000).default(1000),
  })
  .superRefine((o, ctx) => {
    o.requestHeaders.forEach((n, i) => {
      const lower = n.toLowerCase();
      if (NOT_FOR_AUTHZ.has(lower) || ownedOnRequest(lower)) issue(ctx, ['requestHeaders', i], `${lower} is the gateway's to set`);
    });
    const up = [...o.upstreamHeaders, ...(o.userHeader !== undefined ? [o.userHeader] : [])];
    up.forEach((n, i) => {
      const lower = n.toLowerCase();
      if (NOT_FOR_AUTHZ.has(lower) || ownedOnRequest(lower) || lower === 'authorization' || lower === 'cookie') {
        issue(ctx, i < o.upstreamHeaders.length ? ['upstreamHeaders', i] : ['userHeader'], `the gateway owns ${lower}; name another header`);
      }
    });
  });
export type RouteExternalAuth = z.infer<typeof RouteExternalAuth>;

export const RouteAuth = z.strictObject({
  /**
   * jwt: a bearer JWT signed by the server. apiKey: a plinth_… credential. any: either. mtls: a client
   * certificate verified at the TLS handshake, naming a SPIFFE ID. oidc: an end user's bearer token from an
   * OpenID Connect provider (`oidc`). anonymous: no check.
   */
  mode: z.enum(AUTH_MODES).default('jwt'),
  oidc: RouteOidc.optional(),
  external: RouteExternalAuth.optional(),
  /** The token's `aud` must be one of these; default the server's own audience, "plinth". */
  audiences: z.array(z.string().min(1).max(256)).min(1).max(32).optional(),
  /** mtls only: the SPIFFE trust domains whose IDs this route accepts. Absent: any the client CA bundle vouches for. */
  trustDomains: z.array(trustDomain).min(1).max(32).optional(),
  /** Roles (RoleBindings in the gateway's namespace) the identity must hold, all of them. */
  requiredRoles: z.array(dnsName).min(1).max(32).optional(),
});
export type RouteAuth = z.infer<typeof RouteAuth>;

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

export const RouteSpec = z
  .strictObject({
    /** Absent: every host. */
    hosts: z.array(hostPattern).min(1).max(64).optional(),
    match: RouteMatch,
    /** The upstream service (its registered name). */
    service: dnsName.optional(),
    /** Upstream services sharing the route's traffic by weight, instead of one `service`. */
    split: ServiceSplit.optional(),
    /** A fixed answer instead of an upstream. */
    static: StaticAnswer.optional(),
    /** A redirect instead of an upstream. */
    redirect: RouteRedirect.optional(),
    rewrite: RouteRewrite.optional(),
    /** Budget of the whole exchange, retries included; an incoming plinth-timeout-ms can only shorten it. */
    timeoutMs: z.int().min(1).max(600_000).optional(),
    /**
     * For answers that stream (server-sent events, gRPC server or bidirectional streams, long downloads): the
     * deadline (timeoutMs, or the default) then bounds the exchange up to the answer's headers only, and the
     * body may go on as long as bytes keep passing, either way; silent this long, the stream is cut.
     */
    streamIdleTimeoutMs: z.int().min(1).max(86_400_000).optional(),
    retries: RouteRetries.optional(),
    mirror: RouteMirror.optional(),
    /** Edits of the request sent upstream, after the client's own headers are taken. */
    requestHeaders: RequestHeaderModifier.optional(),
    /** Edits of the upstream's answer on its way to the client (not of the gateway's own answers). */
    responseHeaders: ResponseHeaderModifier.optional(),
    /** Larger request bodies are refused with 413. */
    maxBodyBytes: z.int().min(0).max(1024 * 1024 * 1024).default(DEFAULT_MAX_BODY_BYTES),
    cors: RouteCors.optional(),
    /** Upstream answers compressed on their way out, for clients that accept it. */
    compression: RouteCompression.optional(),
    /**
     * gRPC-Web calls (`application/grpc-web…`): `translate` turns each into gRPC over HTTP/2 for the upstream
     * and its answer back into gRPC-Web; `passthrough` forwards them as they are, to an upstream that speaks
     * gRPC-Web itself.
     */
    grpcWeb: z.enum(['translate', 'passthrough']).default('translate'),
    auth: RouteAuth.default({ mode: 'jwt' }),
    clientIps: RouteClientIps.optional(),
    /** Breaks ties between equally specific routes; higher first. */
    priority: z.int().min(-1000).max(1000).default(0),
  })
  .superRefine((r, ctx) => {
    const actions = (r.service !== undefined ? 1 : 0) + (r.split !== undefined ? 1 : 0) + (r.static !== undefined ? 1 : 0) + (r.redirect !== undefined ? 1 : 0);
    if (actions !== 1) issue(ctx, ['service'], 'expected exactly one of service, split, static or redirect');
    const own = r.static !== undefined ? 'static' : r.redirect !== undefined ? 'redirect' : undefined;
    if (own !== undefined) {
      for (const k of ['rewrite', 'timeoutMs', 'streamIdleTimeoutMs', 'retries', 'requestHeaders', 'responseHeaders', 'mirror', 'compression'] as const) if (r[k] !== undefined) issue(ctx, [k], `not allowed with ${own}`);
    }
    const p = r.match.path;
    if (r.redirect?.prefix !== undefined && p.prefix === undefined) issue(ctx, ['redirect', 'prefix'], 'only allowed when match.path is a prefix');
    if (r.redirect?.path !== undefined) checkParamsOf(r.redirect.path, p, ctx, ['redirect', 'path']);
    if (r.rewrite?.prefix !== undefined && p.prefix === undefined) issue(ctx, ['rewrite', 'prefix'], 'only allowed when match.path is a prefix');
    if (r.rewrite?.path !== undefined) {
      checkParamsOf(r.rewrite.path, p, ctx, ['rewrite', 'path']);
      if (p.regex !== undefined || p.prefix !== undefined) issue(ctx, ['rewrite', 'path'], 'only allowed when match.path is exact or a template (use rewrite.prefix for a prefix)');
    }
    if (r.auth.mode === 'anonymous') {
      if (r.auth.audiences !== undefined) issue(ctx, ['auth', 'audiences'], 'not allowed when mode is anonymous');
      if (r.auth.requiredRoles !== undefined) issue(ctx, ['auth', 'requiredRoles'], 'not allowed when mode is anonymous');
    }
    // A certificate carries no audience; a token no trust domain.
    if (r.auth.mode === 'mtls' && r.auth.audiences !== undefined) issue(ctx, ['auth', 'audiences'], 'not allowed when mode is mtls (a certificate has no audience)');
    if (r.auth.mode !== 'mtls' && r.auth.trustDomains !== undefined) issue(ctx, ['auth', 'trustDomains'], 'only allowed when mode is mtls');
    if (r.auth.mode === 'oidc') {
      if (r.auth.oidc === undefined) issue(ctx, ['auth', 'oidc'], 'expected the provider (issuer, jwksUri, audiences) when mode is oidc');
      if (r.auth.audiences !== undefined) issue(ctx, ['auth', 'audiences'], 'not allowed when mode is oidc (set oidc.audiences)');
      // RoleBindings name ServiceAccounts; an end user's rights travel in the token's scopes.
      if (r.auth.requiredRoles !== undefined) issue(ctx, ['auth', 'requiredRoles'], 'not allowed when mode is oidc (use oidc.requiredScopes)');
      const edited = new Set([...Object.keys(r.requestHeaders?.set ?? {}), ...Object.keys(r.requestHeaders?.add ?? {})].map((n) => n.toLowerCase()));
      for (const [claim, name] of Object.entries(r.auth.oidc?.claimHeaders ?? {})) {
        if (edited.has(name.toLowerCase())) issue(ctx, ['auth', 'oidc', 'claimHeaders', claim], `${name.toLowerCase()} is set by requestHeaders too; name it once`);
      }
    } else if (r.auth.oidc !== undefined) issue(ctx, ['auth', 'oidc'], 'only allowed when mode is oidc');
    if (r.auth.mode === 'external') {
      if (r.auth.external === undefined) issue(ctx, ['auth', 'external'], 'expected the authorization service (service, path) when mode is external');
      for (const k of ['audiences', 'requiredRoles'] as const) if (r.auth[k] !== undefined) issue(ctx, ['auth', k], `not allowed when mode is external (the service decides)`);
      const edited = new Set([...Object.keys(r.requestHeaders?.set ?? {}), ...Object.keys(r.requestHeaders?.add ?? {})].map((n) => n.toLowerCase()));
      for (const name of [...(r.auth.external?.upstreamHeaders ?? []), ...(r.auth.external?.userHeader !== undefined ? [r.auth.external.userHeader] : [])]) {
        if (edited.has(name.toLowerCase())) issue(ctx, ['auth', 'external'], `${name.toLowerCase()} is set by requestHeaders too; name it once`);
      }
    } else if (r.auth.external !== undefined) issue(ctx, ['auth', 'external'], 'only allowed when mode is external');
    if (r.cors?.allowCredentials === true && r.cors.allowOrigins.includes('*')) {
      issue(ctx, ['cors', 'allowCredentials'], 'browsers refuse credentials with allowOrigins "*"; list the origins');
    }
  });
export type RouteSpec = z.infer<typeof RouteSpec>;
