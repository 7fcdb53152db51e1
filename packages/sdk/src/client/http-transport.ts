import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';
import type { EndpointSet } from '../balancing/endpoints.js';
import type { Clock } from '../ratelimit/clock.js';
import type { Expirable } from '../resilience/timer-wheel.js';
import type { TryContext, TryOutcome, TryReceiver, Wheel } from './engine.js';
import { EndpointPools, type UpstreamProtocol } from './pools.js';

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

/** What `dispatchTry` reads of a request: the ServiceClient's per-call object, which is its OutboundCall too. */
export interface HttpTrySource {
  readonly method: string;
  /** Path and query. */
  readonly target: string;
  readonly body: string | Uint8Array | undefined;
  /** Every header of the try (per-call and per-try ones) as flat name/value pairs, in a list of its own. */
  headersFor(t: TryContext): readonly string[];
}

export interface HttpTransportOptions {
  connectionsPerEndpoint: number;
  dispatcherFactory: ((origin: string, protocol: UpstreamProtocol) => Dispatcher) | undefined;
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

const EMPTY_BODY = Buffer.alloc(0);

/**
 * undici's handler API for one try. The per-try deadline lives in the shared timer wheel, which calls
 * `onExpire` and aborts through the controller: no setTimeout, no AbortController per call. A try that
 * expires while still queued in the pool (no controller yet) is answered at once and aborted the moment
 * undici starts it, so a stuck pool cannot hold a caller past its deadline.
 *
 * It is also the try's outcome and its HttpResult (one object per try instead of three): it reports
 * itself to the receiver once settled. `send` copies it into plain objects for callers who keep them.
 */
class TryHandler implements Dispatcher.DispatchHandler, Expirable, TryOutcome<HttpResult>, HttpResult {
  status = 0;
  headers: Record<string, string | string[]> = NO_HEADERS;
  body: Buffer = EMPTY_BODY;
  error: unknown = undefined;
  timedOut = false;
  token = -1;
  private state = PENDING;
  private controller: Dispatcher.DispatchController | undefined = undefined;
  /** Body chunks after the first (most answers have one, and then no array is allocated). */
  private chunks: Buffer[] | undefined = undefined;

  constructor(
    private readonly receiver: TryReceiver<HttpResult>,
    private readonly wheel: Wheel,
  ) {}

  get response(): HttpResult | undefined {
    return this.state === ANSWERED ? this : undefined;
  }

  get retryAfter(): string | undefined {
    if (this.state !== ANSWERED) return undefined;
    const ra = this.headers['retry-after'];
    return typeof ra === 'string' ? ra : undefined;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // Run out of time while queued in the pool (and already reported as timed out): it must not run now.
    if (this.state === EXPIRED || this.state === FAILED) controller.abort(TRY_TIMEOUT);
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.status = statusCode;
    this.headers = headers as Record<string, string | string[]>;
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.body === EMPTY_BODY) this.body = chunk;
    else (this.chunks ??= [this.body]).push(chunk);
  }

  onResponseEnd(): void {
    if (this.state >= ANSWERED) return;
    this.state = ANSWERED;
    this.unschedule();
    if (this.chunks !== undefined) this.body = Buffer.concat(this.chunks);
    this.receiver.tryDone(this);
  }

  onResponseError(_c: Dispatcher.DispatchController, error: Error): void {
    this.fail(error);
  }

  fail(error: Error): void {
    if (this.state >= ANSWERED) return;
    const expired = this.state === EXPIRED;
    this.state = FAILED;
    this.unschedule();
    this.noResponse(error, expired || error === TRY_TIMEOUT);
  }

  onExpire(): void {
    if (this.state !== PENDING) return;
    this.token = -1;
    if (this.controller !== undefined) {
      // undici answers the abort with onResponseError, which reports the timeout.
      this.state = EXPIRED;
      this.controller.abort(TRY_TIMEOUT);
      return;
    }
    this.state = FAILED;
    this.noResponse(TRY_TIMEOUT, true);
  }

  private noResponse(error: unknown, timedOut: boolean): void {
    this.status = 0;
    this.error = error;
    this.timedOut = timedOut;
    this.receiver.tryDone(this);
  }

