import { setTimeout as sleepFor } from 'node:timers/promises';
import { promisify } from 'node:util';
import { constants as zlib, gzip as gzipCb } from 'node:zlib';
import { Counter, Gauge, type Registry } from 'prom-client';
import { request, type Dispatcher } from 'undici';
import { defaultLogger, errorMessage, type Logger } from '../logger.js';
import { TRACING_EXPORT_FAILED, TRACING_INVALID_OPTION, TracingError } from './errors.js';
import { SpanBatch } from './otlp-json.js';
import type { PlinthSpan } from './span.js';
import type { SpanSink } from './tracer.js';

const gzip = promisify(gzipCb);

/** Something that yields the whole `Authorization` value; the SDK's TokenSource is one. */
export interface AuthorizationSource {
  authorization(): Promise<string>;
  /** After a 401: get a fresh token; true when the request is worth repeating. */
  renew?(): Promise<boolean>;
}

/** A bearer token, a function returning one, or an AuthorizationSource. */
export type ExporterToken = string | (() => string | Promise<string>) | AuthorizationSource;

export interface OtlpExporterOptions {
  /** The collector's base URL (Plinth's server); spans go to `{url}/v1/traces`. */
  url: string;
  token?: ExporterToken;
  /** Spans waiting for export at most; past it new spans are dropped and counted. Default 2048. */
  maxQueueSize?: number;
  /** Spans per request; a full batch is sent at once rather than at the next tick. Default 512. */
  maxBatchSize?: number;
  /** How often a partial batch is sent. Default 1000 ms. */
  flushMs?: number;
  /** Attempts per batch, the first included. Default 5. */
  maxAttempts?: number;
  /** Cap on one wait between attempts, Retry-After included. Default 30 s. */
  maxRetryDelayMs?: number;
  /** Bound on waiting for the answer's headers and between body chunks. Default 10 s. */
  timeoutMs?: number;
  /**
   * Default `none`, as OpenTelemetry's exporters: the collector is usually Plinth's server in the same
   * cluster or a local agent, where bytes are cheap and gzip's ~4 µs per span would be paid on the service's
   * own core (zlib's thread competes with it on a small machine). `gzip` (level 1) for a collector across
   * a metered or slow link: span JSON shrinks to about a tenth.
   */
  compression?: 'gzip' | 'none';
  dispatcher?: Dispatcher;
  /** Counters `plinth_tracing_spans_{exported,dropped,failed}_total` and the queue gauge are registered here. */
  registry?: Registry;
  logger?: Logger;
  /** The wait between attempts (tests observe it instead of waiting); rejects when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

const RETRYABLE = new Set([429, 502, 503, 504]);
const WARN_EVERY_MS = 60_000;

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!(Number.isFinite(v) && v > 0)) throw new TracingError(TRACING_INVALID_OPTION, `OtlpExporter: ${name} must be a positive number, got ${v}`);
  return v;
}

/** Retry-After as ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(header: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined || v.trim() === '') return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

type Outcome = { ok: true; rejected: number } | { ok: false; error: TracingError };

/**
 * Ships ended spans to an OTLP/HTTP collector as JSON: `enqueue` encodes the span into the batch being
 * filled (bounded: full → drop and count, never wait), one unref'd interval per exporter sends what
 * gathered, and a full batch is sent on the next turn of the event loop. What waits is bytes, not span
 * objects (see SpanBatch). One request is in flight at a time; while a
 * collector is slow or down, the queue bound is what limits memory.
 */
export class OtlpExporter implements SpanSink {
  readonly endpoint: string;
  /** Full batches waiting, oldest first, then the one being filled. */
  private full: SpanBatch[] = [];
  private filling: SpanBatch | undefined;
  private queuedCount = 0;
  private readonly maxQueue: number;
  private readonly maxBatch: number;
  private readonly flushMs: number;
  private readonly maxAttempts: number;
  private readonly maxDelay: number;
  private readonly timeoutMs: number;
  private readonly gzip: boolean;
  private readonly log: Logger;
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  private readonly stop = new AbortController();
  private interval: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private immediate = false;
  private closed = false;
  private lastWarnAt = Number.NEGATIVE_INFINITY;
  private exportedCount = 0;
  private droppedCount = 0;
  private failedCount = 0;
  private readonly metrics: { exported: Counter; dropped: Counter; failed: Counter } | undefined;

