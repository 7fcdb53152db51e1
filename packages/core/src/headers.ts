/** Header names on Plinth's wire. Standards first (W3C, IETF); Plinth's own are few. */
export const Headers = {
  traceparent: 'traceparent',
  tracestate: 'tracestate',
  baggage: 'baggage',
  /** Remaining time budget in milliseconds, shrunk at each hop. */
  timeout: 'plinth-timeout-ms',
  /** gRPC's own time budget (`5S`, `250m`): taken as the deadline when `plinth-timeout-ms` is absent, rewritten at each hop. */
  grpcTimeout: 'grpc-timeout',
  /** The calling service's registered name, set by the SDK client on every outbound call. */
  caller: 'plinth-caller',
  idempotencyKey: 'idempotency-key',
  ifMatch: 'if-match',
  /** Outcome of a PUT: created, updated or unchanged. */
  result: 'plinth-result',
  revision: 'plinth-revision',
} as const;

export const BaggageKeys = {
  lane: 'plinth.lane',
  stress: 'plinth.stress',
  userId: 'user.id',
  region: 'region',
} as const;

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';
