import type { IncomingHttpHeaders } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import type { EndpointSet } from '../balancing/endpoints.js';
import type { Clock } from '../ratelimit/clock.js';
import type { Expirable } from '../resilience/timer-wheel.js';
import type { TryContext, TryOutcome, Wheel } from './engine.js';

/** One HTTP exchange, fully buffered: what the client hands back. */
export interface HttpResult {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

export interface HttpTryRequest {
  readonly method: string;
  /** Path and query. */
  readonly path: string;
  /** Flat name/value pairs, sent on every try. */
  readonly headers: readonly string[];
  readonly body: string | Uint8Array | undefined;
  /** Per-try headers (traceparent, remaining budget), appended to `headers`. */
  tryHeaders(t: TryContext): readonly string[];
}

export interface HttpTransportOptions {
  connectionsPerEndpoint: number;
  dispatcherFactory: ((origin: string) => Dispatcher) | undefined;
  wheel: Wheel;
  clock: Clock;
}

/** Raised into undici by the wheel when a try runs out of time; recognised by identity. */
class TryTimeoutError extends Error {
  constructor() {
    super('outbound try timed out');
    this.name = 'TryTimeoutError';
  }
}
const TRY_TIMEOUT = new TryTimeoutError();

type Resolve = (o: TryOutcome<HttpResult>) => void;

/**
 * undici's handler API for one try. The per-try deadline lives in the shared timer wheel, which calls
 * `onExpire` and aborts through the controller: no setTimeout, no AbortController per call. A try that
 * expires while still queued in the pool (no controller yet) is answered at once and aborted the moment
 * undici starts it, so a stuck pool cannot hold a caller past its deadline.
 */
class TryHandler implements Dispatcher.DispatchHandler, Expirable {
  private controller: Dispatcher.DispatchController | undefined;
  private status = 0;
  private headers: IncomingHttpHeaders | undefined;
  private chunks: Buffer[] = [];
  private settled = false;
  private expired = false;
  token = -1;

  constructor(
    private readonly resolve: Resolve,
    private readonly wheel: Wheel,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.expired) controller.abort(TRY_TIMEOUT);
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.status = statusCode;
    this.headers = headers;
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk);
  }

  onResponseEnd(): void {
    if (this.settled) return;
    this.settle();
    const h = (this.headers ?? {}) as Record<string, string | string[]>;
    const ra = h['retry-after'];
    const body = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    this.resolve({
      status: this.status,
      retryAfter: typeof ra === 'string' ? ra : undefined,
      response: { status: this.status, headers: h, body },
      error: undefined,
      timedOut: false,
    });
  }

  onResponseError(_c: Dispatcher.DispatchController, error: Error): void {
    this.fail(error);
  }

  fail(error: Error): void {
    if (this.settled) return;
    this.settle();
    this.resolve({ status: 0, retryAfter: undefined, response: undefined, error, timedOut: this.expired || error === TRY_TIMEOUT });
  }

  onExpire(): void {
    if (this.settled) return;
    this.expired = true;
    this.token = -1;
    if (this.controller !== undefined) {
      this.controller.abort(TRY_TIMEOUT);
      return;
    }
    this.settled = true;
    this.resolve({ status: 0, retryAfter: undefined, response: undefined, error: TRY_TIMEOUT, timedOut: true });
  }

  private settle(): void {
    this.settled = true;
    if (this.token >= 0) {
      this.wheel.remove(this.token, this);
      this.token = -1;
    }
  }
}

function originOf(address: string): string {
  if (address.includes('://')) return new URL(address).origin;
  return `http://${address}`;
}

/**
 * The thin HTTP part: one undici Pool per endpoint address (pipelining 1), kept while some callee lists the
 * address and closed (gracefully: in-flight requests finish) when the last one drops it.
 */
export class HttpTransport {
  private readonly pools = new Map<string, { dispatcher: Dispatcher; users: Set<string> }>();
  private closed = false;

  constructor(private readonly o: HttpTransportOptions) {}

  send(t: TryContext, req: HttpTryRequest): Promise<TryOutcome<HttpResult>> {
    const dispatcher = this.dispatcherFor(t.service, t.endpoint.address);
    return new Promise<TryOutcome<HttpResult>>((resolve) => {
      const handler = new TryHandler(resolve, this.o.wheel);
      if (t.deadlineAt !== undefined) handler.token = this.o.wheel.add(t.deadlineAt, handler);
      const extra = req.tryHeaders(t);
      const headers = extra.length === 0 ? (req.headers as string[]) : req.headers.concat(extra);
      try {
        dispatcher.dispatch(
          {
            path: req.path,
            method: req.method as Dispatcher.HttpMethod,
            headers,
            body: req.body ?? null,
            // The engine decides about retries; undici must not replay a request on its own.
            idempotent: false,
          },
          handler,
        );
      } catch (error) {
        handler.fail(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  private dispatcherFor(service: string, address: string): Dispatcher {
    let p = this.pools.get(address);
    if (p === undefined) {
      if (this.closed) throw new Error('client closed');
      const origin = originOf(address);
      const dispatcher = this.o.dispatcherFactory?.(origin) ?? new Pool(origin, { connections: this.o.connectionsPerEndpoint, pipelining: 1 });
      this.pools.set(address, (p = { dispatcher, users: new Set() }));
    }
    p.users.add(service);
    return p.dispatcher;
  }

  /** A callee's endpoints changed: pools of addresses no callee uses any more are closed. */
  endpointsChanged(service: string, prev: EndpointSet, next: EndpointSet): void {
    const still = new Set<string>();
    for (const ep of next.all.items) still.add(ep.address);
    for (const ep of prev.all.items) {
      if (still.has(ep.address)) continue;
      const p = this.pools.get(ep.address);
      if (p === undefined) continue;
      p.users.delete(service);
      if (p.users.size === 0) {
        this.pools.delete(ep.address);
        p.dispatcher.close().catch(() => undefined);
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map((p) => p.dispatcher.close().catch(() => undefined)));
  }
}
