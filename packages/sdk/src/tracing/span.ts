import {
  SpanStatusCode,
  type Exception,
  type HrTime,
  type Link,
  type Span,
  type SpanAttributes,
  type SpanAttributeValue,
  type SpanContext,
  type SpanKind,
  type SpanStatus,
  type TimeInput,
} from '@opentelemetry/api';

/** Bounds per span, so a runaway loop over setAttribute or addEvent cannot grow one span without limit. */
export const MAX_ATTRIBUTES = 128;
export const MAX_EVENTS = 128;
export const MAX_LINKS = 128;

const TIME_ORIGIN = performance.timeOrigin;

/** Wall-clock epoch milliseconds with sub-millisecond precision, from the monotonic clock. */
export function nowMs(): number {
  return TIME_ORIGIN + performance.now();
}

/** The api's TimeInput as epoch ms. A number below the time origin is a `performance.now()` reading, as in the OTel SDK. */
export function toEpochMs(t: TimeInput): number {
  if (typeof t === 'number') return t < TIME_ORIGIN ? TIME_ORIGIN + t : t;
  if (t instanceof Date) return t.getTime();
  const hr = t as HrTime;
  return hr[0] * 1000 + hr[1] / 1e6;
}

function isTimeInput(v: unknown): v is TimeInput {
  return typeof v === 'number' || v instanceof Date || (Array.isArray(v) && v.length === 2 && typeof v[0] === 'number');
}

/** Attributes as a flat [key, value, key, value, ...] list: one array per span, and no `__proto__` key hazard. */
export type AttributeList = (string | SpanAttributeValue)[];

/** Sets or replaces `key` in a flat list; false when the list is full and the key is new. */
export function setAttribute(list: AttributeList, key: string, value: SpanAttributeValue | undefined): boolean {
  if (value === undefined || value === null) return true;
  for (let i = 0; i < list.length; i += 2) {
    if (list[i] === key) {
      list[i + 1] = value;
      return true;
    }
  }
  if (list.length >= MAX_ATTRIBUTES * 2) return false;
  list.push(key, value);
  return true;
}

export function attributeList(attributes: SpanAttributes | undefined): AttributeList {
  const list: AttributeList = [];
  if (attributes) for (const k of Object.keys(attributes)) setAttribute(list, k, attributes[k]);
  return list;
}

export interface SpanEvent {
  readonly name: string;
  readonly timeMs: number;
  readonly attributes: AttributeList | undefined;
}

/** Where a span goes when it ends; the tracer decides, given the sampling decision. */
export interface SpanOwner {
  onEnd(span: PlinthSpan): void;
  /** Epoch ms, for end times and events (tests replace the clock). */
  now(): number;
  /** The instrumentation scope and resource the span is exported under. */
  readonly scope: { readonly name: string; readonly version: string | undefined };
  readonly provider: { readonly resource: SpanAttributes };
}

/**
 * A recorded span: one object, its attributes in one array; events and links only allocated when used.
 * `deferred` marks a span recorded without being head-sampled (its context says "not sampled"), kept at
 * its end only when it failed or was slow.
 */
export class PlinthSpan implements Span {
  readonly attributes: AttributeList;
  droppedAttributes = 0;
  events: SpanEvent[] | undefined;
  links: Link[] | undefined;
  droppedEvents = 0;
  droppedLinks = 0;
  statusCode: SpanStatusCode = SpanStatusCode.UNSET;
  statusMessage: string | undefined;
  /** Epoch ms; NaN until ended. */
  endMs = Number.NaN;
  private context: SpanContext | undefined;

  constructor(
    readonly owner: SpanOwner,
    public name: string,
    readonly kind: SpanKind,
    readonly traceId: string,
    readonly spanId: string,
    readonly traceFlags: number,
    readonly parentSpanId: string | undefined,
    readonly parentIsRemote: boolean,
    readonly deferred: boolean,
    readonly startMs: number,
    attributes: AttributeList,
  ) {
    this.attributes = attributes;
  }

  get ended(): boolean {
    return this.endMs === this.endMs;
  }

  get durationMs(): number {
    return this.endMs - this.startMs;
  }

