import type { IncomingHttpHeaders } from 'node:http';
import { subjectId, type RoleBindingSpec } from '@plinth/core';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { ResourceFeed } from './feed.js';
import { GatewayCodes } from './errors.js';
import type { CompiledAuth } from './routes.js';

/** A verified caller, as the upstream is told (`plinth-identity`). */
export interface Identity {
  /** `ServiceAccount:<namespace>/<name>`, or `User:<id>` for an end user's token (auth mode oidc). */
  readonly subject: string;
  readonly via: 'jwt' | 'apiKey' | 'mtls' | 'oidc' | 'external';
  readonly audiences: readonly string[];
  /** Epoch seconds. */
  readonly expiresAt: number;
  /** An end user's id (oidc): `user.id` in the request's baggage, for lanes by user and per-user limits. */
  readonly userId?: string | undefined;
  /** Claims the route sends upstream as headers (oidc), flat name/value pairs. */
  readonly headers?: readonly string[] | undefined;
}

export type AuthOutcome =
  | {
      readonly ok: true;
      readonly identity: Identity | undefined;
      /** Headers for the upstream an authorization service gave (auth mode external), flat name/value pairs. */
      readonly headers?: readonly string[] | undefined;
    }
  | {
      readonly ok: false;
      readonly status: number;
      readonly code: string;
      readonly detail: string;
      /** The answer an authorization service gave (auth mode external), passed to the client instead of a problem document. */
      readonly answer?: { readonly status: number; readonly contentType: string; readonly body: Buffer; readonly headers: readonly string[] } | undefined;
    };

export interface AuthOptions {
  /** Base URL of the plinth server: JWKS at `/.well-known/jwks.json`, key exchange at `/v1/auth/token`. */
  serverUrl: string;
  /** JWT `iss` to require. Default 'plinth' (the server's default). */
  issuer?: string;
  /** Audiences a token may carry when the route names none. Default ['plinth']. */
  audiences?: readonly string[];
  /**
   * Least time between two JWKS fetches caused by unknown key ids (a rotated key is fetched at once, a
   * flood of made-up kids is not forwarded to the server). Default 30 s.
   */
  jwksCooldownMs?: number;
  /** How long a fetched JWKS is used before it is fetched again. Default 10 min. */
  jwksMaxAgeMs?: number;
  /** How long an API key the server refused is refused without asking again. Default 30 s. */
  apiKeyNegativeTtlMs?: number;
  /** Epoch ms; tests move it. */
  now?: () => number;
}

const API_KEY_HEADER = 'x-api-key';
const CREDENTIAL_PREFIX = 'plinth_';
/** Verified tokens kept per cache (server-signed here, each OpenID provider's in oidc.ts). */
export const MAX_CACHED_TOKENS = 10_000;
/**
 * A verified token's `aud` as a list: RFC 7519 allows a string or an array of strings, and jose checks its
 * type only when asked for one audience, so anything else a provider signs (a number, objects in the array)
 * is read as naming none, never as an error.
 */
export function audiencesOf(aud: unknown): readonly string[] {
  if (typeof aud === 'string') return [aud];
  return Array.isArray(aud) ? aud.filter((a): a is string => typeof a === 'string') : [];
}

/** Clock skew allowed between whoever signed a token and this gateway. */
export const TOKEN_TOLERANCE_SEC = 30;

const NO_IDENTITY: AuthOutcome = { ok: true, identity: undefined };

export function refuse(detail: string, status: 401 | 403 | 503 = 401, code: string = GatewayCodes.unauthenticated): AuthOutcome {
  return { ok: false, status, code, detail };
}

/** What a token verifier says in the refusals that differ by who signs its tokens. */
export interface TokenWording {
  readonly unknownKey: string;
  readonly algorithms: string;
  readonly keysUnavailable: string;
}

/**
 * A failed jose verification as the gateway's answer: 401 for the token's own faults, 503 when the keys to
 * check it against cannot be had (a timeout, a broken key set, anything that is not jose's).
 */
