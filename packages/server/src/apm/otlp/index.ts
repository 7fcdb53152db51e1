export { decodeJsonTraces, decodeProtobufTraces, decodeTraces } from './decode.js';
export { encodeExportResponse, encodeTracesJson, JSON_CONTENT_TYPE, msToNanos, PROTOBUF_CONTENT_TYPE } from './encode.js';
export { OtlpForwarder, parseRetryAfter, type OtlpForwarderCounters, type OtlpForwarderOptions } from './forward.js';
export {
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_MAX_DECODED_BYTES,
  OTLP_ERROR_CODES,
  OTLP_TRACES_PATH,
  registerOtlpRoutes,
  type OtlpIngest,
  type OtlpIngestDeps,
  type OtlpIngestStats,
  type SpanForwarder,
} from './ingest.js';
export { DEFAULT_NAMESPACE, normalizeTraces, OTLP_LIMITS, truncate, UNKNOWN_SERVICE, type NormalizedBatch, type OtlpEncoding } from './normalize.js';
export { DEFAULT_INGEST_QUEUE_SPANS, IngestQueue, type IngestQueueOptions, type IngestQueueStats, type SpanSink } from './queue.js';
export { ExportTraceServiceRequest, ExportTraceServiceResponse, OTLP_TRACE_DESCRIPTOR, otlpRoot } from './schema.js';
