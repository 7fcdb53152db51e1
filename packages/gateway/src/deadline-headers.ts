import { Headers } from '@plinth/core';
import { formatGrpcTimeout, formatTimeout } from '@plinth/sdk/resilience';

/**
 * `headers` and the budget left, as plinth-timeout-ms and, for a gRPC client's request, grpc-timeout, with
 * the try's own `traceparent` when it has one: one copy of the request's header list per try.
 */
export function deadlineHeaders(headers: string[], grpc: boolean, remaining: number, traceparent?: string): string[] {
  const left = Math.max(0, remaining);
  const out = grpc ? headers.concat(Headers.timeout, formatTimeout(left), Headers.grpcTimeout, formatGrpcTimeout(left)) : headers.concat(Headers.timeout, formatTimeout(left));
  if (traceparent !== undefined) out.push(Headers.traceparent, traceparent);
  return out;
}
