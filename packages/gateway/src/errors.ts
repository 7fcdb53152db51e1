import type { ServerResponse } from 'node:http';
import { PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE } from '@plinth/core';

/**
 * Stable codes of the gateway's own answers (the `code` member of the problem document and the `reason`
 * of the access log). Failures of the upstream call keep the engine's CallError codes (`no_endpoint`,
 * `lane_unavailable`, `circuit_open`, `bulkhead_full`, `deadline_exceeded`, `upstream_error`), and refusals
 * of the inbound policies the pipeline's (`rate_limited`, `concurrency_limited`, `overloaded`, `fault_injected`).
 */
export const GatewayCodes = {
  /** 404: no Route matches host, method, path and headers. */
  routeNotFound: 'route_not_found',
  /** 401: no credential, or one that does not verify. */
  unauthenticated: 'unauthenticated',
  /** 403: verified, but lacking a role the route requires. */
  forbidden: 'forbidden',
  /** 503: the JWKS or the key exchange cannot be reached and nothing is cached. */
  authUnavailable: 'auth_unavailable',
  /** 413: the request body is larger than the route's maxBodyBytes. */
  bodyTooLarge: 'body_too_large',
  /** 400: a request target or body the gateway cannot forward. */
  badRequest: 'bad_request',
  /** 431: request headers over the limit. */
  headersTooLarge: 'headers_too_large',
  /** 403: a client address the route's clientIps do not admit. */
  ipForbidden: 'ip_forbidden',
  /** 403: a CORS preflight from an origin or for a method the route does not allow. */
  corsRejected: 'cors_rejected',
  /** 405: a CONNECT tunnel (only WebSockets are opened by CONNECT, over HTTP/2). */
  methodNotAllowed: 'method_not_allowed',
  /** 501: an extended CONNECT for a protocol other than WebSocket. */
  notImplemented: 'not_implemented',
  /** 503: the gateway is shutting down. */
  unavailable: 'unavailable',
  /** 500: a bug. */
  internal: 'internal',
} as const;
export type GatewayCode = (typeof GatewayCodes)[keyof typeof GatewayCodes];

const TITLES: Record<string, string> = {
  route_not_found: 'No route',
  unauthenticated: 'Unauthenticated',
  forbidden: 'Forbidden',
  ip_forbidden: 'Client address not allowed',
  auth_unavailable: 'Authentication unavailable',
  body_too_large: 'Request body too large',
  bad_request: 'Bad request',
  headers_too_large: 'Request header fields too large',
  cors_rejected: 'CORS request rejected',
  method_not_allowed: 'Method not allowed',
  not_implemented: 'Not implemented',
  unavailable: 'Unavailable',
  internal: 'Internal error',
  no_endpoint: 'No upstream instance',
  lane_unavailable: 'Lane unavailable',
  circuit_open: 'Circuit open',
  bulkhead_full: 'Upstream concurrency limit reached',
  deadline_exceeded: 'Upstream timed out',
  upstream_error: 'Bad gateway',
};

/** An RFC 9457 problem document with Plinth's `code` extension. */
/** An upstream's status HTTP does not have (RFC 9110 §15: three digits, 100 to 599), as the try's failure. */
export function noSuchStatus(status: number | undefined): Error {
  return new Error(`it answered with status ${status}, which HTTP does not have`);
}

export function problemBody(code: string, status: number, detail: string): string {
  return JSON.stringify({ type: PROBLEM_TYPE_BASE + code, title: TITLES[code] ?? 'Error', status, detail, code });
}

/** Writes a problem answer on a response that has not started; one that has is cut off instead. */
export function sendProblem(res: ServerResponse, status: number, code: string, detail: string, headers?: Record<string, string>): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = problemBody(code, status, detail);
  res.statusCode = status;
  if (headers !== undefined) for (const k in headers) res.setHeader(k, headers[k]!);
  res.setHeader('content-type', PROBLEM_CONTENT_TYPE);
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}

/** A raw answer for a socket node's parser gave up on (no ServerResponse exists). */
export function rawProblem(status: 400 | 405 | 408 | 431, code: string): string {
  const reason = status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : status === 405 ? 'Method Not Allowed' : 'Bad Request';
  const body = problemBody(code, status, reason);
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: ${PROBLEM_CONTENT_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}
