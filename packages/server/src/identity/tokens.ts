import { randomUUID } from 'node:crypto';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { PlinthError, subjectId } from '@plinth/core';
import type { SigningKeys } from './signing-keys.js';

export const TOKEN_AUDIENCE = 'plinth';
export const CLOCK_TOLERANCE_SECONDS = 30;
/**
 * Private claim: createRevision of the ServiceAccount at issue time. A ServiceAccount deleted and created
 * again gets a new createRevision, so the old incarnation's tokens are refused without trusting clocks.
 */
export const ACCOUNT_REVISION_CLAIM = 'sa_rev';

export interface IssuedToken {
  token: string;
  kid: string;
  /** Epoch seconds. */
  expiresAt: number;
  expiresIn: number;
}

export interface VerifiedToken {
  namespace: string;
  name: string;
  accountRevision: number;
  kid: string;
  jti: string;
  /** Epoch seconds. */
  iat: number;
  exp: number;
}

export interface TokensOptions {
  keys: SigningKeys;
  issuer: string;
  ttlSeconds: number;
  now: () => number;
}

const SUBJECT_RE = /^ServiceAccount:([^/]+)\/([^/]+)$/;
/** Tokens are reused for their whole lifetime; ECDSA verification costs ~0.2 ms, a map lookup nothing. */
const VERIFIED_CACHE_MAX = 10_000;

/** Issues and verifies the server's JWTs, offline: only keys already held (or read from the shared store) are used. */
export class Tokens {
  private verified = new Map<string, VerifiedToken>();

  constructor(private readonly o: TokensOptions) {}

  get ttlSeconds(): number {
    return this.o.ttlSeconds;
  }

  async issue(account: { namespace: string; name: string; createRevision: number }): Promise<IssuedToken> {
    const { kid, key } = this.o.keys.signer();
    const iat = Math.floor(this.o.now() / 1000);
    const exp = iat + this.o.ttlSeconds;
    const token = await new SignJWT({ [ACCOUNT_REVISION_CLAIM]: account.createRevision })
      .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
      .setIssuer(this.o.issuer)
      .setSubject(subjectId(account))
      .setAudience(TOKEN_AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomUUID())
      .sign(key);
    return { token, kid, expiresAt: exp, expiresIn: this.o.ttlSeconds };
  }

  /** Throws UNAUTHENTICATED with a reason a client can act on. */
  async verify(token: string): Promise<VerifiedToken> {
    const nowSec = this.o.now() / 1000;
    const hit = this.verified.get(token);
    if (hit) {
      // Expiry is re-checked on every hit; a key removed since then also drops the entry (forgetKey).
      if (hit.exp + CLOCK_TOLERANCE_SECONDS > nowSec) return hit;
      this.verified.delete(token);
    }
    let kid: unknown;
    try {
      const header = decodeProtectedHeader(token);
      if (header.alg !== 'ES256') throw unauthenticated(`token algorithm ${String(header.alg)} is not accepted (ES256 only)`);
      kid = header.kid;
    } catch (err) {
      if (err instanceof PlinthError) throw err;
      throw unauthenticated('malformed token: not a JWT');
    }
    if (typeof kid !== 'string' || kid === '') throw unauthenticated('token has no key id (kid)');
    const key = this.o.keys.verificationKey(kid) ?? (await this.o.keys.fetch(kid));
    if (!key) throw unauthenticated('token was signed by an unknown or retired key');
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, key, {
        issuer: this.o.issuer,
        audience: TOKEN_AUDIENCE,
        algorithms: ['ES256'],
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        currentDate: new Date(this.o.now()),
        requiredClaims: ['sub', 'iat', 'exp', 'jti'],
      }));
    } catch (err) {
      throw unauthenticated(describeJoseError(err), err);
    }
    const m = SUBJECT_RE.exec(String(payload.sub));
    const accountRevision = payload[ACCOUNT_REVISION_CLAIM];
    if (!m || typeof accountRevision !== 'number') throw unauthenticated('token subject is not a service account');
    const v: VerifiedToken = {
      namespace: m[1]!,
      name: m[2]!,
      accountRevision,
      kid,
      jti: String(payload.jti),
      iat: Number(payload.iat),
      exp: Number(payload.exp),
    };
    if (this.verified.size >= VERIFIED_CACHE_MAX) this.verified.clear();
    this.verified.set(token, v);
    return v;
  }

  /** A key left the set: tokens it signed must be verified again (and now fail). */
  forgetKey(kid: string): void {
    for (const [t, v] of this.verified) if (v.kid === kid) this.verified.delete(t);
  }
}

function unauthenticated(detail: string, cause?: unknown): PlinthError {
  return new PlinthError('UNAUTHENTICATED', detail, cause === undefined ? undefined : { cause });
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'aud') return 'token audience is not plinth';
    if (err.claim === 'iss') return 'token was issued by another issuer';
    if (err.claim === 'nbf' || err.claim === 'iat') return 'token is not valid yet (check the clocks)';
    return `token claim ${err.claim} is missing or not valid`;
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature is not valid';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm is not accepted (ES256 only)';
  return 'malformed token';
}
