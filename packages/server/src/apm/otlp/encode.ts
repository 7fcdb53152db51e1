import type { AttrValue, Attributes, SpanKind, SpanRecord, SpanStatus } from '../types.js';
import type { OtlpEncoding } from './normalize.js';
import { ExportTraceServiceResponse } from './schema.js';

export const PROTOBUF_CONTENT_TYPE = 'application/x-protobuf';
export const JSON_CONTENT_TYPE = 'application/json';

const EMPTY = Buffer.alloc(0);
const EMPTY_JSON = Buffer.from('{}');

/**
 * ExportTraceServiceResponse in the request's encoding. Full success leaves `partial_success` unset, as
 * the spec requires (an empty message; `{}` in JSON).
 */
export function encodeExportResponse(encoding: OtlpEncoding, rejectedSpans: number, errorMessage: string | undefined): Buffer {
  const partial = rejectedSpans > 0 || errorMessage !== undefined;
  if (encoding === 'json') {
    if (!partial) return EMPTY_JSON;
    // proto3 JSON writes int64 as a decimal string.
    return Buffer.from(JSON.stringify({ partialSuccess: { rejectedSpans: String(rejectedSpans), errorMessage: errorMessage ?? '' } }));
  }
  if (!partial) return EMPTY;
  const bytes = ExportTraceServiceResponse.encode({ partialSuccess: { rejectedSpans, errorMessage: errorMessage ?? '' } }).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const KIND_NUMBERS: Record<SpanKind, number> = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 };
const STATUS_NUMBERS: Record<SpanStatus, number> = { unset: 0, ok: 1, error: 2 };

/** Epoch ms (fractional) → unix nanoseconds as a decimal string, exact to the nanosecond the float holds. */
export function msToNanos(ms: number, plusNanos = 0): string {
  if (!(ms > 0)) return '0';
  let whole = Math.floor(ms);
  // Whole ms and the ns past them stay exact integers; their decimal concatenation is the uint64.
  let ns = Math.round((ms - whole) * 1e6) + plusNanos;
  if (ns >= 1e6) {
    whole += Math.floor(ns / 1e6);
    ns %= 1e6;
  }
  return whole === 0 ? String(ns) : `${whole}${String(ns).padStart(6, '0')}`;
}

function anyValue(v: AttrValue): Record<string, unknown> {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
}

function keyValues(attrs: Attributes): { key: string; value: Record<string, unknown> }[] {
  const out: { key: string; value: Record<string, unknown> }[] = [];
  for (const key of Object.keys(attrs)) out.push({ key, value: anyValue(attrs[key]!) });
  return out;
}

/**
 * SpanRecords → an OTLP/JSON ExportTraceServiceRequest. Spans are grouped by their resource object
 * (records from one ResourceSpans share it), so a batch re-encodes each resource once.
 * What the model does not keep is not re-created: links, trace state, flags; the instrumentation scope
 * travels as the `otel.scope.*` attributes.
 */
export function encodeTracesJson(spans: readonly SpanRecord[]): string {
  const groups = new Map<Attributes, unknown[]>();
  for (const s of spans) {
    let list = groups.get(s.resource);
    if (!list) groups.set(s.resource, (list = []));
    const span: Record<string, unknown> = {
      traceId: s.traceId,
      spanId: s.spanId,
      name: s.name,
      kind: KIND_NUMBERS[s.kind],
      startTimeUnixNano: msToNanos(s.startMs),
      // From start + duration in whole ns: adding the floats first would lose the duration's precision.
      endTimeUnixNano: msToNanos(s.startMs, Math.round(s.durationMs * 1e6)),
      attributes: keyValues(s.attributes),
    };
    if (s.parentSpanId !== undefined) span.parentSpanId = s.parentSpanId;
    if (s.events.length > 0) {
      span.events = s.events.map((e) => ({ timeUnixNano: msToNanos(e.timeMs), name: e.name, attributes: keyValues(e.attributes) }));
    }
    if (s.status !== 'unset' || s.statusMessage !== undefined) {
      span.status = s.statusMessage === undefined ? { code: STATUS_NUMBERS[s.status] } : { code: STATUS_NUMBERS[s.status], message: s.statusMessage };
    }
    list.push(span);
  }
  const resourceSpans: unknown[] = [];
  for (const [resource, list] of groups) resourceSpans.push({ resource: { attributes: keyValues(resource) }, scopeSpans: [{ spans: list }] });
  return JSON.stringify({ resourceSpans });
}
