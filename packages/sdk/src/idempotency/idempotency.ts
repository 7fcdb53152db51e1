import { defaultLogger, errorMessage, type Logger } from '../logger.js';
import { problemResponse } from './errors.js';
import { requestFingerprint } from './fingerprint.js';
import { asReplay, storableHeaders } from './headers.js';
import { parseIdempotencyKey } from './key.js';
import type { IdempotencyStore, StoredResponse } from './types.js';

export const DEFAULT_TTL_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_LEASE_MS = 60_000;
export const DEFAULT_WAIT_MS = 10_000;
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
export const DEFAULT_METHODS: readonly string[] = ['POST', 'PATCH'];

export interface IdempotencyOptions<Req = unknown> {
  store: IdempotencyStore;
  /** How long a completed response is replayed (the draft asks servers to publish this). Default 24 h. */
  ttlMs?: number;
  /**
   * How long an execution owns its key before a duplicate may take over, so a crashed executor does not hold it
   * forever. Must exceed the slowest handler: the lease is not renewed. Default 60 s.
   */
  leaseMs?: number;
  /** A duplicate of a request still executing: wait for its response (default) or get 409 at once. */
  concurrent?: 'wait' | 'reject';
  /** Longest a duplicate waits before it gets 409 instead. Default 10 s. */
  waitMs?: number;
  /** Replay 4xx answers too (default true). 5xx answers and handler failures are never stored. */
  storeClientErrors?: boolean;
  /** Methods the key applies to; others pass through untouched. Default POST and PATCH (RFC 9110's non-idempotent ones). */
  methods?: readonly string[];
  /**
   * Whose key it is: the caller's identity or tenant. Two callers sending the same key then never see each
   * other's responses (the draft's security section asks for such a composite key). `undefined` = one global space.
   */
  scope?: (req: Req) => string | undefined;
  /** Largest body the bindings buffer to fingerprint; above it they answer 413. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Where store failures that happen after the response went out are reported. */
  logger?: Logger;
}

/** What the transport should do with a request that carries a key. */
export type Decision =
  /** Send this (a replay, marked as such, or a problem document) and do not run the handler. */
  | { kind: 'respond'; response: StoredResponse }
  /** Run the handler, capture what it sends and hand it to `execution.finish`. */
  | { kind: 'execute'; execution: Execution };

/** What a binding captured from the handler; headers as the transport holds them, cleaned before storing. */
export interface CapturedResponse {
  status: number;
  headers: Readonly<Record<string, string | string[] | number | undefined>>;
  body: Buffer;
}

export interface Execution {
  /**
   * Stores `response` for replays, or releases the key when it is `undefined` (the handler failed or the client
   * went away before an answer was formed), a 5xx, or a 4xx with `storeClientErrors` off. Only the first call
   * counts. Never rejects: store failures go to the logger, since the client already has its answer.
   */
  finish(response: CapturedResponse | undefined): Promise<void>;
}

/** A request as the transport-independent core needs it. */
export interface IdempotentRequest {
  method: string;
  /** Path and query; the host is left out so a request through another name is still the same request. */
  target: string;
  /** The raw `Idempotency-Key` field value. */
  key: string;
  body: Uint8Array;
}

const POLL_FIRST_MS = 20;
const POLL_MAX_MS = 250;

/**
 * Idempotency for writes, after draft-ietf-httpapi-idempotency-key-header and Stripe's practice: a request with
 * an `Idempotency-Key` runs once; a retry of it gets the stored response; a retry while it still runs waits or
 * gets 409; the key reused for a different request gets 422. Bindings (node, express, fastify, hono) wrap this.
 */
export class Idempotency<Req = unknown> {
  readonly maxBodyBytes: number;
  readonly logger: Logger;
  private readonly store: IdempotencyStore;
  private readonly ttlMs: number;
  private readonly leaseMs: number;
  private readonly reject: boolean;
  private readonly waitMs: number;
  private readonly storeClientErrors: boolean;
  private readonly methods: ReadonlySet<string>;
  private readonly scope: ((req: Req) => string | undefined) | undefined;
  /** Executions running in this process, so local duplicates wake when they finish instead of polling the store. */
  private readonly running = new Map<string, Promise<void>>();

