import type { QuotaDecision } from './cluster.js';
import type { RateLimiter } from './token-bucket.js';

/**
 * The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers, the structured-field form of
 * draft-08 and later) plus `Retry-After`:
 *
 *   RateLimit-Policy: "default";q=100;w=1      quota q units per window of w seconds
 *   RateLimit: "default";r=42;t=1              r units left, full again in t seconds
 *   Retry-After: 1                             (RFC 9110) only when the next request would be refused
 *
 * Every parameter is a structured-field Integer, so fractions are rounded the safe way for a client: what
 * remains down, waits up. A window that is not a whole number of seconds (a bucket of 5 at 100/s refills in
 * 0.05 s) is widened to the next whole second with the quota scaled along, so q / w stays the steady rate a
 * client may plan on. Built on the cold path (a response being written).
 */

/** Whole seconds for `Retry-After` (ceil: retrying early only earns another 429). */
export function retryAfterSeconds(ms: number): string {
  if (!(ms < Infinity)) throw new RangeError(`no Retry-After for a wait of ${ms} ms`);
  return ms > 0 ? String(Math.ceil(ms / 1000)) : '0';
}

/** Headers describing a local limiter's state right now. */
export function rateLimitHeaders(l: RateLimiter, policyName = 'default'): Record<string, string> {
  const name = sfString(policyName);
  const headers: Record<string, string> = {
    'RateLimit-Policy': policy(name, l.quota, l.windowSeconds),
    RateLimit: `${name};r=${Math.max(0, Math.floor(l.remaining()))};t=${secondsUp(l.resetMs())}`,
  };
  const wait = l.retryAfterMs();
  if (wait > 0 && wait < Infinity) headers['Retry-After'] = retryAfterSeconds(wait);
  return headers;
}

/**
 * Headers for a cluster quota's answer. `quota` units per `windowSeconds` is the policy (for a GCRA quota:
 * the burst, over burst / rate seconds); `t` is the time the deficit takes to refill at that rate.
 */
export function quotaHeaders(d: QuotaDecision, quota: number, windowSeconds: number, policyName = 'default'): Record<string, string> {
  if (!(quota > 0 && quota < Infinity)) throw new RangeError(`quota must be a positive finite number, got ${quota}`);
  if (!(windowSeconds > 0 && windowSeconds < Infinity)) throw new RangeError(`windowSeconds must be positive, got ${windowSeconds}`);
  const name = sfString(policyName);
  const remaining = Math.max(0, Math.min(quota, Math.floor(d.remaining)));
  const refillMs = ((quota - remaining) * windowSeconds * 1000) / quota;
  const waitMs = !d.allowed && d.retryAfterMs < Infinity ? d.retryAfterMs : 0;
  const headers: Record<string, string> = {
    'RateLimit-Policy': policy(name, quota, windowSeconds),
    RateLimit: `${name};r=${remaining};t=${secondsUp(Math.max(refillMs, waitMs))}`,
  };
  if (waitMs > 0) headers['Retry-After'] = retryAfterSeconds(waitMs);
  return headers;
}

function policy(name: string, quota: number, windowSeconds: number): string {
  const w = Math.max(1, Math.ceil(windowSeconds - 1e-9));
  // The epsilon keeps 10 / (10/3) · 4 = 11.999… from flooring to 11.
  const q = Math.max(1, Math.floor((quota * w) / windowSeconds + 1e-9));
  return `${name};q=${q};w=${w}`;
}

/** Ceil to whole seconds, capped to what a structured-field Integer can carry (15 digits). */
function secondsUp(ms: number): number {
  if (!(ms > 0)) return 0;
  return Math.min(999_999_999_999_999, Math.ceil(ms / 1000));
}

/** A structured-field String (RFC 9651 §3.3.3): printable ASCII, with `"` and `\` escaped. */
function sfString(s: string): string {
  let cached = SF_CACHE.get(s);
  if (cached !== undefined) return cached;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) throw new RangeError(`policy name must be printable ASCII: ${JSON.stringify(s)}`);
  }
  cached = `"${s.replace(/[\\"]/g, '\\$&')}"`;
  if (SF_CACHE.size < 256) SF_CACHE.set(s, cached); // policy names are few; never let a caller grow it unbounded
  return cached;
}
const SF_CACHE = new Map<string, string>();
