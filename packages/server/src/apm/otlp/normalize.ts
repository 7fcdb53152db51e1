import { nameError, PlinthError } from '@plinth/core';
import type { AttrValue, Attributes, SpanEvent, SpanKind, SpanRecord, SpanStatus } from '../types.js';

/** How the request arrived: protobufjs messages (bytes ids, Long times) or parsed OTLP/JSON (hex ids, string times). */
export type OtlpEncoding = 'protobuf' | 'json';

/** Per-span limits, applied by truncation: a span over them is kept, shortened, never refused. */
export const OTLP_LIMITS = {
  /** Attributes per span, per event and per resource. */
  attributes: 128,
  /** Characters (UTF-16 units) of a string value, after arrays and maps are flattened to JSON. */
  valueLength: 4096,
  events: 128,
  /** Span and event names, attribute keys and the derived identifiers (endpoint, peer, lane, ...). */
  nameLength: 1024,
} as const;

export interface NormalizedBatch {
  spans: SpanRecord[];
  /** Spans left out as invalid: bad or zero ids, no start time, a namespace Plinth cannot hold. */
  rejected: number;
  /** The first reason, for `partialSuccess.errorMessage`. */
  errorMessage: string | undefined;
}

export const DEFAULT_NAMESPACE = 'default';
export const UNKNOWN_SERVICE = 'unknown_service';

const KINDS: readonly SpanKind[] = ['internal', 'internal', 'server', 'client', 'producer', 'consumer'];
const KIND_NAMES: Record<string, SpanKind> = {
  SPAN_KIND_UNSPECIFIED: 'internal',
  SPAN_KIND_INTERNAL: 'internal',
  SPAN_KIND_SERVER: 'server',
  SPAN_KIND_CLIENT: 'client',
  SPAN_KIND_PRODUCER: 'producer',
  SPAN_KIND_CONSUMER: 'consumer',
};
const STATUSES: readonly SpanStatus[] = ['unset', 'ok', 'error'];
const STATUS_NAMES: Record<string, SpanStatus> = { STATUS_CODE_UNSET: 'unset', STATUS_CODE_OK: 'ok', STATUS_CODE_ERROR: 'error' };

const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);
const HEX32 = /^[0-9a-fA-F]{32}$/;
const HEX16 = /^[0-9a-fA-F]{16}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const UINT = /^\d{1,20}$/;
const INT = /^-?\d{1,20}$/;
/** Nesting kept when an array or map value is flattened to JSON; deeper levels become null. */
const MAX_VALUE_DEPTH = 16;
const TWO_32 = 4294967296;
const DERIVED_KEYS = new Set([
  'http.route',
  'http.request.method',
  'http.method',
  'http.response.status_code',
  'http.status_code',
  'rpc.grpc.status_code',
  'peer.service',
  'db.system.name',
  'db.system',
  'db.namespace',
  'db.name',
  'messaging.system',
  'server.address',
  'net.peer.name',
  'plinth.lane',
  'plinth.stress',
  'plinth.caller',
  'service.namespace',
  'service.name',
  'service.version',
  'cloud.region',
]);

/** The path of the element being read, rendered only when something is wrong with it. */
const enum Level {
  Request,
  Resource,
  Scope,
  Span,
  Event,
}

/** Attribute lists whose keys feed derived fields. */
const enum Role {
  Plain,
  Resource,
  Span,
}

/** protobufjs represents (u)int64 as a long.js Long when that package is present, else as a number. */
interface LongLike {
  low: number;
  high: number;
  toString(): string;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Cuts at a code-unit limit without splitting a surrogate pair. */
export function truncate(s: string, max: number): string {
  if (s.length <= max) return s;
  const c = s.charCodeAt(max - 1);
  return s.slice(0, c >= 0xd800 && c <= 0xdbff ? max - 1 : max);
}

/**
 * OTLP trace request (as protobufjs decoded it, or as parsed JSON) → SpanRecords, in one pass: shapes
 * are checked on the way, so a JSON document of the wrong shape is a 400 naming the field, and a
 * protobuf message (whose shapes the decoder guarantees) pays only a few type checks per span.
 * A class with the walk's state in fields, so the per-attribute work allocates nothing but the values.
 */
class Normalizer {
  private readonly json: boolean;
  private level = Level.Request;
  private ri = 0;
  private si = 0;
  private pi = 0;
  private ei = 0;

