/**
 * Stable codes for callers and tests to match on (never the message text), with the HTTP status each maps to.
 */
export const RATE_LIMITED = 'rate_limited'; // 429: a rate or quota rule refused the request
export const CONCURRENCY_LIMITED = 'concurrency_limited'; // 429: too many requests in flight here (docs/governance.md)
export const OVERLOADED = 'overloaded'; // 503: the adaptive limit says this instance is saturated

export type RateLimitCode = typeof RATE_LIMITED | typeof CONCURRENCY_LIMITED | typeof OVERLOADED;

const STATUS: Record<RateLimitCode, number> = { rate_limited: 429, concurrency_limited: 429, overloaded: 503 };

/** Thrown (or returned) by bindings that turn a refusal into an error; carries when to try again. */
export class RateLimitError extends Error {
  readonly code: RateLimitCode;
  readonly status: number;
  /** Milliseconds until a retry could succeed; `Infinity` when it never can (cost above the burst). */
  readonly retryAfterMs: number;

  constructor(code: RateLimitCode, message: string, retryAfterMs: number) {
    super(message);
    this.name = 'RateLimitError';
    this.code = code;
    this.status = STATUS[code];
    this.retryAfterMs = retryAfterMs;
  }
}

export function isRateLimitError(e: unknown, code?: RateLimitCode): e is RateLimitError {
  return e instanceof RateLimitError && (code === undefined || e.code === code);
}
