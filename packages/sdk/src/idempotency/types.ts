/**
 * What a store keeps for a completed request and hands back on a replay. Headers are already stripped of
 * hop-by-hop fields; a repeated field (set-cookie) stays a list because it cannot be comma-joined.
 */
export interface StoredResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
}

/** The outcome of claiming a key, as a discriminated union so every caller handles every case. */
export type BeginResult =
  /** The key is yours until the lease lapses: call `complete` or `abandon` with the token. */
  | { kind: 'execute'; token: string }
  /** The same request already completed; here is its response. */
  | { kind: 'replay'; response: StoredResponse }
  /** The same request is executing elsewhere and its lease has not lapsed. */
  | { kind: 'inFlight' }
  /** The key belongs to a different request (another method, path or body). */
  | { kind: 'mismatch' };

/**
 * Where keys live. `begin` must be atomic: of N racing calls for one free key exactly one gets `execute`.
 * A key is free when it has no record, when its completed record outlived its TTL, or when its execution
 * lease lapsed (a crashed executor must not hold a key forever). `complete` and `abandon` act only while
 * the token still owns the key, so an executor whose lease was taken over cannot overwrite the new owner.
 */
export interface IdempotencyStore {
  begin(key: string, fingerprint: string, leaseMs: number): Promise<BeginResult>;
  complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<void>;
  abandon(key: string, token: string): Promise<void>;
  close?(): Promise<void>;
}

/** Milliseconds since the epoch; structurally the same as the rate limiters' `Clock`, so one object serves both. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
