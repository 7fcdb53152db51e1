/**
 * The gateway's own refusals as gRPC statuses, for requests from gRPC clients: HTTP 200 with the status in
 * trailers, as a gRPC server answers, so a client reads `UNAUTHENTICATED` or `RESOURCE_EXHAUSTED` instead of
 * a code guessed from the HTTP status.
 */
import type { IncomingMessage } from 'node:http';
import { GRPC_RESOURCE_EXHAUSTED, GRPC_UNAVAILABLE } from '@plinth/core';
import { isHttp2Response } from './http2.js';

/** gRPC status codes (grpc/doc/statuscodes.md) the gateway answers with. */
export const GrpcStatus = {
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: GRPC_RESOURCE_EXHAUSTED,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: GRPC_UNAVAILABLE,
  UNAUTHENTICATED: 16,
} as const;

/** A `grpc-status` value as its code; one that is not a number is UNKNOWN, as gRPC clients read it. */
export function grpcCodeOf(v: string | string[] | undefined): number | undefined {
  if (v === undefined) return undefined;
  return typeof v === 'string' && /^\d{1,4}$/.test(v) ? Number(v) : GrpcStatus.UNKNOWN;
}

/** By the gateway's (and the engine's and the pipeline's) stable codes; others go by HTTP status. */
const BY_CODE: Record<string, number> = {
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  forbidden: GrpcStatus.PERMISSION_DENIED,
  ip_forbidden: GrpcStatus.PERMISSION_DENIED,
  route_not_found: GrpcStatus.UNIMPLEMENTED,
  body_too_large: GrpcStatus.RESOURCE_EXHAUSTED,
  // Quotas and limits: the caller should slow down, not retry at once (UNAVAILABLE invites retries).
  rate_limited: GrpcStatus.RESOURCE_EXHAUSTED,
  concurrency_limited: GrpcStatus.RESOURCE_EXHAUSTED,
  bulkhead_full: GrpcStatus.RESOURCE_EXHAUSTED,
  deadline_exceeded: GrpcStatus.DEADLINE_EXCEEDED,
  internal: GrpcStatus.INTERNAL,
  bad_request: GrpcStatus.INTERNAL,
};

/** gRPC's mapping of HTTP statuses (grpc/doc/http-grpc-status-mapping.md), for the rest. */
function byHttpStatus(status: number): number {
  switch (status) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return status >= 500 ? GrpcStatus.INTERNAL : GrpcStatus.UNKNOWN;
  }
}

export function grpcStatusOf(httpStatus: number, code: string | undefined): number {
  return (code !== undefined ? BY_CODE[code] : undefined) ?? byHttpStatus(httpStatus);
}

/**
 * A request from a gRPC client, answered over HTTP/2 (where trailers can carry the status). gRPC-Web
 * (`application/grpc-web…`) is another framing and keeps the HTTP answer.
 */
export function isGrpcRequest(req: IncomingMessage, res: object): boolean {
  const ct = req.headers['content-type'];
  return typeof ct === 'string' && ct.startsWith('application/grpc') && !ct.startsWith('application/grpc-web') && isHttp2Response(res);
}

/** `grpc-message`: printable ASCII but `%` as is, everything else as percent-encoded UTF-8 bytes. */
export function grpcMessage(text: string): string {
  let plain = true;
  for (let i = 0; i < text.length && plain; i++) {
    const c = text.charCodeAt(i);
    plain = c >= 0x20 && c <= 0x7e && c !== 0x25;
  }
  if (plain) return text;
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}
