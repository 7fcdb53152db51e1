import { Headers } from '@plinth/core';
import { formatGrpcTimeout, formatTimeout } from '@plinth/sdk/resilience';

/** `headers` and the budget left, as plinth-timeout-ms and, for a gRPC client's request, grpc-timeout. */
export function deadlineHeaders(headers: string[], grpc: boolean, remaining: number): string[] {
  const left = Math.max(0, remaining);
  return grpc ? headers.concat(Headers.timeout, formatTimeout(left), Headers.grpcTimeout, formatGrpcTimeout(left)) : headers.concat(Headers.timeout, formatTimeout(left));
}