  readonly spans: SpanRecord[] = [];
  rejected = 0;
  errorMessage: string | undefined;

  // Resource-derived, set per ResourceSpans.
  private namespace = DEFAULT_NAMESPACE;
  private service = UNKNOWN_SERVICE;
  private version: string | undefined;
  private region: string | undefined;

  // Span-attribute-derived, reset per span.
  private method: string | undefined;
  private route: string | undefined;
  private httpStatus: number | undefined;
  private grpcStatus: number | undefined;
  private peerService: string | undefined;
  private dbSystem: string | undefined;
  private dbNamespace: string | undefined;
  private messagingSystem: string | undefined;
  private serverAddress: string | undefined;
  private netPeerName: string | undefined;
  private lane: string | undefined;
  private stress = false;
  private caller: string | undefined;

  // Scratch of the last time read: whole milliseconds and the nanoseconds past them, both exact.
  private tMs = 0;
  private tNs = 0;
  /** How many attributes the last `attributes` call kept. */
  private stored = 0;

  constructor(encoding: OtlpEncoding) {
    this.json = encoding === 'json';
  }

  run(req: unknown): void {
    if (!isObj(req)) throw new PlinthError('MALFORMED_BODY', 'the body must be an ExportTraceServiceRequest object');
    const list = this.list(req.resourceSpans, 'resourceSpans');
    for (let i = 0; i < list.length; i++) {
      this.ri = i;
      this.level = Level.Request;
      this.resourceSpans(list[i]);
    }
  }

  private path(): string {
    const base = `resourceSpans[${this.ri}]`;
    switch (this.level) {
      case Level.Request:
        return base;
      case Level.Resource:
        return `${base}.resource`;
      case Level.Scope:
        return `${base}.scopeSpans[${this.si}]`;
      case Level.Span:
        return `${base}.scopeSpans[${this.si}].spans[${this.pi}]`;
      case Level.Event:
        return `${base}.scopeSpans[${this.si}].spans[${this.pi}].events[${this.ei}]`;
    }
  }

  private fail(field: string, expected: string): never {
    const at = this.level === Level.Request && field === 'resourceSpans' ? field : field === '' ? this.path() : `${this.path()}.${field}`;
    throw new PlinthError('MALFORMED_BODY', `${at}: expected ${expected}`);
  }

  private reject(field: string, why: string, count = 1): void {
    this.rejected += count;
    this.errorMessage ??= `${this.path()}${field ? '.' + field : ''}: ${why}`;
  }