  constructor(private readonly o: OtlpExporterOptions) {
    if (typeof o.url !== 'string' || !/^https?:\/\//.test(o.url)) throw new TracingError(TRACING_INVALID_OPTION, `OtlpExporter: url must be http(s), got ${String(o.url)}`);
    const base = o.url.replace(/\/+$/, '');
    this.endpoint = base.endsWith('/v1/traces') ? base : `${base}/v1/traces`;
    this.maxQueue = positive('maxQueueSize', o.maxQueueSize, 2048);
    this.maxBatch = positive('maxBatchSize', o.maxBatchSize, 512);
    this.flushMs = positive('flushMs', o.flushMs, 1000);
    this.maxAttempts = positive('maxAttempts', o.maxAttempts, 5);
    this.maxDelay = positive('maxRetryDelayMs', o.maxRetryDelayMs, 30_000);
    this.timeoutMs = positive('timeoutMs', o.timeoutMs, 10_000);
    this.gzip = o.compression === 'gzip';
    this.log = o.logger ?? defaultLogger;
    this.sleep = o.sleep ?? ((ms, signal) => sleepFor(ms, undefined, { signal }));
    if (o.registry) {
      const registers = [o.registry];
      this.metrics = {
        exported: new Counter({ name: 'plinth_tracing_spans_exported_total', help: 'Spans the collector accepted', registers }),
        dropped: new Counter({ name: 'plinth_tracing_spans_dropped_total', help: 'Spans dropped because the export queue was full or closed', registers }),
        failed: new Counter({ name: 'plinth_tracing_spans_failed_total', help: 'Spans in batches the collector refused, or that could not be delivered', registers }),
      };
      const queue = () => this.queuedCount;
      new Gauge({
        name: 'plinth_tracing_queue_spans',
        help: 'Spans waiting for export',
        registers,
        collect() {
          this.set(queue());
        },
      });
    }
  }

  /** Spans the collector accepted. */
  get exported(): number {
    return this.exportedCount;
  }

  /** Spans not queued because the queue was full (or the exporter shut down). */
  get dropped(): number {
    return this.droppedCount;
  }

  /** Spans in batches that could not be delivered or were refused (partial rejections included). */
  get failed(): number {
    return this.failedCount;
  }

  /** Spans waiting. */
  get queued(): number {
    return this.queuedCount;
  }

  enqueue(span: PlinthSpan): void {
    if (this.closed || this.queuedCount >= this.maxQueue) {
      this.drop();
      return;
    }
    const batch = (this.filling ??= new SpanBatch(this.maxBatch));
    try {
      batch.add(span);
    } catch (e) {
      // Ended on the request path: a span that cannot be encoded is dropped, never thrown at the handler.
      this.drop();
      this.countFailed(0, new TracingError(TRACING_EXPORT_FAILED, `could not encode a span: ${errorMessage(e)}`, { cause: e }));
      return;
    }
    this.queuedCount++;
    if (batch.count >= this.maxBatch) {
      this.full.push(batch);
      this.filling = undefined;
    }
    if (this.interval === undefined) {
      // Started with the first span, so a tracer that never records keeps no timer.
      this.interval = setInterval(() => void this.kick(), this.flushMs);
      this.interval.unref();
    }
    if (this.full.length > 0 && !this.immediate && this.draining === undefined) {
      this.immediate = true;
      setImmediate(() => {
        this.immediate = false;
        void this.kick();
      });
    }
  }

  private drop(): void {
    this.droppedCount++;
    this.metrics?.dropped.inc();
  }

  /** Sends everything queued now; resolves when the queue is empty (or the exporter is stopped). */
  async forceFlush(): Promise<void> {
    while (this.queuedCount > 0 || this.draining) {
      await (this.draining ?? this.kick());
      if (this.stop.signal.aborted) return;
    }
  }

  /**
   * Stops taking spans and sends what is queued. After `timeoutMs` (default 5 s) whatever is in flight is
   * abandoned, so shutting a service down never hangs on an unreachable collector.
   */
  async shutdown(timeoutMs = 5000): Promise<void> {
    if (this.interval) clearInterval(this.interval);
    this.interval = undefined;
    this.closed = true;
    const t = setTimeout(() => this.stop.abort(), timeoutMs);
    t.unref();
    try {
      await this.forceFlush();
    } finally {
      clearTimeout(t);
      this.stop.abort();
      const left = this.queuedCount;
      if (left > 0) {
        this.full = [];
        this.filling = undefined;
        this.queuedCount = 0;
        this.failedCount += left;
        this.metrics?.failed.inc(left);
      }
    }
  }

  private kick(): Promise<void> {
    if (this.draining) return this.draining;
    if (this.queuedCount === 0) return Promise.resolve();
    this.draining = this.drain().finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  private async drain(): Promise<void> {
    while (this.queuedCount > 0 && !this.stop.signal.aborted) {
      let batch = this.full.shift();
      if (batch === undefined) {
        batch = this.filling!;
        this.filling = undefined;
      }
      this.queuedCount -= batch.count;
      const outcome = await this.send(batch);
      if (outcome.ok) {
        const accepted = batch.count - outcome.rejected;
        this.exportedCount += accepted;
        this.metrics?.exported.inc(accepted);
        if (outcome.rejected > 0) this.countFailed(outcome.rejected, new TracingError(TRACING_EXPORT_FAILED, `collector rejected ${outcome.rejected} spans`));
      } else {
        this.countFailed(batch.count, outcome.error);
      }
      // A partial batch waits for the next tick instead of going out as a trickle of tiny requests.
      if (this.full.length === 0 && !this.closed) break;
    }
  }

  private countFailed(n: number, error: TracingError): void {
    this.failedCount += n;
    this.metrics?.failed.inc(n);
    const now = performance.now();
    if (now - this.lastWarnAt >= WARN_EVERY_MS) {
      this.lastWarnAt = now;
      this.log.warn('could not export spans', { code: error.code, status: error.status, spans: n, error: error.message, failedTotal: this.failedCount });
    }
  }

  private async authorization(): Promise<string | undefined> {
    const t = this.o.token;
    if (t === undefined) return undefined;
    if (typeof t === 'string') return `Bearer ${t}`;
    if (typeof t === 'function') return `Bearer ${await t()}`;
    return t.authorization();
  }

  private async send(batch: SpanBatch): Promise<Outcome> {
    let body: Buffer;
    try {
      const json = batch.bytes();
      // Level 1: span JSON is repetitive enough that it shrinks to ~9% (level 6: ~8%) at under half the CPU,
      // and on a small machine the zlib thread competes with the service for the same cores.
      body = this.gzip ? await gzip(json, { level: zlib.Z_BEST_SPEED }) : json;
    } catch (e) {
      return { ok: false, error: new TracingError(TRACING_EXPORT_FAILED, `could not encode spans: ${errorMessage(e)}`, { cause: e }) };
    }
    let renewed = false;
    // Set by every failed attempt before it is read; an Error made up front would capture a stack per batch.
    let last: TracingError | undefined;
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      let delay: number | undefined;
      try {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (this.gzip) headers['content-encoding'] = 'gzip';
        const auth = await this.authorization();
        if (auth !== undefined) headers.authorization = auth;
        const res = await request(this.endpoint, {
          method: 'POST',
          headers,
          body,
          signal: this.stop.signal,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
          ...(this.o.dispatcher ? { dispatcher: this.o.dispatcher } : {}),
        });
        const text = await res.body.text();
        if (res.statusCode >= 200 && res.statusCode < 300) return { ok: true, rejected: rejectedSpans(text) };
        last = new TracingError(TRACING_EXPORT_FAILED, `POST ${this.endpoint}: HTTP ${res.statusCode}${text ? `: ${text.slice(0, 200)}` : ''}`, { status: res.statusCode });
        const token = this.o.token;
        if (res.statusCode === 401 && !renewed && typeof token === 'object' && token.renew) {
          renewed = true;
          if (await token.renew()) {
            attempt--; // a renewed token is a new start, not a spent attempt
            continue;
          }
        }
        if (!RETRYABLE.has(res.statusCode)) return { ok: false, error: last };
        delay = retryAfterMs(res.headers['retry-after']);
      } catch (e) {
        if (this.stop.signal.aborted) return { ok: false, error: new TracingError(TRACING_EXPORT_FAILED, 'exporter shut down', { cause: e }) };
        last = new TracingError(TRACING_EXPORT_FAILED, `POST ${this.endpoint}: ${errorMessage(e)}`, { cause: e });
      }
      if (attempt === this.maxAttempts) break;
      // Exponential backoff with full jitter when the collector gave no Retry-After.
      delay ??= Math.random() * Math.min(5000, 100 * 2 ** (attempt - 1));
      try {
        await this.sleep(Math.min(delay, this.maxDelay), this.stop.signal);
      } catch {
        return { ok: false, error: last ?? noAttempt() };
      }
    }
    return { ok: false, error: last ?? noAttempt() };
  }
}

function noAttempt(): TracingError {
  return new TracingError(TRACING_EXPORT_FAILED, 'no attempt made');
}

/** `partialSuccess.rejectedSpans` of an ExportTraceServiceResponse; 0 for an empty or unreadable body. */
function rejectedSpans(text: string): number {
  if (text === '') return 0;
  try {
    const r = (JSON.parse(text) as { partialSuccess?: { rejectedSpans?: unknown } }).partialSuccess?.rejectedSpans;
    const n = typeof r === 'string' ? Number(r) : typeof r === 'number' ? r : 0;
    return Number.isSafeInteger(n) && n > 0 ? n : 0;
  } catch {
    return 0;
  }
}
