import { PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, type FallbackAction } from '@plinth/core';
import { CONCURRENCY_LIMITED, OVERLOADED, RATE_LIMITED } from '../ratelimit/errors.js';

/**
 * Stable codes of inbound refusals. Tests and dashboards match on these (the `reason` label of
 * `plinth_inbound_rejections_total`, the `code` member of the problem document), never on message text.
 */
export const InboundCodes = {
  /** 429: a rateLimit strategy (local bucket or cluster quota) refused the request. */
  rateLimited: RATE_LIMITED,
  /** 429: an inbound concurrencyLimit is full (and its queue, if any, too). */
  concurrencyLimited: CONCURRENCY_LIMITED,
  /** 503: adaptiveOverload shed the request. */
  overloaded: OVERLOADED,
  /** A FaultInjection abort, with the experiment's status. */
  faultInjected: 'fault_injected',
} as const;
export type InboundCode = (typeof InboundCodes)[keyof typeof InboundCodes];

/** docs/governance.md: 429 for rate and concurrency limits, 503 for adaptive overload. */
export const INBOUND_STATUS: Readonly<Record<Exclude<InboundCode, 'fault_injected'>, number>> = {
  rate_limited: 429,
  concurrency_limited: 429,
  overloaded: 503,
};

const TITLES: Readonly<Record<InboundCode, string>> = {
  rate_limited: 'Too many requests',
  concurrency_limited: 'Too many concurrent requests',
  overloaded: 'Service overloaded',
  fault_injected: 'Injected fault',
};

export interface Rejection {
  readonly ok: false;
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly contentType: string;
  readonly code: InboundCode;
}

/** An RFC 9457 problem document with Plinth's `code` extension, naming the rule that refused. */
export function problemRejection(code: InboundCode, status: number, detail: string, headers: Record<string, string> = {}): Rejection {
  const body = JSON.stringify({ type: PROBLEM_TYPE_BASE + code, title: TITLES[code], status, detail, code });
  return { ok: false, status, headers, body, contentType: PROBLEM_CONTENT_TYPE, code };
}

/**
 * The rule's static answer. It is served as configured: the operator chose these headers, so Plinth adds
 * no Retry-After of its own (a fallback may well be a 200 with cached content).
 */
export function fallbackRejection(code: InboundCode, f: FallbackAction): Rejection {
  return {
    ok: false,
    status: f.statusCode,
    headers: { ...(f.headers ?? {}) },
    body: f.body ?? '',
    contentType: f.contentType ?? 'text/plain; charset=utf-8',
    code,
  };
}
