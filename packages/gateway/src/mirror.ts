import type { IncomingHttpHeaders } from 'node:http';
import type { Baggage } from '@plinth/sdk/balancing';
import type { EndpointPools, OutboundCall, OutboundEngine, TryContext, TryOutcome } from '@plinth/sdk/client';
import type { Expirable, TimerWheel } from '@plinth/sdk/resilience';
import type { Dispatcher } from 'undici';
import { deadlineHeaders } from './deadline-headers.js';
import type { GatewayMetrics } from './metrics.js';

/** Copies in flight at once, gateway-wide; past it a copy is skipped rather than queued. */
export const MIRROR_MAX_IN_FLIGHT = 1024;

const MIRROR_TIMEOUT = Object.freeze(new Error('mirrored request timed out'));

export type MirrorOutcome = 'sent' | 'failed' | 'skipped';

/** One request to copy: what the primary sends, with the copy's own baggage (the pressure-test mark on). */
export interface MirrorRequest {
  readonly route: string;
  readonly service: string;
  readonly method: string;
  readonly path: string;
  /** Path and query sent. */
  readonly upPath: string;
  readonly requestHeaders: IncomingHttpHeaders;
  readonly wire: string[];
  readonly body: Buffer | null;
  readonly baggage: Baggage;
  readonly timeoutMs: number | undefined;
  readonly deadlineAt: number | undefined;
}

/**
 * Shadow traffic (a Route's `mirror`): each copy is one call through the gateway's engine to the mirror
 * service (its balancer, breakers, limits and ejections, never retried), its answer read and dropped. The
 * primary never waits for a copy, and a copy never sees the primary's answer. Copies in flight are bounded
 * gateway-wide: a slow or dead mirror costs skipped copies (counted), not the gateway's memory.
 */
export class Mirror {
  private inFlight = 0;

  constructor(
    private readonly engine: OutboundEngine,
    private readonly pools: EndpointPools,
    private readonly wheel: TimerWheel,
    private readonly metrics: GatewayMetrics,
    private readonly maxInFlight = MIRROR_MAX_IN_FLIGHT,
  ) {}

  /** Sends a copy unless too many are in flight; returns at once. */
  copy(r: MirrorRequest): void {
    if (this.inFlight >= this.maxInFlight) return this.metrics.mirrored(r.route, 'skipped');
    this.inFlight++;
    const copy = new MirrorCopy(r, this);
    const call: OutboundCall = {
      method: r.method,
      path: r.path,
      headers: r.requestHeaders as Readonly<Record<string, string>>,
      hasIdempotencyKey: false,
      hashKey: undefined,
      timeoutMs: r.timeoutMs,
      lane: undefined,
      baggage: r.baggage,
      deadlineAt: r.deadlineAt,
      stress: true,
      retryable: false,
    };
    this.engine.callWith(r.service, call, this.sendOf, copy).then(
      () => copy.callSettled(),
      () => copy.callSettled(),
    );
  }

  /** Skipped without an attempt (a body that streams through cannot be sent twice). */
  skip(route: string): void {
    this.metrics.mirrored(route, 'skipped');
  }

  ended(copy: MirrorCopy, answered: boolean): void {
    this.inFlight--;
    this.metrics.mirrored(copy.r.route, answered ? 'sent' : 'failed');
  }

  private readonly sendOf = (t: TryContext, copy: MirrorCopy): Promise<TryOutcome<null>> =>
    new Promise((resolve) => {
      const h = (copy.current = new MirrorTry(copy, resolve, this.wheel));
      let headers = copy.r.wire;
      if (t.deadlineAt !== undefined) {
        h.token = this.wheel.add(t.deadlineAt, h);
        headers = deadlineHeaders(headers, false, t.deadlineAt - this.wheel.clock.now());
      }
      try {
        const dispatcher = this.pools.get(t.service, t.endpoint.address, t.endpoint.metadata);
        dispatcher.dispatch({ path: copy.r.upPath, method: copy.r.method as Dispatcher.HttpMethod, headers, body: copy.r.body, idempotent: false }, h);
      } catch (e) {
        h.onResponseError(undefined, e instanceof Error ? e : new Error(String(e)));
      }
    });
}

/** One copy's life: ended once the engine's call settled and its try (if any) is done. */
class MirrorCopy {
  current: MirrorTry | undefined;
  private settled = false;
  private over = false;

  constructor(
    readonly r: MirrorRequest,
    private readonly mirror: Mirror,
  ) {}

  callSettled(): void {
    this.settled = true;
    if (this.current === undefined || this.current.done) this.end();
  }

  tryDone(): void {
    if (this.settled) this.end();
  }

  private end(): void {
    if (this.over) return;
    this.over = true;
    this.mirror.ended(this, this.current !== undefined && this.current.status > 0);
  }
}

/** The copy's one try, as undici's handler: the status for the engine, the body read into nothing. */
class MirrorTry implements Dispatcher.DispatchHandler, Expirable {
  status = 0;
  token = -1;
  done = false;
  private settled = false;
  private controller: Dispatcher.DispatchController | undefined;
  private expired = false;

  constructor(
    private readonly copy: MirrorCopy,
    private readonly resolve: (o: TryOutcome<null>) => void,
    private readonly wheel: TimerWheel,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.expired) controller.abort(MIRROR_TIMEOUT);
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number): void {
    if (this.settled) return;
    this.settled = true;
    this.status = statusCode;
    this.resolve({ status: statusCode, retryAfter: undefined, response: null, error: undefined, timedOut: false });
  }

  onResponseData(): void {}

  onResponseEnd(): void {
    this.finish();
  }

  onResponseError(_c: Dispatcher.DispatchController | undefined, error: Error): void {
    this.finish();
    if (this.settled) return;
    this.settled = true;
    this.resolve({ status: 0, retryAfter: undefined, response: undefined, error, timedOut: error === MIRROR_TIMEOUT });
  }

  onExpire(): void {
    this.token = -1;
    if (this.done) return;
    this.expired = true;
    if (this.controller !== undefined) return this.controller.abort(MIRROR_TIMEOUT);
    // Not started yet (queued behind the pool's connections): it is over now; undici aborts it on start.
    this.onResponseError(undefined, MIRROR_TIMEOUT);
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.token >= 0) {
      this.wheel.remove(this.token, this);
      this.token = -1;
    }
    this.copy.tryDone();
  }
}
