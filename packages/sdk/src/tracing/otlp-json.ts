import type { Link, SpanAttributes } from '@opentelemetry/api';
import { jsonString } from '@plinth/core';
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

function anyValue(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return `{"stringValue":${jsonString(v)}}`;
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

const ascii = (s: string): Uint8Array => Buffer.from(s, 'latin1');

const TRACE_ID_OPEN = ascii('{"traceId":"');
const SPAN_ID_OPEN = ascii('","spanId":"');
const PARENT_SPAN_ID_OPEN = ascii('","parentSpanId":"');
/** Room for the three ids' text: ours are 32 and 16 hex digits. */
const ID_TEXT_MAX = TRACE_ID_OPEN.length + SPAN_ID_OPEN.length + PARENT_SPAN_ID_OPEN.length + 64;

/** `prefix`, then `id` (printable ASCII, at most 32 chars), into `buf` at `p`; the position after. */
function put(buf: Buffer, p: number, prefix: Uint8Array, id: string): number {
  for (let i = 0; i < prefix.length; i++) buf[p++] = prefix[i]!;
  const n = Math.min(id.length, 32);
  for (let i = 0; i < n; i++) buf[p++] = id.charCodeAt(i);
  return p;
}

/** 000 to 999 as ASCII digits, three bytes each. */
const DIGITS3 = new Uint8Array(3000);
for (let i = 0; i < 1000; i++) {
  DIGITS3[3 * i] = 48 + Math.floor(i / 100);
  DIGITS3[3 * i + 1] = 48 + (Math.floor(i / 10) % 10);
  DIGITS3[3 * i + 2] = 48 + (i % 10);
}

/**
 * JSON written straight into bytes. Building the text as a string and then `Buffer.from` it cost more in
 * the flattening of that string (a rope of some 25 pieces per span) than in writing it: ~2.7 µs per span
 * against ~0.7 µs this way, paid on the service's own thread. Text that is printable ASCII (ids, digits,
 * nearly every name and attribute) is copied a char at a time; anything else goes through `jsonString` and a
 * UTF-8 write, so the bytes are what `Buffer.from(text)` would give.
 */
class JsonBytes {
  private buf: Buffer;
  pos = 0;
  /** `"` and the decimal text of the last whole millisecond written by `nanos`: spans of one batch share most. */
  private lastMs = -1;
  private lastMsText: Uint8Array = new Uint8Array(0);

  constructor(capacity: number) {
    this.buf = Buffer.allocUnsafe(capacity);
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  /** Bytes `start..end` of what was written, into `w` (one native copy). */
  copyTo(w: JsonBytes, start: number, end: number): void {
    w.room(end - start);
    w.pos += this.buf.copy(w.buf, w.pos, start, end);
  }

  /** One ASCII character. */
  byte(c: number): void {
    this.room(1);
    this.buf[this.pos++] = c;
  }

  room(n: number): void {
    if (this.pos + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.pos + n));
      this.buf.copy(next, 0, 0, this.pos);
      this.buf = next;
    }
  }

  /** Pre-encoded bytes (constant fragments, cached attributes). */
  raw(b: Uint8Array): void {
    const n = b.length;
    this.room(n);
    const p = this.pos;
    if (n > 8) this.buf.set(b, p);
    else for (let i = 0; i < n; i++) this.buf[p + i] = b[i]!;
    this.pos = p + n;
  }

  /** Text known to be printable ASCII with nothing to escape (our ids, numbers' digits). */
  plain(s: string): void {
    const n = s.length;
    this.room(n);
    const p = this.pos;
    if (n > 8) this.buf.write(s, p, n, 'latin1');
    else for (let i = 0; i < n; i++) this.buf[p + i] = s.charCodeAt(i);
    this.pos = p + n;
  }

  /**
   * `{"traceId":"…","spanId":"…` (and `","parentSpanId":"…`): our own ids, lowercase hex, a char at a
   * time. One `Buffer#write` of the joined text cost more (the join, its flattening and a native call:
   * about 0.3 µs a span in a service's profile) than these some 80 stores.
   */
  ids(traceId: string, spanId: string, parentSpanId: string | undefined): void {
    this.room(ID_TEXT_MAX);
    const buf = this.buf;
    let p = this.pos;
    p = put(buf, p, TRACE_ID_OPEN, traceId);
    p = put(buf, p, SPAN_ID_OPEN, spanId);
    if (parentSpanId !== undefined) p = put(buf, p, PARENT_SPAN_ID_OPEN, parentSpanId);
    this.pos = p;
  }

  /** Any text, as UTF-8. */
  text(s: string): void {
    this.room(3 * s.length);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  /** A JSON string literal. */
  string(s: string): void {
    const n = s.length;
    this.room(n + 2);
    const buf = this.buf;
    const start = this.pos;
    let p = start;
    buf[p++] = 0x22;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) {
        this.pos = start;
        this.text(jsonString(s));
        return;
      }
      buf[p++] = c;
    }
    buf[p++] = 0x22;
    this.pos = p;
  }

  /** A small non-negative integer (flags, kinds, counts). */
  uint(v: number): void {
    if (v < 10) {
      this.room(1);
      this.buf[this.pos++] = 48 + v;
    } else this.plain(String(v));
  }

  /** Epoch ms as integer nanoseconds in quotes, as `nanos` spells them. */
  nanos(ms: number): void {
    let whole = Math.floor(ms);
    let frac = Math.round((ms - whole) * 1e6);
    if (frac >= 1e6) {
      whole += 1;
      frac -= 1e6;
    }
    if (!(whole >= 0)) {
      this.plain(`"${nanos(ms)}"`);
      return;
    }
    if (whole !== this.lastMs) {
      this.lastMs = whole;
      this.lastMsText = ascii(`"${whole}`);
    }
    this.raw(this.lastMsText);
    // The six sub-millisecond digits as two table lookups of three.
    this.room(7);
    const buf = this.buf;
    const p = this.pos;
    const hi = 3 * ((frac / 1000) | 0);
    const lo = 3 * (frac % 1000);
    buf[p] = DIGITS3[hi]!;
    buf[p + 1] = DIGITS3[hi + 1]!;
    buf[p + 2] = DIGITS3[hi + 2]!;
    buf[p + 3] = DIGITS3[lo]!;
    buf[p + 4] = DIGITS3[lo + 1]!;
    buf[p + 5] = DIGITS3[lo + 2]!;
    buf[p + 6] = 0x22;
    this.pos = p + 7;
  }
}