  constructor(options: IdempotencyOptions<Req>) {
    this.store = options.store;
    this.ttlMs = positive(options.ttlMs ?? DEFAULT_TTL_MS, 'ttlMs');
    this.leaseMs = positive(options.leaseMs ?? DEFAULT_LEASE_MS, 'leaseMs');
    this.reject = (options.concurrent ?? 'wait') === 'reject';
    this.waitMs = nonNegative(options.waitMs ?? DEFAULT_WAIT_MS, 'waitMs');
    this.storeClientErrors = options.storeClientErrors ?? true;
    this.methods = new Set((options.methods ?? DEFAULT_METHODS).map((m) => m.toUpperCase()));
    this.scope = options.scope;
    this.maxBodyBytes = positive(options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES, 'maxBodyBytes');
    this.logger = options.logger ?? defaultLogger;
  }

  /**
   * The key field's value when this request is subject to idempotency, `undefined` when it passes through
   * untouched (another method, or no key). A cheap check bindings make before buffering any body.
   */
  keyOf(method: string | undefined, header: string | string[] | undefined): string | undefined {
    if (header === undefined || method === undefined || !this.methods.has(method.toUpperCase())) return undefined;
    // Node joins repeated fields with ", "; frameworks may hand a list. Either way the draft allows only one.
    return Array.isArray(header) ? header.join(', ') : header;
  }

  async begin(req: Req, request: IdempotentRequest): Promise<Decision> {
    const key = parseIdempotencyKey(request.key);
    if (key === undefined) {
      return respond(problemResponse('KEY_INVALID', 'An Idempotency-Key is 1 to 255 printable ASCII characters, bare or as a quoted sf-string.'));
    }
    const scope = this.scope?.(req);
    // Keys hold no control characters, so the last newline splits a scoped key unambiguously.
    const storeKey = scope === undefined ? key : `${scope}\n${key}`;
    const fingerprint = requestFingerprint(request.method, request.target, request.body);
    const deadline = this.reject ? 0 : Date.now() + this.waitMs;
    let pollMs = POLL_FIRST_MS;
    for (;;) {
      let r;
      try {
        r = await this.store.begin(storeKey, fingerprint, this.leaseMs);
      } catch (err) {
        this.logger.warn('idempotency store failed; refusing the request rather than risking a second execution', { error: errorMessage(err) });
        return respond(problemResponse('UNAVAILABLE', 'The idempotency store could not be reached; nothing was executed.', { 'retry-after': '1' }));
      }
      switch (r.kind) {
        case 'execute':
          return { kind: 'execute', execution: this.execution(storeKey, r.token) };
        case 'replay':
          return respond(asReplay(r.response));
        case 'mismatch':
          return respond(problemResponse('KEY_REUSED', 'This Idempotency-Key was already used for a request with another method, path or body.'));
        case 'inFlight': {
          const left = deadline - Date.now();
          if (left <= 0) {
            return respond(problemResponse('KEY_IN_USE', 'A request with this Idempotency-Key is still being processed; retry it later.', { 'retry-after': '1' }));
          }
          // Only duplicates reach this point, so a timer here is off the hot path.
          const local = this.running.get(storeKey);
          await pause(local, local ? left : Math.min(left, pollMs));
          pollMs = Math.min(pollMs * 2, POLL_MAX_MS);
        }
      }
    }
  }

  private execution(storeKey: string, token: string): Execution {
    let release!: () => void;
    const done = new Promise<void>((resolve) => (release = resolve));
    this.running.set(storeKey, done);
    let finished: Promise<void> | undefined;
    return {
      finish: (response) => {
        finished ??= this.settle(storeKey, token, response).finally(() => {
          if (this.running.get(storeKey) === done) this.running.delete(storeKey);
          release();
        });
        return finished;
      },
    };
  }

  private async settle(storeKey: string, token: string, response: CapturedResponse | undefined): Promise<void> {
    try {
      if (response !== undefined && this.storable(response.status)) {
        await this.store.complete(storeKey, token, { status: response.status, headers: storableHeaders(response.headers), body: response.body }, this.ttlMs);
      } else {
        await this.store.abandon(storeKey, token);
      }
    } catch (err) {
      // The client has its answer; the key stays claimed until the lease lapses, then a retry may run again.
      this.logger.warn('idempotency store failed to record an execution', { error: errorMessage(err) });
    }
  }

  private storable(status: number): boolean {
    return status < 400 || (status < 500 && this.storeClientErrors);
  }
}

function respond(response: StoredResponse): Decision {
  return { kind: 'respond', response };
}

function pause(until: Promise<void> | undefined, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    void until?.then(() => {
      clearTimeout(t);
      resolve();
    });
  });
}

function positive(v: number, name: string): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new RangeError(`${name} must be a positive number of milliseconds or bytes, got ${v}`);
  return v;
}

function nonNegative(v: number, name: string): number {
  if (!(v >= 0) || !Number.isFinite(v)) throw new RangeError(`${name} must be zero or more, got ${v}`);
  return v;
}