  /** A repeated field: absent and null are empty. */
  private list(v: unknown, field: string): readonly unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, 'an array');
    return v;
  }

  private obj(v: unknown, field: string): Obj | undefined {
    if (v === undefined || v === null) return undefined;
    if (!isObj(v)) this.fail(field, 'an object');
    return v;
  }

  private str(v: unknown, field: string): string {
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') this.fail(field, 'a string');
    return v;
  }

  private resourceSpans(rsv: unknown): void {
    if (!isObj(rsv)) this.fail('', 'a ResourceSpans object');
    this.level = Level.Resource;
    const resource = this.obj(rsv.resource, 'resource');
    this.namespace = DEFAULT_NAMESPACE;
    this.service = UNKNOWN_SERVICE;
    this.version = undefined;
    this.region = undefined;
    const resourceAttrs = resource ? this.attributes(resource.attributes, Role.Resource) : {};
    this.level = Level.Request;
    const scopes = this.list(rsv.scopeSpans, 'scopeSpans');

    const nsError = this.namespace === DEFAULT_NAMESPACE ? undefined : nameError(this.namespace, 'namespace');
    if (nsError) {
      let count = 0;
      for (const s of scopes) if (isObj(s) && Array.isArray(s.spans)) count += s.spans.length;
      this.level = Level.Resource;
      if (count > 0) this.reject('attributes', `service.namespace ${JSON.stringify(truncate(this.namespace, 100))} is not a Plinth namespace (${nsError})`, count);
      return;
    }

    for (let j = 0; j < scopes.length; j++) {
      this.si = j;
      this.level = Level.Scope;
      const ss = scopes[j];
      if (!isObj(ss)) this.fail('', 'a ScopeSpans object');
      const scope = this.obj(ss.scope, 'scope');
      const scopeName = scope ? truncate(this.str(scope.name, 'scope.name'), OTLP_LIMITS.nameLength) : '';
      const scopeVersion = scope ? truncate(this.str(scope.version, 'scope.version'), OTLP_LIMITS.nameLength) : '';
      const spans = this.list(ss.spans, 'spans');
      for (let k = 0; k < spans.length; k++) {
        this.pi = k;
        this.level = Level.Span;
        const rec = this.span(spans[k], resourceAttrs, scopeName, scopeVersion);
        if (rec) this.spans.push(rec);
      }
    }
  }

  private span(sv: unknown, resource: Attributes, scopeName: string, scopeVersion: string): SpanRecord | undefined {
    if (!isObj(sv)) this.fail('', 'a Span object');
    const traceId = this.id(sv.traceId, 'traceId', 16);
    if (traceId === undefined) return undefined;
    const spanId = this.id(sv.spanId, 'spanId', 8);
    if (spanId === undefined) return undefined;
    if (traceId === '' || spanId === '') {
      this.reject(traceId === '' ? 'traceId' : 'spanId', 'an all-zero id is invalid');
      return undefined;
    }
    const parent = sv.parentSpanId;
    let parentSpanId: string | undefined;
    if (parent !== undefined && parent !== null && (this.json ? parent !== '' : (parent as Uint8Array).length !== 0)) {
      const p = this.id(parent, 'parentSpanId', 8);
      if (p === undefined) return undefined;
      // All zeros is how some SDKs say "root".
      if (p !== '') parentSpanId = p;
    }

    if (!this.time(sv.startTimeUnixNano, 'startTimeUnixNano')) {
      this.reject('startTimeUnixNano', 'a span needs a start time');
      return undefined;
    }
    const startWhole = this.tMs;
    const startNs = this.tNs;
    let durationMs = 0;
    if (this.time(sv.endTimeUnixNano, 'endTimeUnixNano')) {
      durationMs = this.tMs - startWhole + (this.tNs - startNs) / 1e6;
      if (durationMs < 0) durationMs = 0;
    }

    const name = truncate(this.str(sv.name, 'name'), OTLP_LIMITS.nameLength);
    const kind = this.kind(sv.kind);

    this.method = undefined;
    this.route = undefined;
    this.httpStatus = undefined;
    this.grpcStatus = undefined;
    this.peerService = undefined;
    this.dbSystem = undefined;
    this.dbNamespace = undefined;
    this.messagingSystem = undefined;
    this.serverAddress = undefined;
    this.netPeerName = undefined;
    this.lane = undefined;
    this.stress = false;
    this.caller = undefined;
    const attributes = this.attributes(sv.attributes, Role.Span);
    // The model has no field for the instrumentation scope; OpenTelemetry's Zipkin and Jaeger mappings keep it under these keys.
    if (scopeName && this.stored < OTLP_LIMITS.attributes && attributes['otel.scope.name'] === undefined) {
      attributes['otel.scope.name'] = scopeName;
      this.stored++;
    }
    if (scopeVersion && this.stored < OTLP_LIMITS.attributes && attributes['otel.scope.version'] === undefined) attributes['otel.scope.version'] = scopeVersion;

    let status: SpanStatus = 'unset';
    let statusMessage: string | undefined;
    const st = this.obj(sv.status, 'status');
    if (st) {
      status = this.statusCode(st.code);
      const m = this.str(st.message, 'status.message');
      if (m) statusMessage = truncate(m, OTLP_LIMITS.valueLength);
    }

    const eventList = this.list(sv.events, 'events');
    const events: SpanEvent[] = [];
    const nEvents = Math.min(eventList.length, OTLP_LIMITS.events);
    for (let e = 0; e < nEvents; e++) {
      this.ei = e;
      this.level = Level.Event;
      const ev = eventList[e];
      if (!isObj(ev)) this.fail('', 'an Event object');
      const at = this.time(ev.timeUnixNano, 'timeUnixNano') ? this.tMs + this.tNs / 1e6 : startWhole + startNs / 1e6;
      events.push({ timeMs: at, name: truncate(this.str(ev.name, 'name'), OTLP_LIMITS.nameLength), attributes: this.attributes(ev.attributes, Role.Plain) });
    }
    this.level = Level.Span;

    let endpoint: string | undefined;
    let peer: string | undefined;
    if (kind === 'server' || kind === 'consumer') {
      endpoint = this.method !== undefined && this.route !== undefined ? truncate(`${this.method} ${this.route}`, OTLP_LIMITS.nameLength) : name;
    } else if (kind === 'client' || kind === 'producer') {
      peer =
        this.peerService ??
        (this.dbSystem !== undefined ? (this.dbNamespace !== undefined ? truncate(`${this.dbSystem}/${this.dbNamespace}`, OTLP_LIMITS.nameLength) : this.dbSystem) : undefined) ??
        this.messagingSystem ??
        this.serverAddress ??
        this.netPeerName;
    }

    return {
      namespace: this.namespace,
      traceId,
      spanId,
      parentSpanId,
      service: this.service,
      version: this.version,
      name,
      kind,
      startMs: startWhole + startNs / 1e6,
      durationMs,
      status,
      statusMessage,
      endpoint,
      peer,
      httpStatus: this.httpStatus,
      grpcStatus: this.grpcStatus,
      lane: this.lane,
      stress: this.stress,
      region: this.region,
      caller: kind === 'server' ? this.caller : undefined,
      attributes,
      resource,
      events,
    };
  }

  /** An id as lowercase hex; '' when all zeros; undefined when invalid (the span is then counted as rejected). */
  private id(v: unknown, field: string, bytes: 16 | 8): string | undefined {
    let hex: string;
    if (this.json) {
      if (typeof v !== 'string') {
        if (v === undefined || v === null) {
          this.reject(field, 'missing');
          return undefined;
        }
        this.fail(field, 'a hex string');
      }
      if ((bytes === 16 ? HEX32 : HEX16).test(v)) hex = v.toLowerCase();
      else if (v.length === (bytes === 16 ? 24 : 12) && BASE64.test(v) && Buffer.byteLength(v, 'base64') === bytes) {
        // The protobuf JSON mapping's base64, which some exporters send despite OTLP's hex rule; unambiguous by length.
        hex = Buffer.from(v, 'base64').toString('hex');
      } else return this.badId(field, bytes);
    } else {
      const b = v as Uint8Array;
      if (!(b instanceof Uint8Array) || b.length !== bytes) return this.badId(field, bytes);
      hex = (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)).toString('hex');
    }
    return hex === (bytes === 16 ? ZERO_TRACE : ZERO_SPAN) ? '' : hex;
  }

  private badId(field: string, bytes: number): undefined {
    this.reject(field, `expected ${bytes} bytes (${bytes * 2} hex digits)`);
    return undefined;
  }

  /** Reads a uint64 nanosecond time into tMs/tNs exactly; false when absent or zero. */
  private time(v: unknown, field: string): boolean {
    if (v === undefined || v === null) return false;
    if (typeof v === 'object') {
      if (this.json) this.fail(field, 'nanoseconds as a decimal string or a number');
      const l = v as LongLike;
      const hi = l.high >>> 0;
      const lo = l.low >>> 0;
      if (hi === 0 && lo === 0) return false;
      // ns = hi·2³² + lo exceeds 2⁵³; split hi so every intermediate stays an exact integer.
      const hq = Math.floor(hi / 1e6);
      const x = (hi - hq * 1e6) * TWO_32 + lo;
      const rem = x % 1e6;
      this.tMs = hq * TWO_32 + (x - rem) / 1e6;
      this.tNs = rem;
      return true;
    }
    if (typeof v === 'number') {
      if (!(v >= 0) || !Number.isFinite(v)) this.fail(field, 'a non-negative number of nanoseconds');
      if (v === 0) return false;
      const ms = Math.floor(v / 1e6);
      const rem = v - ms * 1e6;
      this.tMs = ms;
      this.tNs = rem < 0 ? 0 : rem;
      return true;
    }
    if (typeof v === 'string' && this.json && UINT.test(v)) {
      const n = v.length;
      this.tMs = n > 6 ? Number(v.slice(0, n - 6)) : 0;
      this.tNs = Number(n > 6 ? v.slice(n - 6) : v);
      return this.tMs !== 0 || this.tNs !== 0;
    }
    return this.fail(field, 'nanoseconds as a decimal string or a number');
  }

  private kind(v: unknown): SpanKind {
    if (typeof v === 'number') return KINDS[v] ?? 'internal';
    if (v === undefined || v === null) return 'internal';
    // OTLP/JSON mandates integers; the proto3 names cost nothing to accept.
    if (typeof v === 'string' && this.json) return KIND_NAMES[v] ?? (/^\d{1,2}$/.test(v) ? (KINDS[Number(v)] ?? 'internal') : this.fail('kind', 'a SpanKind integer (0-5)'));
    return this.fail('kind', 'a SpanKind integer (0-5)');
  }

  private statusCode(v: unknown): SpanStatus {
    if (typeof v === 'number') return STATUSES[v] ?? 'unset';
    if (v === undefined || v === null) return 'unset';
    if (typeof v === 'string' && this.json) return STATUS_NAMES[v] ?? (/^\d{1,2}$/.test(v) ? (STATUSES[Number(v)] ?? 'unset') : this.fail('status.code', 'a StatusCode integer (0-2)'));
    return this.fail('status.code', 'a StatusCode integer (0-2)');
  }

  /** A KeyValue list → flat attributes (the first 128), and, by role, the fields derived from them. */
  private attributes(v: unknown, role: Role): Attributes {
    const out: Attributes = {};
    const list = this.list(v, 'attributes');
    let stored = 0;
    this.stored = 0;
    for (let i = 0; i < list.length; i++) {
      const kv = list[i];
      if (!isObj(kv)) this.fail(`attributes[${i}]`, 'a KeyValue object');
      const rawKey = kv.key;
      if (typeof rawKey !== 'string') {
        if (rawKey === undefined || rawKey === null) continue;
        this.fail(`attributes[${i}].key`, 'a string');
      }
      if (rawKey === '') continue;
      const value = this.value(kv.value, i, 0);
      if (value === undefined) continue;
      // One hash lookup instead of a dozen string compares per attribute.
      if (role !== Role.Plain && DERIVED_KEYS.has(rawKey)) {
        if (role === Role.Span) this.deriveSpan(rawKey, value);
        else this.deriveResource(rawKey, value);
      }
      if (stored >= OTLP_LIMITS.attributes) continue;
      stored++;
      const key = truncate(rawKey, OTLP_LIMITS.nameLength);
      // '__proto__' is a legal attribute key; plain assignment would hit the prototype setter.
      if (key === '__proto__') Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      else out[key] = value;
    }
    this.stored = stored;
    return out;
  }

  private deriveSpan(key: string, v: AttrValue): void {
    switch (key) {
      case 'http.route':
        this.route = ident(v);
        break;
      case 'http.request.method':
        this.method = ident(v);
        break;
      case 'http.method':
        this.method ??= ident(v);
        break;
      case 'http.response.status_code':
        this.httpStatus = statusNumber(v) ?? this.httpStatus;
        break;
      case 'http.status_code':
        this.httpStatus ??= statusNumber(v);
        break;
      case 'rpc.grpc.status_code':
        this.grpcStatus = statusNumber(v);
        break;
      case 'peer.service':
        this.peerService = ident(v);
        break;
      case 'db.system.name':
        this.dbSystem = ident(v);
        break;
      case 'db.system':
        this.dbSystem ??= ident(v);
        break;
      case 'db.namespace':
        this.dbNamespace = ident(v);
        break;
      case 'db.name':
        this.dbNamespace ??= ident(v);
        break;
      case 'messaging.system':
        this.messagingSystem = ident(v);
        break;
      case 'server.address':
        this.serverAddress = ident(v);
        break;
      case 'net.peer.name':
        this.netPeerName = ident(v);
        break;
      case 'plinth.lane':
        this.lane = ident(v);
        break;
      case 'plinth.stress':
        this.stress = v === true || v === 1 || (typeof v === 'string' && (v === '1' || v.toLowerCase() === 'true'));
        break;
      case 'plinth.caller':
        this.caller = ident(v);
        break;
    }
  }

  private deriveResource(key: string, v: AttrValue): void {
    switch (key) {
      case 'service.namespace':
        this.namespace = ident(v) ?? DEFAULT_NAMESPACE;
        break;
      case 'service.name':
        this.service = ident(v) ?? UNKNOWN_SERVICE;
        break;
      case 'service.version':
        this.version = ident(v);
        break;
      case 'cloud.region':
        this.region = ident(v);
        break;
    }
  }

  /** An AnyValue → a stored value; undefined for an empty one. */
  private value(v: unknown, index: number, depth: number): AttrValue | undefined {
    if (v === undefined || v === null) return undefined;
    if (!this.json) {
      const a = v as Obj;
      switch (a.value) {
        case 'stringValue':
          return truncate(a.stringValue as string, OTLP_LIMITS.valueLength);
        case 'boolValue':
          return a.boolValue as boolean;
        case 'intValue':
          return longValue(a.intValue);
        case 'doubleValue':
          return finite(a.doubleValue as number);
        case 'bytesValue':
          return truncate(bytesToBase64(a.bytesValue as Uint8Array), OTLP_LIMITS.valueLength);
        case 'arrayValue':
        case 'kvlistValue':
          return truncate(JSON.stringify(this.plain(v, index, depth)), OTLP_LIMITS.valueLength);
        default:
          return undefined;
      }
    }
    if (!isObj(v)) this.fail(`attributes[${index}].value`, 'an AnyValue object');
    if (v.stringValue != null) {
      if (typeof v.stringValue !== 'string') this.fail(`attributes[${index}].value.stringValue`, 'a string');
      return truncate(v.stringValue, OTLP_LIMITS.valueLength);
    }
    if (v.boolValue != null) {
      if (typeof v.boolValue !== 'boolean') this.fail(`attributes[${index}].value.boolValue`, 'a boolean');
      return v.boolValue;
    }
    if (v.intValue != null) {
      const n = v.intValue;
      if (typeof n === 'number' && Number.isInteger(n)) return n;
      if (typeof n === 'string' && INT.test(n)) {
        const x = Number(n);
        return Number.isSafeInteger(x) ? x : n;
      }
      return this.fail(`attributes[${index}].value.intValue`, 'an integer or a decimal string');
    }
    if (v.doubleValue != null) {
      const d = v.doubleValue;
      if (typeof d === 'number') return d;
      if (d === 'NaN' || d === 'Infinity' || d === '-Infinity') return d;
      // proto3 JSON accepts doubles as strings too.
      if (typeof d === 'string' && d.trim() !== '' && Number.isFinite(Number(d))) return Number(d);
      return this.fail(`attributes[${index}].value.doubleValue`, 'a number');
    }
    if (v.arrayValue != null || v.kvlistValue != null) {
      return truncate(JSON.stringify(this.plain(v, index, depth)), OTLP_LIMITS.valueLength);
    }
    if (v.bytesValue != null) {
      if (typeof v.bytesValue !== 'string' || (v.bytesValue !== '' && !BASE64.test(v.bytesValue))) this.fail(`attributes[${index}].value.bytesValue`, 'a base64 string');
      return truncate(v.bytesValue, OTLP_LIMITS.valueLength);
    }
    return undefined;
  }

  /** An AnyValue → a JSON-able value, for flattening arrays and maps. */
  private plain(v: unknown, index: number, depth: number): unknown {
    if (v === undefined || v === null) return null;
    if (depth >= MAX_VALUE_DEPTH) return null;
    const a = v as Obj;
    const isArray = this.json ? a.arrayValue != null : a.value === 'arrayValue';
    const isMap = !isArray && (this.json ? a.kvlistValue != null : a.value === 'kvlistValue');
    if (!isArray && !isMap) return this.value(v, index, depth + 1) ?? null;
    const inner = isArray ? a.arrayValue : a.kvlistValue;
    if (!isObj(inner)) return this.fail(`attributes[${index}].value`, 'arrayValue/kvlistValue to be an object');
    const values = inner.values;
    if (values !== undefined && values !== null && !Array.isArray(values)) this.fail(`attributes[${index}].value`, 'values to be an array');
    const items = (values ?? []) as readonly unknown[];
    if (isArray) {
      const out: unknown[] = new Array<unknown>(items.length);
      for (let i = 0; i < items.length; i++) out[i] = this.plain(items[i], index, depth + 1);
      return out;
    }
    const out = Object.create(null) as Record<string, unknown>;
    for (const kv of items) {
      if (!isObj(kv) || typeof kv.key !== 'string') this.fail(`attributes[${index}].value.kvlistValue.values`, 'KeyValue objects');
      out[kv.key] = this.plain(kv.value, index, depth + 1);
    }
    return out;
  }
}