// Most attribute pairs repeat from span to span (method, route, status code, lane, caller, peer.service),
// so their encoded bytes are kept: bounded, so high-cardinality values simply are not cached.
const MAX_CACHED_KEYS = 256;
const MAX_CACHED_VALUES = 64;
const MAX_CACHED_LENGTH = 128;
const fragments = new Map<string, Map<string | number | boolean, Uint8Array>>();

function cacheable(v: unknown): v is string | number | boolean {
  return typeof v === 'string' ? v.length <= MAX_CACHED_LENGTH : typeof v === 'boolean' || (typeof v === 'number' && Number.isSafeInteger(v));
}

function keyValue(w: JsonBytes, key: string, v: unknown): void {
  if (!cacheable(v)) {
    w.text(`{"key":${jsonString(key)},"value":${anyValue(v)}}`);
    return;
  }
  let byValue = fragments.get(key);
  if (byValue === undefined && fragments.size < MAX_CACHED_KEYS) fragments.set(key, (byValue = new Map()));
  let f = byValue?.get(v);
  if (f === undefined) {
    f = Buffer.from(`{"key":${jsonString(key)},"value":${anyValue(v)}}`);
    if (byValue && byValue.size < MAX_CACHED_VALUES) byValue.set(v, f);
  }
  w.raw(f);
}

function keyValues(w: JsonBytes, list: AttributeList): void {
  w.raw(OPEN_LIST);
  for (let i = 0; i < list.length; i += 2) {
    if (i > 0) w.raw(COMMA);
    keyValue(w, list[i] as string, list[i + 1]);
  }
  w.raw(CLOSE_LIST);
}

function objectKeyValues(w: JsonBytes, attributes: SpanAttributes | undefined): void {
  w.raw(OPEN_LIST);
  let first = true;
  if (attributes) {
    for (const key of Object.keys(attributes)) {
      const v = attributes[key];
      if (v === undefined || v === null) continue;
      if (!first) w.raw(COMMA);
      first = false;
      keyValue(w, key, v);
    }
  }
  w.raw(CLOSE_LIST);
}

