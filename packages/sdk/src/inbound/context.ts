import type { IncomingHttpHeaders } from 'node:http';
import type { Span } from '@opentelemetry/api';
import { Headers } from '@plinth/core';
import { getLane, getUserId, isInternalBaggageKey, parseBaggage, setLane, setUserId, stripInternal, type Baggage } from '../balancing/baggage.js';
import { childContext, newTraceContext, parseTraceparent, type TraceContext } from '../balancing/traceparent.js';
import type { RequestContext } from '../context.js';
import { PlinthSpan } from '../tracing/span.js';
import type { GovernanceSource } from '../governance/source.js';
import { CompiledTraffic, type SubjectRef } from '../governance/traffic.js';
import { monotonicClock, type Clock } from '../ratelimit/clock.js';
import { parseGrpcTimeout, parseTimeoutHeader } from '../resilience/deadline.js';

/**
 * Who may send internal baggage (`plinth.lane`, `plinth.stress`, `user.id`):
 * - `mesh` (default, for services inside the mesh): requests from other Plinth services, i.e. that name
 *   their caller (`plinth-caller`) or carry an authenticated identity, keep it; anonymous requests lose it.
 * - `edge` (a service reachable from outside): only identities listed in TrafficPolicy `trustedIdentities`
 *   keep it, and only the keys listed for them.
 */
export type TrustMode = 'mesh' | 'edge';

export interface ContextOptions {
  trust?: TrustMode;
  /** The compiled TrafficPolicies: lane entry rules and trusted identities. Default: none. */
  traffic?: CompiledTraffic;
  /** Monotonic clock the deadline is made absolute on; default `monotonicClock`. */
  clock?: Clock;
  /** For lane entry's random weights. */
  random?: () => number;
}

/** What building a context looks at; header names lower case, as node delivers them. */
export interface ContextRequest {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The authenticated subject (`ServiceAccount:<namespace>/<name>`), if the server verified one. */
  readonly identity?: string | undefined;
}

const MAX_CALLER_LENGTH = 253;
const CALLER = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;

/** The first value of a header, as a string. */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return typeof v === 'string' ? v : Array.isArray(v) ? v[0] : undefined;
}

/** `plinth-caller`, if it looks like a service name; anything else is treated as no caller. */
export function callerOf(headers: IncomingHttpHeaders): string | undefined {
  const v = headerValue(headers, Headers.caller);
  if (v === undefined || v.length === 0 || v.length > MAX_CALLER_LENGTH) return undefined;
  return CALLER.test(v) ? v : undefined;
}

/** `ServiceAccount:<namespace>/<name>` (core's `subjectId`) as the reference trustedKeys wants. */
export function subjectOf(identity: string | undefined): SubjectRef | undefined {
  if (identity === undefined) return undefined;
  const colon = identity.indexOf(':');
  const slash = identity.indexOf('/', colon + 1);
  if (colon <= 0 || slash < 0) return undefined;
  return { kind: identity.slice(0, colon), namespace: identity.slice(colon + 1, slash), name: identity.slice(slash + 1) };
}

function hasInternal(b: Baggage): boolean {
  for (const k of b.keys()) if (isInternalBaggageKey(k)) return true;
  return false;
}

/**
 * The baggage this hop keeps: what arrived, minus internal keys from senders not trusted with them. The
 * common case (no internal key, or a trusted sender) keeps the parsed map as is.
 */
export function trustedBaggage(baggage: Baggage, trust: TrustMode, caller: string | undefined, identity: string | undefined, traffic: CompiledTraffic): Baggage {
  if (baggage.size === 0 || !hasInternal(baggage)) return baggage;
  if (trust === 'mesh' && (caller !== undefined || identity !== undefined)) return baggage;
  return stripInternal(baggage, traffic.trustedKeys(subjectOf(identity)));
}

/**
 * The RequestContext of an inbound request. Its trace is worked out on first read, so a request that nothing
 * reads the context of and nothing propagates from draws no random ids; once read it stays the same for
 * the whole request. Until then it is the incoming `traceparent` (parsed then), or the server span the
 * inbound runtime made for the request (`follow`).
 */
export class InboundContext implements RequestContext {
  private known: TraceContext | undefined = undefined;
  private span: Span | undefined = undefined;

