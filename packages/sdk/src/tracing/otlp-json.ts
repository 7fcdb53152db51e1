import type { Link, SpanAttributes } from '@opentelemetry/api';
import type { AttributeList, PlinthSpan, SpanOwner } from './span.js';

/**
 * OTLP/HTTP JSON (opentelemetry-proto's ProtoJSON mapping): ids as lowercase hex, 64-bit integers
 * (times, intValue) as decimal strings, enums as integers, field names in lowerCamelCase. The interfaces
 * are the shape of the request as parsed; the encoder below writes the text directly.
 */
export interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string;
  /** A string only for NaN and the infinities. */
  doubleValue?: number | string;
  arrayValue?: { values: OtlpAnyValue[] };
}

export interface OtlpKeyValue {
  key: string;
  value: OtlpAnyValue;
}

export interface OtlpLink {
  traceId: string;
  spanId: string;
  attributes: OtlpKeyValue[];
  flags: number;
}

export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  flags: number;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: OtlpKeyValue[];
  droppedAttributesCount?: number;
  events?: { timeUnixNano: string; name: string; attributes: OtlpKeyValue[] }[];
  droppedEventsCount?: number;
  links?: OtlpLink[];
  droppedLinksCount?: number;
  status: { code: number; message?: string };
}

export interface OtlpTracesRequest {
  resourceSpans: {
    resource: { attributes: OtlpKeyValue[] };
    scopeSpans: { scope: { name: string; version?: string }; spans: OtlpSpan[] }[];
  }[];
}

/** Span flags bits 8 and 9: "whether the parent is remote" is known, and its value. */
const HAS_IS_REMOTE = 0x100;
const IS_REMOTE = 0x200;

/** Epoch ms (fractional) as integer nanoseconds in a string; ms * 1e6 is past 2^53, so no plain multiply. */
export function nanos(ms: number): string {
  let whole = Math.floor(ms);
  let frac = Math.round((ms - whole) * 1e6);
  if (frac >= 1e6) {
    whole += 1;
    frac -= 1e6;
  }
  return `${whole}${String(frac).padStart(6, '0')}`;
}

// What JSON must escape, and surrogates (a lone one must be escaped for the text to stay well formed).
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** A JSON string literal; names, routes and keys rarely need escaping, and then skip JSON.stringify. */
function str(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

function anyValue(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return `{"stringValue":${str(v)}}`;
    case 'boolean':
      return v ? '{"boolValue":true}' : '{"boolValue":false}';
    case 'number':
      if (Number.isSafeInteger(v)) return `{"intValue":"${v}"}`;
      // JSON has no NaN or Infinity; ProtoJSON spells them as strings.
      return Number.isFinite(v) ? `{"doubleValue":${v}}` : `{"doubleValue":"${String(v)}"}`;
    default:
      return Array.isArray(v) ? `{"arrayValue":{"values":[${v.map(anyValue).join(',')}]}}` : '{}';
  }
}

// Most attribute pairs repeat from span to span (method, route, lane, caller, peer.service), so their
// encoded text is kept: bounded, so high-cardinality values simply are not cached.
const MAX_CACHED_KEYS = 256;
const MAX_CACHED_VALUES = 64;
const MAX_CACHED_LENGTH = 128;
const fragments = new Map<string, Map<string, string>>();

function keyValue(key: string, v: unknown): string {
  if (typeof v === 'string' && v.length <= MAX_CACHED_LENGTH) {
    let byValue = fragments.get(key);
    if (byValue === undefined && fragments.size < MAX_CACHED_KEYS) fragments.set(key, (byValue = new Map()));
    let f = byValue?.get(v);
    if (f === undefined) {
      f = `{"key":${str(key)},"value":{"stringValue":${str(v)}}}`;
      if (byValue && byValue.size < MAX_CACHED_VALUES) byValue.set(v, f);
    }
    return f;
  }
  return `{"key":${str(key)},"value":${anyValue(v)}}`;
}

function keyValues(list: AttributeList): string {
  let out = '[';
  for (let i = 0; i < list.length; i += 2) {
    if (i > 0) out += ',';
    out += keyValue(list[i] as string, list[i + 1]);
  }
  return `${out}]`;
}

