import { errorFrom, send, type Transport } from './http.js';
import { errorMessage, type Logger } from './logger.js';

/** Service-account credentials start with this; anything else is taken to be a JWT. */
export const CREDENTIAL_PREFIX = 'plinth_';

export interface TokenSourceOptions {
  transport: Transport;
  /** A JWT, or a `plinth_…` credential to exchange. */
  token: string;
  logger: Logger;
  /** After a failed exchange, how long to use the credential itself before trying again. Default 5 s. */
  retryExchangeAfterMs?: number;
  /** Monotonic clock in ms (tests replace it). */
  now?: () => number;
}

interface Jwt {
  token: string;
  /** When to stop using it: a little before its expiry, so a request never races the `exp` claim. */
  usableUntil: number;
}

/**
 * The bearer token for every request. A credential is exchanged at POST /v1/auth/token for a short-lived
 * JWT (cheaper for the server to verify than a credential, and never long-lived on the wire), refreshed in
 * the background at 2/3 of its lifetime with ONE timer. When the exchange fails the credential itself is
 * sent: the server accepts it, and a control plane that is slow to issue tokens must not cut the watch.
 */
export class TokenSource {
  readonly isCredential: boolean;
  private jwt: Jwt | undefined;
  private exchanging: Promise<boolean> | undefined;
  private failedAt = Number.NEGATIVE_INFINITY;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly stop = new AbortController();
  private readonly now: () => number;
  private readonly retryAfterMs: number;

  constructor(private readonly o: TokenSourceOptions) {
    this.isCredential = o.token.startsWith(CREDENTIAL_PREFIX);
    this.now = o.now ?? (() => performance.now());
    this.retryAfterMs = o.retryExchangeAfterMs ?? 5000;
  }

  /** True while a JWT from an exchange is in use (for tests and diagnostics). */
  get usingJwt(): boolean {
    return this.jwt !== undefined && this.now() < this.jwt.usableUntil;
  }

  /** The `Authorization` header value for the next request. */
  async authorization(): Promise<string> {
    if (!this.isCredential) return `Bearer ${this.o.token}`;
    if (this.jwt && this.now() < this.jwt.usableUntil) return `Bearer ${this.jwt.token}`;
    // Right after a failed exchange, don't put a second round trip in front of every request.
    if (this.now() - this.failedAt >= this.retryAfterMs) await this.exchange();
    return `Bearer ${this.jwt && this.now() < this.jwt.usableUntil ? this.jwt.token : this.o.token}`;
  }

  /**
   * After a 401: drop the JWT and exchange the credential again now. True when a new JWT was obtained, i.e.
   * the failed request is worth repeating once; false for a plain JWT (nothing to renew) or a failed exchange.
   */
  async renew(): Promise<boolean> {
    if (!this.isCredential || this.stop.signal.aborted) return false;
    this.jwt = undefined;
    return this.exchange();
  }

  close(): void {
    this.stop.abort();
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
  }

  /** Concurrent callers share one exchange. */
  private exchange(): Promise<boolean> {
    this.exchanging ??= this.doExchange().finally(() => {
      this.exchanging = undefined;
    });
    return this.exchanging;
  }

  private async doExchange(): Promise<boolean> {
    try {
      const res = await send(this.o.transport, 'POST', '/v1/auth/token', {
        authorization: `Bearer ${this.o.token}`,
        signal: this.stop.signal,
      });
      if (res.statusCode !== 200) throw await errorFrom(res, 'POST /v1/auth/token');
      const body = (await res.body.json()) as { access_token?: unknown; expires_in?: unknown };
      const token = body.access_token;
      const ttl = body.expires_in;
      if (typeof token !== 'string' || token === '' || typeof ttl !== 'number' || !(ttl > 0)) {
        throw new Error('POST /v1/auth/token: answer without access_token and a positive expires_in');
      }
      const ttlMs = ttl * 1000;
      this.jwt = { token, usableUntil: this.now() + ttlMs - Math.min(30_000, ttlMs / 10) };
      this.failedAt = Number.NEGATIVE_INFINITY;
      if (this.refreshTimer) clearTimeout(this.refreshTimer);
      if (!this.stop.signal.aborted) {
        // A failed refresh keeps the current JWT until it is no longer usable; the next request retries.
        this.refreshTimer = setTimeout(() => void this.exchange(), (ttlMs * 2) / 3);
        // The watch socket keeps a service alive, not this timer.
        this.refreshTimer.unref();
      }
      return true;
    } catch (e) {
      if (this.stop.signal.aborted) return false;
      this.failedAt = this.now();
      this.o.logger.warn('could not exchange the credential for a token; sending the credential itself meanwhile', {
        error: errorMessage(e),
      });
      return false;
    }
  }
}
