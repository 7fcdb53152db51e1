import {
  context as otelContext,
  isSpanContextValid,
  SpanKind,
  SpanStatusCode,
  trace,
  type Context,
  type Span,
  type SpanAttributes,
  type SpanOptions,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import type { Clock } from '../ratelimit/clock.js';
import { lastTraceRandomness, newSpanId, newTraceId } from './ids.js';
import { DEFER, DROP, PlinthSampler } from './sampler.js';
import { attributeList, ContextSpan, nowMs, PlinthSpan, toEpochMs, type AttributeList, type SpanOwner } from './span.js';

/** Where ended spans that are to be exported go (the OTLP exporter). Must not block: it is on the request path. */
export interface SpanSink {
  enqueue(span: PlinthSpan): void;
}

/** `full` records spans; `propagation` only carries the trace context on, with fresh span ids. */
export type RecordingMode = 'full' | 'propagation';

export interface PlinthTracerProviderOptions {
  /** Resource attributes (`service.name`, ...), sent once per export batch. */
  resource: SpanAttributes;
  sampler?: PlinthSampler;
  mode?: RecordingMode;
  sink?: SpanSink;
  /** Epoch ms (sub-ms precision) for span times; default `monotonicClock`. Tests pass a ManualClock. */
  clock?: Clock;
}

export interface InstrumentationScope {
  readonly name: string;
  readonly version: string | undefined;
}

/** The span status as the keep rule sees it: an error status, or an HTTP 5xx answer. */
export function isFailed(span: PlinthSpan): boolean {
  if (span.statusCode === SpanStatusCode.ERROR) return true;
  const status = span.attribute('http.response.status_code');
  return typeof status === 'number' && status >= 500;
}

/** Plinth's own TracerProvider, for processes where the app runs no OpenTelemetry SDK. */
export class PlinthTracerProvider implements TracerProvider {
  readonly resource: SpanAttributes;
  readonly sampler: PlinthSampler;
  readonly mode: RecordingMode;
  sink: SpanSink | undefined;
  readonly now: () => number;
  private readonly tracers = new Map<string, PlinthTracer>();

  constructor(o: PlinthTracerProviderOptions) {
    this.resource = o.resource;
    this.sampler = o.sampler ?? new PlinthSampler();
    this.mode = o.mode ?? 'full';
    this.sink = o.sink;
    const clock = o.clock;
    this.now = clock ? () => clock.now() : nowMs;
  }

  getTracer(name: string, version?: string): PlinthTracer {
    const key = version === undefined ? name : `${name}@${version}`;
    let t = this.tracers.get(key);
    if (!t) {
      t = new PlinthTracer(this, { name, version });
      this.tracers.set(key, t);
    }
    return t;
  }
}

type ActiveFn = (span: Span) => unknown;

export class PlinthTracer implements Tracer, SpanOwner {
  constructor(
    readonly provider: PlinthTracerProvider,
    readonly scope: InstrumentationScope,
  ) {}

  now(): number {
    return this.provider.now();
  }

  onEnd(span: PlinthSpan): void {
    const p = this.provider;
    if (span.deferred && !p.sampler.keep(isFailed(span), span.durationMs)) return;
    p.sink?.enqueue(span);
  }

  /**
   * The hooks' path: no Context object and no options object per span. `parentTraceId` undefined starts a
   * new trace. Returns a non-recording span (still with a fresh span id, so the chain stays linked) when
   * sampling drops it or the provider only propagates.
   */
  begin(
    name: string,
    kind: SpanKind,
    parentTraceId: string | undefined,
    parentSpanId: string | undefined,
    parentFlags: number,
    parentIsRemote: boolean,
    attributes: AttributeList,
    startMs = this.provider.now(),
  ): Span {
    const p = this.provider;
    const root = parentTraceId === undefined;
    const traceId = parentTraceId ?? newTraceId();
    const spanId = newSpanId();
    if (p.mode === 'propagation') {
      const flags = root ? (p.sampler.sampledByRandomness(lastTraceRandomness()) ? 1 : 0) : parentFlags;
      return new ContextSpan(traceId, spanId, flags);
    }
    const decision = root ? p.sampler.decideRoot(lastTraceRandomness()) : p.sampler.decide(traceId, parentFlags);
    // Flags other than "sampled" (the level-2 random bit, say) pass on as they came.
    const flags = ((root ? 0 : parentFlags) & ~1) | (decision === DEFER || decision === DROP ? 0 : 1);
    if (decision === DROP) return new ContextSpan(traceId, spanId, flags);
    return new PlinthSpan(this, name, kind, traceId, spanId, flags, root ? undefined : parentSpanId, parentIsRemote, decision === DEFER, startMs, attributes);
  }

  startSpan(name: string, options: SpanOptions = {}, ctx: Context = otelContext.active()): Span {
    const parent = options.root ? undefined : trace.getSpanContext(ctx);
    const valid = parent !== undefined && isSpanContextValid(parent);
    const span = this.begin(
      name,
      options.kind ?? SpanKind.INTERNAL,
      valid ? parent.traceId : undefined,
      valid ? parent.spanId : undefined,
      valid ? parent.traceFlags : 0,
      valid ? parent.isRemote === true : false,
      attributeList(options.attributes),
      options.startTime === undefined ? this.provider.now() : toEpochMs(options.startTime),
    );
    if (options.links && options.links.length > 0) span.addLinks(options.links);
    return span;
  }

  startActiveSpan<F extends (span: Span) => unknown>(name: string, fn: F): ReturnType<F>;
  startActiveSpan<F extends (span: Span) => unknown>(name: string, options: SpanOptions, fn: F): ReturnType<F>;
  startActiveSpan<F extends (span: Span) => unknown>(name: string, options: SpanOptions, ctx: Context, fn: F): ReturnType<F>;
  startActiveSpan(name: string, a: SpanOptions | ActiveFn, b?: Context | ActiveFn, c?: ActiveFn): unknown {
    let options: SpanOptions = {};
    let ctx: Context = otelContext.active();
    let fn: ActiveFn;
    if (typeof a === 'function') fn = a;
    else if (typeof b === 'function') {
      options = a;
      fn = b;
    } else {
      options = a;
      if (b !== undefined) ctx = b;
      fn = c as ActiveFn;
    }
    const span = this.startSpan(name, options, ctx);
    return otelContext.with(trace.setSpan(ctx, span), fn, undefined, span);
  }
}