function objectKeyValues(attributes: SpanAttributes | undefined): string {
  let out = '[';
  if (attributes) {
    for (const key of Object.keys(attributes)) {
      const v = attributes[key];
      if (v === undefined || v === null) continue;
      if (out.length > 1) out += ',';
      out += keyValue(key, v);
    }
  }
  return `${out}]`;
}

function link(l: Link): string {
  const flags = (l.context.traceFlags & 0xff) | HAS_IS_REMOTE | (l.context.isRemote ? IS_REMOTE : 0);
  // A link's ids come from api callers, unchecked: quote them properly.
  return `{"traceId":${str(l.context.traceId)},"spanId":${str(l.context.spanId)},"attributes":${objectKeyValues(l.attributes)},"flags":${flags}}`;
}

/** One span as OTLP JSON text. Its ids are our own lowercase hex, written without escaping. */
export function spanJson(s: PlinthSpan): string {
  const flags = (s.traceFlags & 0xff) | HAS_IS_REMOTE | (s.parentIsRemote ? IS_REMOTE : 0);
  let out = `{"traceId":"${s.traceId}","spanId":"${s.spanId}"`;
  if (s.parentSpanId !== undefined) out += `,"parentSpanId":"${s.parentSpanId}"`;
  // The api counts SpanKind from INTERNAL = 0; OTLP keeps 0 for UNSPECIFIED.
  out += `,"flags":${flags},"name":${str(s.name)},"kind":${s.kind + 1},"startTimeUnixNano":"${nanos(s.startMs)}","endTimeUnixNano":"${nanos(s.endMs)}","attributes":${keyValues(s.attributes)}`;
  if (s.droppedAttributes > 0) out += `,"droppedAttributesCount":${s.droppedAttributes}`;
  if (s.events) {
    out += `,"events":[${s.events.map((e) => `{"timeUnixNano":"${nanos(e.timeMs)}","name":${str(e.name)},"attributes":${e.attributes ? keyValues(e.attributes) : '[]'}}`).join(',')}]`;
  }
  if (s.droppedEvents > 0) out += `,"droppedEventsCount":${s.droppedEvents}`;
  if (s.links) out += `,"links":[${s.links.map(link).join(',')}]`;
  if (s.droppedLinks > 0) out += `,"droppedLinksCount":${s.droppedLinks}`;
  return `${out},"status":${s.statusMessage === undefined ? `{"code":${s.statusCode}}` : `{"code":${s.statusCode},"message":${str(s.statusMessage)}}`}}`;
}

/**
 * One ExportTraceServiceRequest as JSON text: spans grouped by resource (their provider), then by
 * instrumentation scope (their tracer). Written out directly, with repeated attribute pairs cached:
 * measured at about half the cost of JSON.stringify over the equivalent object tree, and this runs for
 * every exported span on the service's own thread.
 */
export function tracesJson(spans: readonly PlinthSpan[]): string {
  const byResource = new Map<SpanAttributes, Map<SpanOwner, PlinthSpan[]>>();
  for (const s of spans) {
    const owner = s.owner;
    let scopes = byResource.get(owner.provider.resource);
    if (!scopes) byResource.set(owner.provider.resource, (scopes = new Map()));
    let list = scopes.get(owner);
    if (!list) scopes.set(owner, (list = []));
    list.push(s);
  }
  let out = '{"resourceSpans":[';
  let firstResource = true;
  for (const [resource, scopes] of byResource) {
    out += `${firstResource ? '' : ','}{"resource":{"attributes":${objectKeyValues(resource)}},"scopeSpans":[`;
    firstResource = false;
    let firstScope = true;
    for (const [owner, list] of scopes) {
      const { name, version } = owner.scope;
      out += `${firstScope ? '' : ','}{"scope":${version === undefined ? `{"name":${str(name)}}` : `{"name":${str(name)},"version":${str(version)}}`},"spans":[`;
      firstScope = false;
      for (let i = 0; i < list.length; i++) {
        if (i > 0) out += ',';
        out += spanJson(list[i] as PlinthSpan);
      }
      out += ']}';
    }
    out += ']}';
  }
  return `${out}]}`;
}