function link(w: JsonBytes, l: Link): void {
  const flags = (l.context.traceFlags & 0xff) | HAS_IS_REMOTE | (l.context.isRemote ? IS_REMOTE : 0);
  // A link's ids come from api callers, unchecked: quote them properly.
  w.plain('{"traceId":');
  w.string(l.context.traceId);
  w.plain(',"spanId":');
  w.string(l.context.spanId);
  w.plain(',"attributes":');
  objectKeyValues(w, l.attributes);
  w.plain(`,"flags":${flags}}`);
}

const COMMA = ascii(',');
const OPEN_LIST = ascii('[');
const CLOSE_LIST = ascii(']');
const END = ascii(',"endTimeUnixNano":');
const STATUS = ascii(',"status":{"code":');
const STATUS_MESSAGE = ascii(',"message":');
const CLOSE_STATUS = ascii('}}');

// Most spans of a service repeat their name, flags and kind: that middle stretch of the span's text is kept
// encoded, bounded like the attribute fragments.
const MAX_CACHED_NAMES = 256;
const heads = new Map<number, Map<string, Uint8Array>>();
const STATUS_BY_CODE = [ascii(',"status":{"code":0}}'), ascii(',"status":{"code":1}}'), ascii(',"status":{"code":2}}')];
const ATTRIBUTES_OPEN = ascii(',"attributes":[');

/** `","flags":…,"name":…,"kind":…,"startTimeUnixNano":`, for one flags, kind and name. */
function middle(w: JsonBytes, flags: number, kind: number, name: string): void {
  const key = flags * 8 + kind;
  let byName = heads.get(key);
  if (byName === undefined) heads.set(key, (byName = new Map()));
  let f = byName.get(name);
  if (f === undefined) {
    f = Buffer.from(`","flags":${flags},"name":${jsonString(name)},"kind":${kind},"startTimeUnixNano":`);
    if (name.length <= MAX_CACHED_LENGTH && byName.size < MAX_CACHED_NAMES) byName.set(name, f);
  }
  w.raw(f);
}

/**
 * One span into `w`. Its ids are our own lowercase hex, written without escaping; the ids go out as one
 * string write, the repeated stretches (name, attribute pairs, status) as cached bytes: on a small machine
 * a native copy costs about what ten characters written one at a time do.
 */
function span(w: JsonBytes, s: PlinthSpan): void {
  w.ids(s.traceId, s.spanId, s.parentSpanId);
  // The api counts SpanKind from INTERNAL = 0; OTLP keeps 0 for UNSPECIFIED.
  middle(w, (s.traceFlags & 0xff) | HAS_IS_REMOTE | (s.parentIsRemote ? IS_REMOTE : 0), s.kind + 1, s.name);
  w.nanos(s.startMs);
  w.raw(END);
  w.nanos(s.endMs);
  w.raw(ATTRIBUTES_OPEN);
  const list = s.attributes;
  for (let i = 0; i < list.length; i += 2) {
    if (i > 0) w.byte(0x2c);
    keyValue(w, list[i] as string, list[i + 1]);
  }
  w.byte(0x5d);
  if (s.droppedAttributes > 0) w.plain(`,"droppedAttributesCount":${s.droppedAttributes}`);
  if (s.events) {
    w.plain(',"events":[');
    for (let i = 0; i < s.events.length; i++) {
      const e = s.events[i]!;
      w.plain(`${i > 0 ? ',' : ''}{"timeUnixNano":`);
      w.nanos(e.timeMs);
      w.plain(',"name":');
      w.string(e.name);
      w.plain(',"attributes":');
      if (e.attributes) keyValues(w, e.attributes);
      else w.plain('[]');
      w.plain('}');
    }
    w.plain(']');
  }
  if (s.droppedEvents > 0) w.plain(`,"droppedEventsCount":${s.droppedEvents}`);
  if (s.links) {
    w.plain(',"links":[');
    for (let i = 0; i < s.links.length; i++) {
      if (i > 0) w.raw(COMMA);
      link(w, s.links[i]!);
    }
    w.plain(']');
  }
  if (s.droppedLinks > 0) w.plain(`,"droppedLinksCount":${s.droppedLinks}`);
  const status = s.statusMessage === undefined ? STATUS_BY_CODE[s.statusCode] : undefined;
  if (status !== undefined) {
    w.raw(status);
    return;
  }
  w.raw(STATUS);
  w.uint(s.statusCode);
  if (s.statusMessage !== undefined) {
    w.raw(STATUS_MESSAGE);
    w.string(s.statusMessage);
  }
  w.raw(CLOSE_STATUS);
}

