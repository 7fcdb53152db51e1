import { randomUUID } from 'node:crypto';
import { systemClock, type BeginResult, type Clock, type IdempotencyStore, type StoredResponse } from './types.js';

interface Entry {
  fingerprint: string;
  /** Set while executing; cleared once completed. */
  token: string | undefined;
  response: StoredResponse | undefined;
  /** Lease end while executing, TTL end once completed. */
  expiresAt: number;
}

/** Entries examined per `begin` when sweeping: bounded so one call never pays for a backlog. */
const SWEEP_PER_CALL = 8;

/**
 * Keys in this process only: for a single instance, or tests. A service with several instances needs a shared
 * store (Redis, PostgreSQL, SQLite on one host), or duplicates landing on different instances both execute.
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  private readonly entries = new Map<string, Entry>();
  private readonly clock: Clock;

  constructor(options: { clock?: Clock } = {}) {
    this.clock = options.clock ?? systemClock;
  }

  /** Records held, expired ones included until a sweep or a lookup drops them. */
  get size(): number {
    return this.entries.size;
  }

  begin(key: string, fingerprint: string, leaseMs: number): Promise<BeginResult> {
    const now = this.clock.now();
    this.sweep(now);
    const e = this.entries.get(key);
    if (e !== undefined && e.expiresAt > now) {
      if (e.fingerprint !== fingerprint) return Promise.resolve({ kind: 'mismatch' });
      if (e.response !== undefined) return Promise.resolve({ kind: 'replay', response: e.response });
      return Promise.resolve({ kind: 'inFlight' });
    }
    const token = randomUUID();
    this.entries.delete(key);
    this.entries.set(key, { fingerprint, token, response: undefined, expiresAt: now + leaseMs });
    return Promise.resolve({ kind: 'execute', token });
  }

  complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<void> {
    const e = this.entries.get(key);
    if (e !== undefined && e.token === token) {
      // Re-inserting keeps the map roughly in expiry order, which is what lets the sweep stop early.
      this.entries.delete(key);
      this.entries.set(key, { fingerprint: e.fingerprint, token: undefined, response, expiresAt: this.clock.now() + ttlMs });
    }
    return Promise.resolve();
  }

  abandon(key: string, token: string): Promise<void> {
    if (this.entries.get(key)?.token === token) this.entries.delete(key);
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.entries.clear();
    return Promise.resolve();
  }

  /** Drops expired entries from the oldest end; with one TTL for all keys insertion order is expiry order. */
  private sweep(now: number): void {
    let n = 0;
    for (const [key, e] of this.entries) {
      if (e.expiresAt > now || ++n > SWEEP_PER_CALL) return;
      this.entries.delete(key);
    }
  }
}
