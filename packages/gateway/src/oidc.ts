import type { IncomingHttpHeaders } from 'node:http';
import { isProviderUrl, type RouteOidc } from '@plinth/core';
import { createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { audiencesOf, MAX_CACHED_TOKENS, refuse, TOKEN_TOLERANCE_SEC, tokenRefusal, type AuthOutcome, type Identity, type TokenWording } from './auth.js';
import { GatewayCodes } from './errors.js';
import { HEADER_SAFE, SUBJECT_SAFE } from './identity-headers.js';

/** Asymmetric algorithms only: a shared-secret (HS*) or unsigned token cannot be told from a forged one here. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

export interface OidcOptions {
  /** Least time between two key fetches for unknown key ids. Default 30 s. */
  jwksCooldownMs?: number;
  /** How long fetched keys are used before they are fetched again. Default 10 min. */
  jwksMaxAgeMs?: number;
  /** Epoch ms; tests move it. */
  now?: () => number;
}

const PROVIDER_TOKENS: TokenWording = {
  unknownKey: 'token was signed by a key the provider does not publish',
  algorithms: 'asymmetric signatures only',
  keysUnavailable: "the identity provider's signing keys cannot be fetched right now",
};

function describe(err: unknown): AuthOutcome {
  if (err instanceof DiscoveryFailed) return refuse(`the identity provider's keys cannot be located: ${err.message}`, 503, GatewayCodes.authUnavailable);
  return tokenRefusal(err, PROVIDER_TOKENS);
}

/** The provider's keys could not be located (its discovery document); answered 503, as keys that cannot be fetched. */
class DiscoveryFailed extends Error {}

/** How long a failed discovery is not tried again: a provider that is down is not asked on every request. */
const DISCOVERY_RETRY_MS = 5000;

/**
 * One provider's keys (one issuer and JWKS URI), shared by every route that names them. Without a JWKS URI
 * it is read from the issuer's discovery document (OpenID Connect Discovery 1.0) on the first token.
 */
class Provider {
  /** Verified tokens: the payload, until it expires. Routes check their own audience and scopes on it. */
  readonly verified = new Map<string, JWTPayload>();
  private remote: JWTVerifyGetKey | undefined;
  private discovering: Promise<JWTVerifyGetKey> | undefined;
  private failedAt = Number.NEGATIVE_INFINITY;
  private failure: Error | undefined;

  constructor(
    readonly issuer: string,
    jwksUri: string | undefined,
    private readonly o: OidcOptions,
    private readonly now: () => number,
  ) {
    if (jwksUri !== undefined) this.remote = this.remoteSet(jwksUri);
  }

  /** What jose calls for the key of a token. */
  readonly keys: JWTVerifyGetKey = (header, token) => {
    const remote = this.remote;
    if (remote !== undefined) return remote(header, token);
    return this.discover().then((k) => k(header, token));
  };

  private remoteSet(uri: string): JWTVerifyGetKey {
    return createRemoteJWKSet(new URL(uri), { cooldownDuration: this.o.jwksCooldownMs ?? 30_000, cacheMaxAge: this.o.jwksMaxAgeMs ?? 600_000, timeoutDuration: 5000 });
  }

  private discover(): Promise<JWTVerifyGetKey> {
    if (this.failure !== undefined && this.now() - this.failedAt < DISCOVERY_RETRY_MS) return Promise.reject(this.failure);
    return (this.discovering ??= this.fetchDiscovery().then(
      (uri) => (this.remote = this.remoteSet(uri)),
      (e: unknown) => {
        this.discovering = undefined;
        this.failedAt = this.now();
        throw (this.failure = e instanceof DiscoveryFailed ? e : new DiscoveryFailed(`the provider's discovery document cannot be read: ${(e as Error).message}`));
      },
    ));
  }