  constructor(
    readonly baggage: Baggage,
    readonly deadlineAt: number | undefined,
    readonly caller: string | undefined,
    /** The raw `traceparent` header, if any. */
    private readonly traceparent: string | undefined,
  ) {}

  /** The hop's own span context: the server span's, else a new span of the caller's trace, else a new trace. */
  get trace(): TraceContext {
    return (this.known ??= this.draw());
  }

  /**
   * The trace is `span`'s (the request's server span); with no span (tracing mode `off`) it is the parsed
   * incoming `parent` as it came, or a new trace when there is none.
   */
  follow(span: Span | undefined, parent: TraceContext | undefined): void {
    this.span = span;
    if (span === undefined && parent !== undefined) this.known = parent;
  }

  private draw(): TraceContext {
    const span = this.span;
    if (span === undefined) return continueTrace(parseTraceparent(this.traceparent));
    // Our own span's fields directly: its spanContext() would allocate an object for this one read.
    if (span instanceof PlinthSpan) return { traceId: span.traceId, spanId: span.spanId, flags: span.traceFlags };
    const sc = span.spanContext();
    return { traceId: sc.traceId, spanId: sc.spanId, flags: sc.traceFlags };
  }
}

/**
 * The RequestContext of an inbound request: the trace continued (a new span of the caller's trace, or a new
 * trace when the traceparent is absent or malformed), the baggage the sender may set, the lane (entered here
 * when the request has none), the absolute deadline from `plinth-timeout-ms` and the caller. Never throws on
 * malformed headers: each bad one is treated as absent.
 */
export function buildContext(req: ContextRequest, opts: ContextOptions = {}): RequestContext {
  return inboundContext(req.method, req.path, req.headers, req.identity, opts, headerValue(req.headers, Headers.traceparent));
}

/** The hop's own span context under `parent` (from the wire), or a new trace. */
export function continueTrace(parent: TraceContext | undefined): TraceContext {
  return parent === undefined ? newTraceContext() : childContext(parent);
}

/**
 * buildContext without the request object, for the inbound runtime (which has read `traceparent` already:
 * a traced request parses it once, for the span and the context both).
 */
export function inboundContext(method: string, path: string, h: IncomingHttpHeaders, identity: string | undefined, opts: ContextOptions, traceparent: string | undefined, userId?: string): InboundContext {
  const traffic = opts.traffic ?? CompiledTraffic.empty;
  const caller = callerOf(h);
  let baggage = parseBaggage(h[Headers.baggage]);
  baggage = trustedBaggage(baggage, opts.trust ?? 'mesh', caller, identity, traffic);
  // The verified user outranks whatever the sender's baggage said.
  if (userId !== undefined) setUserId(baggage, userId);
  if (traffic.hasEntryRules && getLane(baggage) === undefined) {
    const lane = traffic.enter({ method, path, headers: h, userId: getUserId(baggage) }, opts.random);
    if (lane !== undefined) setLane(baggage, lane);
  }
  const timeout = h[Headers.timeout];
  // A gRPC client states its deadline in grpc-timeout; a Plinth hop's plinth-timeout-ms wins when both came.
  const remaining = timeout !== undefined ? parseTimeoutHeader(typeof timeout === 'string' ? timeout : timeout[0]) : h[Headers.grpcTimeout] === undefined ? undefined : parseGrpcTimeout(h[Headers.grpcTimeout]);
  const deadlineAt = remaining === undefined ? undefined : (opts.clock ?? monotonicClock).now() + remaining;
  return new InboundContext(baggage, deadlineAt, caller, traceparent);
}

const trafficCache = new WeakMap<GovernanceSource, { version: number; traffic: CompiledTraffic }>();

/** The source's TrafficPolicies compiled, once per governance version (shared by every adapter on the source). */
export function compiledTrafficOf(source: GovernanceSource): CompiledTraffic {
  const hit = trafficCache.get(source);
  if (hit !== undefined && hit.version === source.version) return hit.traffic;
  let traffic: CompiledTraffic;
  try {
    const policies = source.trafficPolicies();
    traffic = policies.length === 0 ? CompiledTraffic.empty : new CompiledTraffic(policies);
  } catch {
    // A policy the compiler cannot read must not fail every request; route as if there were none.
    traffic = CompiledTraffic.empty;
  }
  trafficCache.set(source, { version: source.version, traffic });
  return traffic;
}