  private unschedule(): void {
    if (this.token >= 0) {
      this.wheel.remove(this.token, this);
      this.token = -1;
    }
  }
}

/** A try's handler state: running, run out of time (waiting for undici to confirm the abort), or settled. */
const PENDING = 0;
const EXPIRED = 1;
const ANSWERED = 2;
const FAILED = 3;

const NO_HEADERS: Record<string, string | string[]> = Object.freeze({}) as Record<string, string | string[]>;

/** Resolves `send`'s promise with plain copies: a caller may keep them, and should not keep the handler. */
class PromiseReceiver implements TryReceiver<HttpResult> {
  resolve: (o: TryOutcome<HttpResult>) => void = noop;

  tryDone(o: TryOutcome<HttpResult>): void {
    const r = o.response;
    this.resolve({
      status: o.status,
      retryAfter: o.retryAfter,
      response: r === undefined ? undefined : { status: r.status, headers: r.headers, body: r.body },
      error: o.error,
      timedOut: o.timedOut,
    });
  }
}

const noop = (): void => {};

function errorOutcome(error: unknown): TryOutcome<HttpResult> {
  return { status: 0, retryAfter: undefined, response: undefined, error, timedOut: false };
}

/** The thin HTTP part: tries as undici dispatches, on the pools of EndpointPools. */
export class HttpTransport {
  private readonly pools: EndpointPools;

  constructor(private readonly o: HttpTransportOptions) {
    this.pools = new EndpointPools({ connectionsPerEndpoint: o.connectionsPerEndpoint, dispatcherFactory: o.dispatcherFactory, closedMessage: 'client closed' });
  }

  send(t: TryContext, req: HttpTryRequest): Promise<TryOutcome<HttpResult>> {
    const dispatcher = this.pools.get(t.service, t.endpoint.address, t.endpoint.metadata);
    const receiver = new PromiseReceiver();
    const promise = new Promise<TryOutcome<HttpResult>>((resolve) => (receiver.resolve = resolve));
    let headers: readonly string[];
    try {
      const extra = req.tryHeaders(t);
      headers = extra.length === 0 ? req.headers : req.headers.concat(extra);
    } catch (error) {
      receiver.tryDone(errorOutcome(error));
      return promise;
    }
    this.start(dispatcher, t, req.method, req.path, headers, req.body, receiver);
    return promise;
  }

  /**
   * `send` for the engine's callback mode (`OutboundEngine.dispatch`): reports to `receiver` exactly once,
   * possibly synchronously, and never throws (a closed client, say, is an outcome with status 0). The
   * outcome is the try's handler object itself, not a copy: take what you need from it.
   */
  dispatchTry(t: TryContext, req: HttpTrySource, receiver: TryReceiver<HttpResult>): void {
    let dispatcher: Dispatcher;
    let headers: readonly string[];
    try {
      dispatcher = this.pools.get(t.service, t.endpoint.address, t.endpoint.metadata);
      headers = req.headersFor(t);
    } catch (error) {
      receiver.tryDone(errorOutcome(error));
      return;
    }
    this.start(dispatcher, t, req.method, req.target, headers, req.body, receiver);
  }

  private start(
    dispatcher: Dispatcher,
    t: TryContext,
    method: string,
    path: string,
    headers: readonly string[],
    body: string | Uint8Array | undefined,
    receiver: TryReceiver<HttpResult>,
  ): void {
    const wheel = this.o.wheel;
    const handler = new TryHandler(receiver, wheel);
    try {
      if (t.deadlineAt !== undefined) handler.token = wheel.add(t.deadlineAt, handler, t.sentAt);
      dispatcher.dispatch(
        {
          path,
          method: method as Dispatcher.HttpMethod,
          headers: headers as string[],
          body: body ?? null,
          // The engine decides about retries; undici must not replay a request on its own.
          idempotent: false,
        },
        handler,
      );
    } catch (error) {
      handler.fail(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** A callee's endpoints changed: pools of addresses no callee uses any more are closed. */
  endpointsChanged(service: string, prev: EndpointSet, next: EndpointSet): void {
    this.pools.endpointsChanged(service, prev, next);
  }

  close(): Promise<void> {
    return this.pools.close();
  }
}
