/**
 * Errors of an outbound call. Match on `code`: the message is for humans. `status` is the HTTP status a
 * gateway or an inbound handler would answer with when it passes the failure on.
 */
export type CallErrorCode = 'no_endpoint' | 'circuit_open' | 'deadline_exceeded' | 'bulkhead_full' | 'upstream_error' | 'lane_unavailable';

const STATUS: Record<CallErrorCode, number> = {
  no_endpoint: 503,
  circuit_open: 503,
  deadline_exceeded: 504,
  bulkhead_full: 503,
  upstream_error: 502,
  lane_unavailable: 503,
};

export class CallError extends Error {
  readonly code: CallErrorCode;
  readonly status: number;
  /** When a retry can be worth it (an open breaker's remaining open time). */
  readonly retryAfterMs: number | undefined;
  /** The callee the call was for. */
  readonly service: string;

  constructor(code: CallErrorCode, service: string, message: string, options: { retryAfterMs?: number | undefined; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CallError';
    this.code = code;
    this.status = STATUS[code];
    this.service = service;
    this.retryAfterMs = options.retryAfterMs;
  }
}

export function isCallError(e: unknown, code?: CallErrorCode): e is CallError {
  return e instanceof CallError && (code === undefined || e.code === code);
}