/** A derived identifier: primitives as strings, capped; empty is absent. */
function ident(v: AttrValue): string | undefined {
  const s = typeof v === 'string' ? v : String(v);
  return s === '' ? undefined : truncate(s, OTLP_LIMITS.nameLength);
}

function statusNumber(v: AttrValue): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,3}$/.test(v) ? Number(v) : NaN;
  return Number.isInteger(n) && n >= 0 && n <= 999 ? n : undefined;
}

function longValue(v: unknown): AttrValue {
  if (typeof v === 'number') return v;
  const l = v as LongLike;
  const n = l.high * TWO_32 + (l.low >>> 0);
  return Number.isSafeInteger(n) ? n : l.toString();
}

/** NaN and infinities are not numbers a store or JSON can hold; their proto3 JSON spellings are. */
function finite(d: number): AttrValue {
  return Number.isFinite(d) ? d : String(d);
}

function bytesToBase64(b: Uint8Array): string {
  return (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)).toString('base64');
}

/**
 * Normalizes a decoded OTLP ExportTraceServiceRequest. Throws MALFORMED_BODY (400) when the document does
 * not have the OTLP shape; spans that are well-formed but invalid are left out and counted in `rejected`.
 */
export function normalizeTraces(request: unknown, encoding: OtlpEncoding): NormalizedBatch {
  const n = new Normalizer(encoding);
  n.run(request);
  return { spans: n.spans, rejected: n.rejected, errorMessage: n.errorMessage };
}
