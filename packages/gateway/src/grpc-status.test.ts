import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GrpcStatus, grpcMessage, grpcStatusOf } from './grpc-status.js';

describe('gateway refusals as gRPC statuses', () => {
  it('maps the stable codes first, then the HTTP status as gRPC documents it', () => {
    assert.equal(grpcStatusOf(429, 'rate_limited'), GrpcStatus.RESOURCE_EXHAUSTED);
    assert.equal(grpcStatusOf(504, 'deadline_exceeded'), GrpcStatus.DEADLINE_EXCEEDED);
    assert.equal(grpcStatusOf(401, 'unauthenticated'), GrpcStatus.UNAUTHENTICATED);
    assert.equal(grpcStatusOf(403, 'cors_rejected'), GrpcStatus.PERMISSION_DENIED);
    assert.equal(grpcStatusOf(503, 'circuit_open'), GrpcStatus.UNAVAILABLE);
    assert.equal(grpcStatusOf(429, 'fault_injected'), GrpcStatus.UNAVAILABLE);
    assert.equal(grpcStatusOf(418, undefined), GrpcStatus.UNKNOWN);
    assert.equal(grpcStatusOf(507, undefined), GrpcStatus.INTERNAL);
  });

  it('percent-encodes what grpc-message may not carry, UTF-8 bytes included', () => {
    assert.equal(grpcMessage('no route for POST /a.B/C'), 'no route for POST /a.B/C');
    assert.equal(grpcMessage('100% full'), '100%25 full');
    assert.equal(grpcMessage('línea\nnueva'), 'l%C3%ADnea%0Anueva');
  });
});
