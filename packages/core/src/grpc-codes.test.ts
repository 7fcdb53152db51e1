import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { httpStatusOfGrpc, isGrpcServerError } from './grpc-codes.js';

describe('gRPC codes', () => {
  it('stand for the HTTP statuses breakers and retry rules judge by', () => {
    // OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, UNAVAILABLE, UNAUTHENTICATED
    const pairs: [number, number][] = [[0, 200], [1, 499], [3, 400], [4, 504], [5, 404], [7, 403], [8, 429], [12, 501], [14, 503], [16, 401]];
    for (const [code, http] of pairs) assert.equal(httpStatusOfGrpc(code), http, `code ${code}`);
    assert.equal(httpStatusOfGrpc(99), 500, 'an unknown code is a server failure');
    // The server's own failures are 5xx, the caller's doing is not.
    for (let code = 0; code <= 16; code++) assert.equal(httpStatusOfGrpc(code) >= 500, isGrpcServerError(code), `code ${code}`);
  });
});
