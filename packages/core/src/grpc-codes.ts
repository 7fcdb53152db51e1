/**
 * gRPC status codes that change how a call is counted. A gRPC call answers HTTP 200 whatever its outcome,
 * so the SDK, the gateway and the server read its code (`rpc.grpc.status_code` on spans) to tell failures
 * and rejections apart, the way they read 5xx, 429 and 503 for HTTP.
 */
export const GRPC_RESOURCE_EXHAUSTED = 8;
export const GRPC_UNAVAILABLE = 14;

/** A code's HTTP equivalent, as Envoy maps them (grpc/doc/http-grpc-status-mapping.md read backwards). */
const HTTP_OF_GRPC = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];

/**
 * The HTTP status a gRPC outcome stands for: what breakers, outlier ejection and retry rules, which speak
 * HTTP statuses, judge a gRPC answer by (HTTP 200 whatever its code). Unknown codes are 500.
 */
export function httpStatusOfGrpc(code: number): number {
  return HTTP_OF_GRPC[code] ?? 500;
}

/**
 * The codes that are the server's own failure, as OpenTelemetry's RPC conventions list them for server
 * spans: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. The others (NOT_FOUND,
 * INVALID_ARGUMENT, PERMISSION_DENIED, ...) are the caller's doing, as a 4xx is.
 */
export function isGrpcServerError(code: number): boolean {
  return code === 2 || code === 4 || code === 12 || code === 13 || code === GRPC_UNAVAILABLE || code === 15;
}