export function tokenRefusal(err: unknown, w: TokenWording): AuthOutcome {
  if (err instanceof joseErrors.JWTExpired) return refuse('token expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) return refuse(err.claim === 'iss' ? 'token was issued by another issuer' : `token claim ${err.claim} is missing or not valid`);
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return refuse('token signature is not valid');
  if (err instanceof joseErrors.JWKSNoMatchingKey) return refuse(w.unknownKey);
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return refuse(`token algorithm is not accepted (${w.algorithms})`);
  if (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid || !(err instanceof joseErrors.JOSEError)) {
    return refuse(w.keysUnavailable, 503, GatewayCodes.authUnavailable);
  }
  return refuse('malformed token');
}

const SERVER_TOKENS: TokenWording = {
  unknownKey: 'token was signed by an unknown key',
  algorithms: 'ES256 only',
  keysUnavailable: 'the signing keys cannot be fetched from the control plane right now',
};

interface KeyEntry {
  identity: Identity | undefined;
  /** Epoch ms after which the entry is asked again. */
  until: number;
  refusal: AuthOutcome | undefined;
}

/**
 * Verifies callers for the routes: JWTs signed by the plinth server (against its JWKS, fetched by jose and
 * cached; an unknown `kid` refetches, at most once per cooldown, so a rotation is followed without a
 * restart), and API keys: a `plinth_…` credential of a ServiceAccount, exchanged ONCE at the server for a
 * JWT and cached until that JWT expires. A verified token is cached too, so the steady state is a map lookup.
 */
export class Authenticator {
  private readonly jwks: JWTVerifyGetKey;
  private readonly issuer: string;
  private readonly audiences: readonly string[];
  private readonly tokenUrl: string;
  private readonly now: () => number;
  private readonly negativeTtlMs: number;
  private readonly tokens = new Map<string, Identity>();
  private readonly keys = new Map<string, KeyEntry>();
  private readonly exchanging = new Map<string, Promise<AuthOutcome>>();

  constructor(o: AuthOptions, private readonly roles: RoleIndex | undefined) {
    const base = o.serverUrl.replace(/\/+$/, '');
    this.jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`), {
      cooldownDuration: o.jwksCooldownMs ?? 30_000,
      cacheMaxAge: o.jwksMaxAgeMs ?? 600_000,
      timeoutDuration: 5000,
    });
    this.tokenUrl = `${base}/v1/auth/token`;
    this.issuer = o.issuer ?? 'plinth';
    this.audiences = o.audiences ?? ['plinth'];
    this.now = o.now ?? Date.now;
    this.negativeTtlMs = o.apiKeyNegativeTtlMs ?? 30_000;
  }

  /** Decides a request for a route; a cached token or key answers synchronously. */
  authenticate(headers: IncomingHttpHeaders, auth: CompiledAuth): AuthOutcome | Promise<AuthOutcome> {
    if (auth.mode === 'anonymous') return NO_IDENTITY;
    // Certificates are the edge's to check (client-cert.ts): no header can stand in for one.
    if (auth.mode === 'mtls') return refuse('this route takes a client certificate (mutual TLS)');
    const authorization = headers.authorization;
    let bearer: string | undefined;
    let apiKey: string | undefined;
    if (authorization !== undefined) {
      const sp = authorization.indexOf(' ');
      const scheme = sp < 0 ? authorization : authorization.slice(0, sp);
      const value = sp < 0 ? '' : authorization.slice(sp + 1).trim();
      if (/^bearer$/i.test(scheme)) bearer = value;
      else if (/^apikey$/i.test(scheme)) apiKey = value;
    }
    const xKey = headers[API_KEY_HEADER];
    if (apiKey === undefined && typeof xKey === 'string') apiKey = xKey.trim();

    const wantsJwt = auth.mode === 'jwt' || auth.mode === 'any';
    const wantsKey = auth.mode === 'apiKey' || auth.mode === 'any';
    let out: AuthOutcome | Promise<AuthOutcome>;
    if (bearer !== undefined && bearer !== '' && wantsJwt && !bearer.startsWith(CREDENTIAL_PREFIX)) out = this.verifyJwt(bearer, 'jwt');
    else if (wantsKey && (apiKey ?? bearer)?.startsWith(CREDENTIAL_PREFIX)) out = this.verifyKey((apiKey ?? bearer)!);
    else if (bearer === undefined && apiKey === undefined) out = refuse(auth.mode === 'apiKey' ? 'an API key is required (x-api-key: plinth_…)' : 'a bearer token is required');
    else out = refuse(auth.mode === 'jwt' ? 'this route takes a bearer JWT' : auth.mode === 'apiKey' ? 'this route takes an API key (plinth_…)' : 'expected a bearer JWT or an API key (plinth_…)');
    if (out instanceof Promise) return out.then((o) => this.authorize(o, auth));
    return this.authorize(out, auth);
  }

  /** The route's audience and role requirements on a verified identity. */
  private authorize(o: AuthOutcome, auth: CompiledAuth): AuthOutcome {
    if (!o.ok || o.identity === undefined) return o;
    const id = o.identity;
    const wanted = auth.audiences ?? this.audiences;
    if (!id.audiences.some((a) => wanted.includes(a))) return refuse(`token audience is not ${wanted.join(' or ')}`);
    return checkRoles(o, auth, this.roles);
  }

  private verifyJwt(token: string, via: Identity['via']): AuthOutcome | Promise<AuthOutcome> {
    const hit = this.tokens.get(token);
    if (hit !== undefined) {
      if (hit.expiresAt + TOKEN_TOLERANCE_SEC > this.now() / 1000) return hit.via === via ? { ok: true, identity: hit } : { ok: true, identity: { ...hit, via } };
      this.tokens.delete(token);
    }
    return this.verifySlow(token, via);
  }

  private async verifySlow(token: string, via: Identity['via']): Promise<AuthOutcome> {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.jwks, {
        issuer: this.issuer,
        algorithms: ['ES256'],
        clockTolerance: TOKEN_TOLERANCE_SEC,
        currentDate: new Date(this.now()),
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (err) {
      return tokenRefusal(err, SERVER_TOKENS);
    }
    const sub = payload.sub;
    if (typeof sub !== 'string' || !/^ServiceAccount:[^/]+\/[^/]+$/.test(sub)) return refuse('token subject is not a service account');
    const identity: Identity = { subject: sub, via, audiences: audiencesOf(payload.aud), expiresAt: Number(payload.exp) };
    if (this.tokens.size >= MAX_CACHED_TOKENS) this.tokens.clear();
    this.tokens.set(token, identity);
    return { ok: true, identity };
  }

  private verifyKey(key: string): AuthOutcome | Promise<AuthOutcome> {
    const hit = this.keys.get(key);
    if (hit !== undefined) {
      if (hit.until > this.now()) return hit.refusal ?? { ok: true, identity: hit.identity };
      this.keys.delete(key);
    }
    let p = this.exchanging.get(key);
    if (p === undefined) {
      p = this.exchange(key).finally(() => this.exchanging.delete(key));
      this.exchanging.set(key, p);
    }
    return p;
  }

  /** POST /v1/auth/token with the credential; the JWT it answers is verified like any other. */
  private async exchange(key: string): Promise<AuthOutcome> {
    let res: Response;
    try {
      res = await fetch(this.tokenUrl, { method: 'POST', headers: { authorization: `Bearer ${key}` }, signal: AbortSignal.timeout(5000) });
    } catch {
      return refuse('API keys cannot be checked: the control plane is unreachable', 503, GatewayCodes.authUnavailable);
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      const refusal = refuse('API key is not valid');
      this.remember(key, { identity: undefined, until: this.now() + this.negativeTtlMs, refusal });
      return refusal;
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      return refuse(`API keys cannot be checked: the control plane answered ${res.status}`, 503, GatewayCodes.authUnavailable);
    }
    let token: unknown;
    try {
      token = ((await res.json()) as { access_token?: unknown }).access_token;
    } catch {
      token = undefined;
    }
    if (typeof token !== 'string') return refuse('API keys cannot be checked: the control plane gave no token', 503, GatewayCodes.authUnavailable);
    const out = await this.verifyJwt(token, 'apiKey');
    if (out.ok && out.identity !== undefined) this.remember(key, { identity: out.identity, until: out.identity.expiresAt * 1000, refusal: undefined });
    return out;
  }

  private remember(key: string, e: KeyEntry): void {
    if (this.keys.size >= MAX_CACHED_TOKENS) this.keys.clear();
    this.keys.set(key, e);
  }
}

/** The route's `requiredRoles` on a verified identity (any way it was verified): 403 for a missing one. */
export function checkRoles(o: AuthOutcome, auth: CompiledAuth, roles: RoleIndex | undefined): AuthOutcome {
  if (!o.ok || o.identity === undefined || auth.requiredRoles === undefined) return o;
  const id = o.identity;
  const held = roles?.rolesOf(id.subject) ?? [];
  for (const r of auth.requiredRoles) if (!held.includes(r)) return refuse(`${id.subject} lacks the role ${r}`, 403, GatewayCodes.forbidden);
  return o;
}

/**
 * Roles per subject, from the RoleBindings of the gateway's namespace (a binding grants its `role` to its
 * subjects), rebuilt once per feed version.
 */
export class RoleIndex {
  private version = -1;
  private bySubject = new Map<string, string[]>();

  constructor(private readonly feed: ResourceFeed<RoleBindingSpec>) {}

  rolesOf(subject: string): readonly string[] {
    if (this.feed.version !== this.version) this.rebuild();
    return this.bySubject.get(subject) ?? [];
  }

  private rebuild(): void {
    this.version = this.feed.version;
    const m = new Map<string, string[]>();
    for (const rb of this.feed.list()) {
      const spec = rb.spec;
      if (typeof spec?.role !== 'string' || !Array.isArray(spec.subjects)) continue;
      for (const s of spec.subjects) {
        const id = subjectId(s);
        let arr = m.get(id);
        if (!arr) m.set(id, (arr = []));
        if (!arr.includes(spec.role)) arr.push(spec.role);
      }
    }
    for (const arr of m.values()) arr.sort();
    this.bySubject = m;
  }
}
