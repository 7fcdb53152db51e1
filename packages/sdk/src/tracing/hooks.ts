import { randomUUID } from 'node:crypto';
import {
  context,
  isSpanContextValid,
  ProxyTracerProvider,
  SpanKind,
  SpanStatusCode,
  trace,
  type Exception,
  type Span,
  type SpanAttributes,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import { isGrpcServerError } from '@plinth/core';
import { formatTraceparent, type TraceContext } from '../balancing/traceparent.js';
import type { Clock } from '../ratelimit/clock.js';
import { currentScope, runInScope, runWithContext, type RequestContext } from '../context.js';
import { activeWithSpan, ensureContextManager, sharesRequestScope, SPAN_KEY } from './context-manager.js';
import { TRACING_INVALID_OPTION, TracingError } from './errors.js';
import { OtlpExporter, type OtlpExporterOptions } from './exporter.js';
import { PlinthSampler } from './sampler.js';
import { ContextSpan, PlinthSpan, type AttributeList } from './span.js';
import { PlinthTracer, PlinthTracerProvider } from './tracer.js';

/** The instrumentation scope of the spans the hooks make. */
export const TRACER_NAME = '@plinth/sdk';

/**
 * - `full`: record spans (sampled per `sampleRatio`, failures and slow ones kept on demand) and export them;
 * - `propagation`: record nothing, but give each hop a fresh span id so the trace stays one chain;
 * - `off`: nothing at all; an incoming trace context is passed on untouched.
 */
export type TracingMode = 'full' | 'propagation' | 'off';

export interface TracingOptions {
  service: string;
  namespace: string;
  version?: string;
  region?: string;
  /** `service.instance.id`; default a random UUID per process. */
  instanceId?: string;
  /** Share of new traces recorded, 0..1; default 1. A sampled or unsampled parent decides for its children. */
  sampleRatio?: number;
  /** Export unsampled spans that failed (error status, HTTP 5xx). Default true. */
  keepErrors?: boolean;
  /** Export unsampled spans at least this slow. Default: none kept for slowness. */
  keepSlowerThanMs?: number;
  mode?: TracingMode;
  /** Where Plinth's own spans go; without one they are recorded for the sampling decision only. */
  exporter?: OtlpExporter | OtlpExporterOptions;
  /**
   * `auto` (default): when the app registered an OpenTelemetry TracerProvider, spans are made through it, so
   * its exporter ships them and its instrumentations nest under them (its sampler then decides). `never`:
   * always Plinth's own provider.
   */
  useGlobalProvider?: 'auto' | 'never';
  /** More resource attributes. */
  resource?: SpanAttributes;
  /** Epoch ms clock for span times; default `monotonicClock`. */
  clock?: Clock;
}

const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();

/** The app's registered TracerProvider, or undefined when only the api's no-op one is there. */
export function registeredProvider(): TracerProvider | undefined {
  const p = trace.getTracerProvider() as TracerProvider & { getDelegate?: () => TracerProvider };
  const d = typeof p.getDelegate === 'function' ? p.getDelegate() : p;
  // A second copy of the api in node_modules has its own no-op class: compare by name too.
  if (d === NOOP_PROVIDER || d.constructor.name === 'NoopTracerProvider') return undefined;
  return d;
}

/** Tracing for one service: its provider, sampler and exporter. Hooks take it as their first argument. */
export class Tracing {
  readonly mode: TracingMode;
  readonly provider: PlinthTracerProvider;
  readonly exporter: OtlpExporter | undefined;
  private readonly useGlobal: boolean;
  private resolved = false;
  /** What the hooks make spans with: a Plinth tracer (the fast path) or the app's. */
  own: PlinthTracer;
  foreign: Tracer | undefined;

  constructor(o: TracingOptions) {
    if (typeof o.service !== 'string' || o.service === '') throw new TracingError(TRACING_INVALID_OPTION, 'createTracing: service is required');
    if (typeof o.namespace !== 'string' || o.namespace === '') throw new TracingError(TRACING_INVALID_OPTION, 'createTracing: namespace is required');
    const ratio = o.sampleRatio ?? 1;
    if (!(ratio >= 0 && ratio <= 1)) throw new TracingError(TRACING_INVALID_OPTION, `createTracing: sampleRatio must be within 0..1, got ${ratio}`);
    if (o.keepSlowerThanMs !== undefined && !(o.keepSlowerThanMs >= 0)) {
      throw new TracingError(TRACING_INVALID_OPTION, `createTracing: keepSlowerThanMs must be >= 0, got ${o.keepSlowerThanMs}`);
    }
    this.mode = o.mode ?? 'full';
    this.useGlobal = (o.useGlobalProvider ?? 'auto') === 'auto';
    const resource: SpanAttributes = {
      'service.name': o.service,
      'service.namespace': o.namespace,
      'service.instance.id': o.instanceId ?? randomUUID(),
      'telemetry.sdk.name': TRACER_NAME,
      'telemetry.sdk.language': 'nodejs',
    };
    if (o.version !== undefined) resource['service.version'] = o.version;
    if (o.region !== undefined) resource['cloud.region'] = o.region;
    if (o.resource) Object.assign(resource, o.resource);
    const sampler = new PlinthSampler({
      ratio,
      ...(o.keepErrors === undefined ? {} : { keepErrors: o.keepErrors }),
      ...(o.keepSlowerThanMs === undefined ? {} : { keepSlowerThanMs: o.keepSlowerThanMs }),
    });
    this.exporter = this.mode !== 'full' || o.exporter === undefined ? undefined : o.exporter instanceof OtlpExporter ? o.exporter : new OtlpExporter(o.exporter);
    this.provider = new PlinthTracerProvider({
      resource,
      sampler,
      mode: this.mode === 'full' ? 'full' : 'propagation',
      ...(this.exporter ? { sink: this.exporter } : {}),
      ...(o.clock ? { clock: o.clock } : {}),
    });
    this.own = this.provider.getTracer(TRACER_NAME);
  }

  get sampleRatio(): number {
    return this.provider.sampler.ratio;
  }

  /** Takes effect for traces started from now on. */
  setSampleRatio(ratio: number): void {
    this.provider.sampler.setRatio(ratio);
  }

  /** True when spans are made through the app's OpenTelemetry provider (known after the first span). */
  get usesGlobalProvider(): boolean {
    return this.foreign !== undefined;
  }

  /**
   * Done at the first span rather than at construction: an app's OpenTelemetry SDK is usually started by
   * a preload, but may also be started after Plinth was set up.
   */
  prepare(): void {
    if (this.resolved) return;
    this.resolved = true;
    if (this.mode === 'off') return;
    ensureContextManager();
    if (this.mode !== 'full' || !this.useGlobal) return;
    const p = registeredProvider();
    if (p instanceof PlinthTracerProvider) this.own = p.getTracer(TRACER_NAME);
    else if (p !== undefined) this.foreign = trace.getTracer(TRACER_NAME);
  }

  async forceFlush(): Promise<void> {
    await this.exporter?.forceFlush();
  }

  async shutdown(timeoutMs?: number): Promise<void> {
    await this.exporter?.shutdown(timeoutMs);
  }
}

export function createTracing(opts: TracingOptions): Tracing {
  return new Tracing(opts);
}

export interface ServerSpanOptions {
  method: string;
  /** The route template (`/orders/:id`), never the raw path: span names and figures need low cardinality. */
  route: string;
  /** The parsed incoming `traceparent`. */
  traceparent: TraceContext | undefined;
  lane?: string | undefined;
  stress?: boolean | undefined;
  caller?: string | undefined;
}

export interface ClientSpanOptions {
  /** The service called (`peer.service`). */
  callee: string;
  /** The host (or host:port) the call went to (`server.address`). */
  address?: string | undefined;
  method: string;
  lane?: string | undefined;
  stress?: boolean | undefined;
  /** The context of the request being served (RequestContext.trace), when there is one. */
  parent: TraceContext | undefined;
}

function errorType(error: unknown, status: number | undefined, grpcStatus: number | undefined): string {
  if (error !== null && typeof error === 'object') {
    const e = error as { code?: unknown; name?: unknown };
    if (typeof e.code === 'string' && e.code !== '') return e.code;
    if (typeof e.name === 'string' && e.name !== '') return e.name;
  }
  if (grpcStatus !== undefined && grpcStatus !== 0 && !(status !== undefined && status >= 500)) return String(grpcStatus);
  return status === undefined ? '_OTHER' : String(status);
}

function toException(error: unknown): Exception {
  if (error instanceof Error) return error;
  if (typeof error === 'string') return error;
  return String(error);
}

function finish(span: Span, status: number | undefined, error: unknown, failed: boolean, endMs?: number, grpcStatus?: number): void {
  if (!span.isRecording()) {
    span.end();
    return;
  }
  if (status !== undefined) span.setAttribute('http.response.status_code', status);
  if (grpcStatus !== undefined) {
    span.setAttribute('rpc.system', 'grpc');
    span.setAttribute('rpc.grpc.status_code', grpcStatus);
  }
  if (failed) {
    span.setStatus(error instanceof Error ? { code: SpanStatusCode.ERROR, message: error.message } : { code: SpanStatusCode.ERROR });
    span.setAttribute('error.type', errorType(error, status, grpcStatus));
  }
  if (error !== undefined) span.recordException(toException(error));
  span.end(endMs);
}

function toObject(list: AttributeList): SpanAttributes {
  const o: SpanAttributes = {};
  for (let i = 0; i < list.length; i += 2) o[list[i] as string] = list[i + 1];
  return o;
}

/**
 * Starts `kind` under the active OpenTelemetry span when the app made one (its instrumentation's server
 * span, or a span around the call), else under `parent` (from the wire or the request context).
 */
function start(t: Tracing, name: string, kind: SpanKind, parent: TraceContext | undefined, remote: boolean, attrs: AttributeList, startMs?: number): Span {
  // With Plinth's context manager registered, the active span is read off the scope without the api's lookups.
  const active = sharesRequestScope() ? (currentScope()?.getValue(SPAN_KEY) as Span | undefined) : trace.getSpan(context.active());
  if (t.foreign) {
    let ctx = context.active();
    if ((active === undefined || !isSpanContextValid(active.spanContext())) && parent !== undefined) {
      ctx = trace.setSpanContext(ctx, { traceId: parent.traceId, spanId: parent.spanId, traceFlags: parent.flags, isRemote: remote });
    }
    return t.foreign.startSpan(name, { kind, attributes: toObject(attrs) }, ctx);
  }
  if (active !== undefined) {
    // Our own spans are valid by construction; spare them the id regexes.
    const sc = active.spanContext();
    if (active instanceof PlinthSpan || active instanceof ContextSpan || isSpanContextValid(sc)) return t.own.begin(name, kind, sc.traceId, sc.spanId, sc.traceFlags, sc.isRemote === true, attrs, startMs);
  }
  if (parent !== undefined) return t.own.begin(name, kind, parent.traceId, parent.spanId, parent.flags, remote, attrs, startMs);
  return t.own.begin(name, kind, undefined, undefined, 0, false, attrs, startMs);
}

function traceContextOf(span: Span): TraceContext {
  // Our own span's fields directly: its spanContext() would allocate an object for this one read.
  if (span instanceof PlinthSpan) return { traceId: span.traceId, spanId: span.spanId, flags: span.traceFlags };
  const sc = span.spanContext();
  return { traceId: sc.traceId, spanId: sc.spanId, flags: sc.traceFlags };
}

/** What the inbound middleware holds for one request. */
export class ServerSpanHandle {
  /** The context the request's RequestContext carries, so outbound calls become this span's children. */
  readonly traceContext: TraceContext | undefined;

  constructor(readonly span: Span | undefined, incoming: TraceContext | undefined) {
    this.traceContext = span ? traceContextOf(span) : incoming;
  }

  /** Runs `fn` (the handler) with the span active in the OpenTelemetry context. */
  run<T>(fn: () => T): T {
    return this.span ? context.with(activeWithSpan(this.span), fn) : fn();
  }

  /**
   * `runWithContext(request, () => this.run(fn))`, as one scope entered when Plinth's context manager is
   * the registered one (one AsyncLocalStorage run per request instead of two nested ones).
   */
  runWithRequest<T>(request: RequestContext, fn: () => T): T {
    const span = this.span;
    return span === undefined ? runWithContext(request, fn) : runInServerSpan(request, span, fn);
  }

  /**
   * Ends the span with the answer's status. A 5xx, or an error that was not answered as a 4xx, sets the
   * error status; an error is also recorded as an `exception` event. `grpcStatus`: the gRPC code a gRPC
   * call ended with (carried in an HTTP 200), recorded as `rpc.grpc.status_code` and an error when it is
   * one of the server's (isGrpcServerError).
   */
  end(status: number, error?: unknown, grpcStatus?: number): void {
    if (this.span) endServerSpan(this.span, status, error, undefined, grpcStatus);
  }
}

/** `runWithContext(request, () => context.with(<span active>, fn))`, in one scope when the context manager is Plinth's. */
export function runInServerSpan<T>(request: RequestContext, span: Span, fn: () => T): T {
  if (sharesRequestScope()) return runInScope(request, SPAN_KEY, span, fn);
  return runWithContext(request, () => context.with(activeWithSpan(span), fn));
}

/** ServerSpanHandle.end without the handle; `endMs` (epoch ms) when the caller has just read the span's clock. */
export function endServerSpan(span: Span, status: number, error?: unknown, endMs?: number, grpcStatus?: number): void {
  const failed = status >= 500 || (error !== undefined && !(status >= 400 && status < 500)) || (grpcStatus !== undefined && isGrpcServerError(grpcStatus));
  finish(span, status, error, failed, endMs, grpcStatus);
}

/** What the outbound client holds for one call (one attempt). */
export class ClientSpanHandle {
  private header: string | undefined;

  constructor(
    readonly span: Span | undefined,
    private readonly parent: TraceContext | undefined,
  ) {}

  /** The `traceparent` to send: this span as the callee's parent. Undefined with tracing off and no parent. */
  get traceparent(): string | undefined {
    if (this.header !== undefined) return this.header;
    if (this.span) {
      const sc = this.span.spanContext();
      return (this.header = formatTraceparent({ traceId: sc.traceId, spanId: sc.spanId, flags: sc.traceFlags }));
    }
    return this.parent ? (this.header = formatTraceparent(this.parent)) : undefined;
  }

  /** Runs `fn` with this span active, for when OpenTelemetry instrumentation of the transport should nest under it. */
  run<T>(fn: () => T): T {
    return this.span ? context.with(activeWithSpan(this.span), fn) : fn();
  }

  /**
   * `status` undefined when no answer came (connection error, timeout); that, a 4xx or a 5xx is an error,
   * and so is any gRPC code but OK (`grpcStatus`, the code a gRPC call ended with).
   */
  end(status: number | undefined, error?: unknown, grpcStatus?: number): void {
    if (this.span) finish(this.span, status, error, status === undefined || status >= 400 || error !== undefined || (grpcStatus !== undefined && grpcStatus !== 0), undefined, grpcStatus);
  }
}

const MAX_NAMED_ROUTES = 1024;
const MAX_NAMED_METHODS = 16;
const serverNames = new Map<string, Map<string, string>>();

/**
 * `{method} {route}` (or a client span's `{method} {callee}`), the same string each time for a route: no concatenation per request, and the
 * exporter's caches then find the name by a hash V8 has already computed. Bounded (methods come from
 * clients); past the bound the name is built afresh.
 */
export function serverSpanName(method: string, route: string): string {
  let byMethod = serverNames.get(route);
  if (byMethod === undefined) {
    if (serverNames.size >= MAX_NAMED_ROUTES) return `${method} ${route}`;
    serverNames.set(route, (byMethod = new Map()));
  }
  let name = byMethod.get(method);
  if (name === undefined) {
    name = `${method} ${route}`;
    if (byMethod.size < MAX_NAMED_METHODS) byMethod.set(method, name);
  }
  return name;
}

/** Starts the SERVER span of an inbound request (`{method} {route}`). */
export function startServerSpan(t: Tracing, o: ServerSpanOptions): ServerSpanHandle {
  return serverSpan(t, o.method, o.route, o.traceparent, o.lane, o.stress === true, o.caller);
}

/** startServerSpan without the options object, for the inbound runtime (once per request). */
export function serverSpan(t: Tracing, method: string, route: string, parent: TraceContext | undefined, lane: string | undefined, stress: boolean, caller: string | undefined): ServerSpanHandle {
  return new ServerSpanHandle(beginServerSpan(t, method, route, parent, lane, stress, caller), parent);
}

/**
 * The server span itself, for the inbound runtime, which holds it without a handle; undefined in mode `off`.
 * `startMs` (epoch ms) when the caller has just read the span's clock.
 */
export function beginServerSpan(
  t: Tracing,
  method: string,
  route: string,
  parent: TraceContext | undefined,
  lane: string | undefined,
  stress: boolean,
  caller: string | undefined,
  startMs?: number,
): Span | undefined {
  t.prepare();
  if (t.mode === 'off') return undefined;
  const attrs: AttributeList = ['http.request.method', method, 'http.route', route];
  if (lane !== undefined) attrs.push('plinth.lane', lane);
  if (stress) attrs.push('plinth.stress', 'true');
  if (caller !== undefined) attrs.push('plinth.caller', caller);
  return start(t, serverSpanName(method, route), SpanKind.SERVER, parent, true, attrs, startMs);
}

/** Starts the CLIENT span of an outbound call (`{method} {callee}`). */
export function startClientSpan(t: Tracing, o: ClientSpanOptions): ClientSpanHandle {
  t.prepare();
  if (t.mode === 'off') return new ClientSpanHandle(undefined, o.parent);
  const attrs: AttributeList = ['peer.service', o.callee, 'http.request.method', o.method];
  if (o.address !== undefined) attrs.push('server.address', o.address);
  if (o.lane !== undefined) attrs.push('plinth.lane', o.lane);
  if (o.stress) attrs.push('plinth.stress', 'true');
  return new ClientSpanHandle(start(t, serverSpanName(o.method, o.callee), SpanKind.CLIENT, o.parent, false, attrs), o.parent);
}