/** One span as OTLP JSON text. */
export function spanJson(s: PlinthSpan): string {
  const w = new JsonBytes(1024);
  span(w, s);
  return w.bytes().toString('utf8');
}

/** Bytes per span to start the buffer with (a server span with a few attributes takes ~400). */
const SPAN_BYTES_HINT = 640;
/** Spans' worth of buffer a batch starts with; it grows (doubling) past that. */
const START_SPANS = 512;

/**
 * Spans encoded as they end, for one ExportTraceServiceRequest. Encoding at the end of a span rather than
 * when the batch leaves lets the span object die young (a queue of live spans outlives the young
 * generation and goes through the old one) and reads its fields while they are still in cache; what waits
 * for export is bytes. Consecutive spans of one tracer form one run; `bytes` groups the runs by resource
 * (their provider), then by instrumentation scope (their tracer).
 */
export class SpanBatch {
  /** Spans in the batch. */
  count = 0;
  private readonly w: JsonBytes;
  private readonly owners: SpanOwner[] = [];
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];

  constructor(expectedSpans = START_SPANS) {
    this.w = new JsonBytes(SPAN_BYTES_HINT * Math.max(1, Math.min(expectedSpans, START_SPANS)));
  }

  /** Encodes `s` (an ended span) into the batch. If encoding throws, the batch is left as it was. */
  add(s: PlinthSpan): void {
    const w = this.w;
    const before = w.pos;
    const n = this.owners.length;
    const joins = n > 0 && this.owners[n - 1] === s.owner;
    try {
      if (joins) w.byte(0x2c);
      span(w, s);
    } catch (e) {
      w.pos = before;
      throw e;
    }
    if (joins) this.ends[n - 1] = w.pos;
    else {
      this.owners.push(s.owner);
      this.starts.push(before);
      this.ends.push(w.pos);
    }
    this.count++;
  }

  /** The request body as UTF-8 JSON. */
  bytes(): Buffer {
    const byResource = new Map<SpanAttributes, Map<SpanOwner, number[]>>();
    for (let i = 0; i < this.owners.length; i++) {
      const owner = this.owners[i]!;
      let scopes = byResource.get(owner.provider.resource);
      if (!scopes) byResource.set(owner.provider.resource, (scopes = new Map()));
      let runs = scopes.get(owner);
      if (!runs) scopes.set(owner, (runs = []));
      runs.push(i);
    }
    const out = new JsonBytes(1024 + this.w.pos + this.owners.length);
    out.plain('{"resourceSpans":[');
    let firstResource = true;
    for (const [resource, scopes] of byResource) {
      out.plain(firstResource ? '{"resource":{"attributes":' : ',{"resource":{"attributes":');
      firstResource = false;
      objectKeyValues(out, resource);
      out.plain('},"scopeSpans":[');
      let firstScope = true;
      for (const [owner, runs] of scopes) {
        const { name, version } = owner.scope;
        out.plain(firstScope ? '{"scope":{"name":' : ',{"scope":{"name":');
        firstScope = false;
        out.string(name);
        if (version !== undefined) {
          out.plain(',"version":');
          out.string(version);
        }
        out.plain('},"spans":[');
        for (let r = 0; r < runs.length; r++) {
          if (r > 0) out.byte(0x2c);
          const i = runs[r]!;
          this.w.copyTo(out, this.starts[i]!, this.ends[i]!);
        }
        out.plain(']}');
      }
      out.plain(']}');
    }
    out.plain(']}');
    return out.bytes();
  }
}

/**
 * One ExportTraceServiceRequest as UTF-8 JSON: spans grouped by resource (their provider), then by
 * instrumentation scope (their tracer), with repeated attribute pairs cached.
 */
export function tracesJsonBytes(spans: readonly PlinthSpan[]): Buffer {
  const b = new SpanBatch(spans.length);
  for (const s of spans) b.add(s);
  return b.bytes();
}

/** tracesJsonBytes as text. */
export function tracesJson(spans: readonly PlinthSpan[]): string {
  return tracesJsonBytes(spans).toString('utf8');
}
