export { AsyncLocalContextManager, ensureContextManager, hasContextManager } from './context-manager.js';
export { TRACING_EXPORT_FAILED, TRACING_INVALID_OPTION, TracingError } from './errors.js';
export { OtlpExporter, retryAfterMs, type AuthorizationSource, type ExporterToken, type OtlpExporterOptions } from './exporter.js';
export {
  ClientSpanHandle,
  createTracing,
  registeredProvider,
  ServerSpanHandle,
  startClientSpan,
  startServerSpan,
  Tracing,
  TRACER_NAME,
  type ClientSpanOptions,
  type ServerSpanOptions,
  type TracingMode,
  type TracingOptions,
} from './hooks.js';
export { nanos, spanJson, tracesJson, type OtlpAnyValue, type OtlpLink, type OtlpKeyValue, type OtlpSpan, type OtlpTracesRequest } from './otlp-json.js';
export { DEFER, DROP, PlinthSampler, SAMPLE, type Decision, type SamplerOptions } from './sampler.js';
export { ContextSpan, MAX_ATTRIBUTES, MAX_EVENTS, MAX_LINKS, PlinthSpan, type AttributeList, type SpanEvent, type SpanOwner } from './span.js';
export { isFailed, PlinthTracer, PlinthTracerProvider, type InstrumentationScope, type PlinthTracerProviderOptions, type RecordingMode, type SpanSink } from './tracer.js';