  /** The value of one attribute (for the keep rule and for tests). */
  attribute(key: string): SpanAttributeValue | undefined {
    const list = this.attributes;
    for (let i = 0; i < list.length; i += 2) if (list[i] === key) return list[i + 1] as SpanAttributeValue;
    return undefined;
  }

  spanContext(): SpanContext {
    return (this.context ??= { traceId: this.traceId, spanId: this.spanId, traceFlags: this.traceFlags, isRemote: false });
  }

  setAttribute(key: string, value: SpanAttributeValue): this {
    if (!this.ended && !setAttribute(this.attributes, key, value)) this.droppedAttributes++;
    return this;
  }

  setAttributes(attributes: SpanAttributes): this {
    if (!this.ended) for (const k of Object.keys(attributes)) if (!setAttribute(this.attributes, k, attributes[k])) this.droppedAttributes++;
    return this;
  }

  addEvent(name: string, attributesOrStartTime?: SpanAttributes | TimeInput, startTime?: TimeInput): this {
    if (this.ended) return this;
    const events = (this.events ??= []);
    if (events.length >= MAX_EVENTS) {
      this.droppedEvents++;
      return this;
    }
    let attrs: SpanAttributes | undefined;
    let time = startTime;
    if (isTimeInput(attributesOrStartTime)) time = attributesOrStartTime;
    else attrs = attributesOrStartTime;
    events.push({ name, timeMs: time === undefined ? this.owner.now() : toEpochMs(time), attributes: attrs ? attributeList(attrs) : undefined });
    return this;
  }

  addLink(link: Link): this {
    if (this.ended) return this;
    const links = (this.links ??= []);
    if (links.length >= MAX_LINKS) this.droppedLinks++;
    else links.push(link);
    return this;
  }

  addLinks(links: Link[]): this {
    for (const l of links) this.addLink(l);
    return this;
  }

  /** As the api says: OK is final, UNSET changes nothing, a message belongs to ERROR only. */
  setStatus(status: SpanStatus): this {
    if (this.ended || this.statusCode === SpanStatusCode.OK || status.code === SpanStatusCode.UNSET) return this;
    this.statusCode = status.code;
    this.statusMessage = status.code === SpanStatusCode.ERROR ? status.message : undefined;
    return this;
  }

  updateName(name: string): this {
    if (!this.ended) this.name = name;
    return this;
  }

  end(endTime?: TimeInput): void {
    if (this.ended) return;
    const end = endTime === undefined ? this.owner.now() : toEpochMs(endTime);
    this.endMs = end < this.startMs ? this.startMs : end;
    this.owner.onEnd(this);
  }

  isRecording(): boolean {
    return !this.ended;
  }

  /** An `exception` event with the semantic-convention attributes; the span's status is the caller's to set. */
  recordException(exception: Exception, time?: TimeInput): void {
    const attrs: SpanAttributes = {};
    if (typeof exception === 'string') {
      attrs['exception.message'] = exception;
    } else {
      const type = exception.name ?? (exception.code === undefined ? undefined : String(exception.code));
      if (type !== undefined) attrs['exception.type'] = type;
      if (exception.message !== undefined) attrs['exception.message'] = exception.message;
      if (exception.stack !== undefined) attrs['exception.stacktrace'] = exception.stack;
    }
    this.addEvent('exception', attrs, time);
  }
}

/**
 * A span that records nothing and only carries its context: what a dropped or propagation-only span is.
 * The api's `trace.wrapSpanContext` makes the same; our own class lets the hooks recognise it as valid
 * without re-checking its ids.
 */
export class ContextSpan implements Span {
  private readonly context: SpanContext;

  constructor(traceId: string, spanId: string, traceFlags: number) {
    this.context = { traceId, spanId, traceFlags };
  }

  spanContext(): SpanContext {
    return this.context;
  }
  setAttribute(): this {
    return this;
  }
  setAttributes(): this {
    return this;
  }
  addEvent(): this {
    return this;
  }
  addLink(): this {
    return this;
  }
  addLinks(): this {
    return this;
  }
  setStatus(): this {
    return this;
  }
  updateName(): this {
    return this;
  }
  end(): void {}
  isRecording(): boolean {
    return false;
  }
  recordException(): void {}
}