  private async fetchDiscovery(): Promise<string> {
    const url = `${this.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    const res = await fetch(url, { signal: AbortSignal.timeout(5000), redirect: 'error' });
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new DiscoveryFailed(`${url} answered ${res.status}`);
    }
    const doc = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
    // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
    if (doc.issuer !== this.issuer) throw new DiscoveryFailed(`${url} names another issuer (${String(doc.issuer)})`);
    if (typeof doc.jwks_uri !== 'string' || !isProviderUrl(doc.jwks_uri)) throw new DiscoveryFailed(`${url} gives no usable jwks_uri (https, or http to this machine only)`);
    return doc.jwks_uri;
  }
}

/**
 * End users' bearer tokens for routes of auth mode `oidc`. The provider's keys are fetched by jose and cached
 * (an unknown `kid` refetches, at most once per cooldown, so a rotation is followed and a flood of made-up
 * kids is not forwarded to the provider); a verified token is cached until it expires, so the steady state
 * is a map lookup plus the route's own audience and scope checks.
 */
export class OidcVerifier {
  private readonly providers = new Map<string, Provider>();
  private readonly now: () => number;

  constructor(private readonly o: OidcOptions = {}) {
    this.now = o.now ?? Date.now;
  }

  authenticate(headers: IncomingHttpHeaders, route: RouteOidc): AuthOutcome | Promise<AuthOutcome> {
    const authorization = headers.authorization;
    const sp = authorization === undefined ? -1 : authorization.indexOf(' ');
    if (authorization === undefined || sp < 0 || !/^bearer$/i.test(authorization.slice(0, sp))) return refuse('a bearer token from the identity provider is required');
    const token = authorization.slice(sp + 1).trim();
    if (token === '') return refuse('a bearer token from the identity provider is required');
    const p = this.provider(route);
    const hit = p.verified.get(token);
    if (hit !== undefined) {
      if (Number(hit.exp) + TOKEN_TOLERANCE_SEC > this.now() / 1000) return admit(hit, route);
      p.verified.delete(token);
    }
    return this.verify(p, token, route);
  }

  private provider(route: RouteOidc): Provider {
    const key = `${route.issuer}\n${route.jwksUri ?? ''}`;
    let p = this.providers.get(key);
    if (p === undefined) this.providers.set(key, (p = new Provider(route.issuer, route.jwksUri, this.o, this.now)));
    return p;
  }

  private async verify(p: Provider, token: string, route: RouteOidc): Promise<AuthOutcome> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, p.keys, { issuer: p.issuer, algorithms: ALGORITHMS, clockTolerance: TOKEN_TOLERANCE_SEC, currentDate: new Date(this.now()), requiredClaims: ['exp'] }));
    } catch (err) {
      return describe(err);
    }
    if (p.verified.size >= MAX_CACHED_TOKENS) p.verified.clear();
    p.verified.set(token, payload);
    return admit(payload, route);
  }
}

/** The route's audience, scopes and user claim on a verified payload, and the identity it makes. */
function admit(payload: JWTPayload, route: RouteOidc): AuthOutcome {
  const audiences = audiencesOf(payload.aud);
  if (!audiences.some((a) => route.audiences.includes(a))) return refuse(`token audience is not ${route.audiences.join(' or ')}`);
  if (route.requiredScopes !== undefined) {
    const held = scopesOf(payload);
    for (const s of route.requiredScopes) if (!held.includes(s)) return refuse(`token lacks the scope ${s}`, 403, GatewayCodes.forbidden);
  }
  const user = claimText(payload[route.userClaim]);
  if (user === undefined || !SUBJECT_SAFE.test(user)) return refuse(`token claim ${route.userClaim} does not name a user`);
  let headers: string[] | undefined;
  const wanted = route.claimHeaders;
  if (wanted !== undefined) {
    for (const claim in wanted) {
      const v = claimText(payload[claim]);
      if (v !== undefined && HEADER_SAFE.test(v)) (headers ??= []).push(wanted[claim]!.toLowerCase(), v);
    }
  }
  const identity: Identity = { subject: `User:${user}`, via: 'oidc', audiences, expiresAt: Number(payload.exp), userId: user, headers };
  return { ok: true, identity };
}

function scopesOf(payload: JWTPayload): readonly string[] {
  const scope = payload.scope;
  if (typeof scope === 'string') return scope.split(' ').filter((s) => s !== '');
  const scp = payload.scp;
  if (Array.isArray(scp)) return scp.filter((s): s is string => typeof s === 'string');
  if (typeof scp === 'string') return scp.split(' ').filter((s) => s !== '');
  return [];
}

/** A claim as header text: strings as they are, numbers and booleans written out; objects and lists not at all. */
function claimText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}
