import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { Logger } from 'pino';
import { Agent, request, type Dispatcher } from 'undici';
import type { SpanRecord } from '../types.js';
import { encodeTracesJson, JSON_CONTENT_TYPE } from './encode.js';
import type { SpanForwarder } from './ingest.js';

const gzipAsync = promisify(gzip);

export interface OtlpForwarderOptions {
  /** The other backend's OTLP/HTTP traces endpoint, e.g. `https://collector:4318/v1/traces`. */
  url: string;
  /** Sent with every export (e.g. an API key). */
  headers?: Record<string, string> | undefined;
  /** Spans waiting to be sent, at most; beyond, new spans are dropped and counted. Default 20,000. */
  maxQueueSpans?: number | undefined;
  /** Spans per export request. Default 1,000. */
  batchSize?: number | undefined;
  /** A partial batch waits at most this long. Default 1,000. */
  flushMs?: number | undefined;
  /** Attempts per batch before it counts as failed. Default 5. */
  maxAttempts?: number | undefined;
  /** First backoff delay (doubling, with jitter) when the backend gives no Retry-After. Default 500. */
  retryBaseMs?: number | undefined;
  /** Longest wait between attempts, Retry-After included. Default 30,000. */
  maxRetryDelayMs?: number | undefined;
  /** Per request: connect, headers and body timeouts. Default 10,000. */
  timeoutMs?: number | undefined;
  /** gzip the body (the other end must accept Content-Encoding: gzip, as OTLP receivers must). Default true. */
  gzip?: boolean | undefined;
  log?: Logger | undefined;
  /** Tests use their own dispatcher. */
  dispatcher?: Dispatcher | undefined;
}

export interface OtlpForwarderCounters {
  /** Spans the backend accepted. */
  sent: number;
  /** Spans never queued: the queue was full, or the forwarder closed. */
  dropped: number;
  /** Spans given up on: attempts exhausted, a non-retryable answer, or rejected in a partialSuccess. */
  failed: number;
  /** Export attempts repeated after a retryable failure. */
  retries: number;
}

const RETRYABLE = new Set([429, 502, 503, 504]);

/**
 * Forwards stored spans to another OTLP backend (a collector, Jaeger, Tempo, a vendor), off the request
 * path. Ingest only appends to a bounded in-memory queue (never waits; drops and counts when it is full);
 * one sender drains it in batches, retrying 429/5xx and network errors with backoff and honouring
 * Retry-After.
 *
 * Spans are re-encoded from SpanRecords to OTLP/JSON rather than passing the client's bytes on: only what
 * Plinth accepted leaves it (RBAC-filtered, truncated), batches merge many small requests, and the queue's
 * memory is bounded in spans rather than by whatever bodies clients send. The price is the encoding work
 * and the fields the model does not keep (links, trace state).
 */
export class OtlpForwarder implements SpanForwarder {
  readonly counters: OtlpForwarderCounters = { sent: 0, dropped: 0, failed: 0, retries: 0 };
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly maxQueue: number;
  private readonly batchSize: number;
  private readonly maxAttempts: number;
  private readonly retryBaseMs: number;
  private readonly maxRetryDelayMs: number;
  private readonly gzip: boolean;
  private readonly log: Logger | undefined;
  private readonly dispatcher: Dispatcher;
  private readonly ownDispatcher: boolean;
  private readonly timer: NodeJS.Timeout;
  /** Queued spans as the arrays ingest handed over (no copying per span). */
  private chunks: (readonly SpanRecord[])[] = [];
  private queued = 0;
  private sending: Promise<void> | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(options: OtlpForwarderOptions) {
    const url = new URL(options.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`otlp forward url must be http(s), not ${url.protocol}`);
    this.url = url.href;
    this.headers = { ...options.headers, 'content-type': JSON_CONTENT_TYPE };
    this.maxQueue = options.maxQueueSpans ?? 20_000;
    this.batchSize = options.batchSize ?? 1_000;
    this.maxAttempts = options.maxAttempts ?? 5;
    this.retryBaseMs = options.retryBaseMs ?? 500;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 30_000;
    this.gzip = options.gzip ?? true;
    if (this.gzip) this.headers['content-encoding'] = 'gzip';
    this.log = options.log;
    const timeout = options.timeoutMs ?? 10_000;
    this.ownDispatcher = !options.dispatcher;
    this.dispatcher = options.dispatcher ?? new Agent({ connectTimeout: timeout, headersTimeout: timeout, bodyTimeout: timeout, connections: 4 });
    if (!(this.maxQueue >= 1 && this.batchSize >= 1 && this.maxAttempts >= 1)) throw new RangeError('otlp forward: maxQueueSpans, batchSize and maxAttempts must be at least 1');
    // One timer per forwarder, for partial batches; full batches go out at once.
    this.timer = setInterval(() => {
      if (this.queued > 0) this.kick();
    }, options.flushMs ?? 1_000);
    this.timer.unref();
  }

  /** Spans waiting to be sent (not counting a batch in flight). */
  get pending(): number {
    return this.queued;
  }

  enqueue(spans: readonly SpanRecord[]): void {
    if (spans.length === 0) return;
    const room = this.closing ? 0 : this.maxQueue - this.queued;
    if (room <= 0) {
      this.counters.dropped += spans.length;
      return;
    }
    const take = spans.length <= room ? spans : spans.slice(0, room);
    this.counters.dropped += spans.length - take.length;
    this.chunks.push(take);
    this.queued += take.length;
    if (this.queued >= this.batchSize) this.kick();
  }

  /** Sends everything queued so far (with retries) and resolves when done. */
  async flush(): Promise<void> {
    while (this.queued > 0 || this.sending) {
      this.kick();
      await this.sending;
    }
  }

  /**
   * Stops the timer and sends what is queued, one attempt per batch without waiting between them; after the
   * first failure the rest counts as failed.
   */
  close(): Promise<void> {
    return (this.closed ??= (async () => {
      this.closing = true;
      clearInterval(this.timer);
      this.wake?.();
      await this.flush();
      if (this.ownDispatcher) await this.dispatcher.close();
    })());
  }

  private kick(): void {
    this.sending ??= this.pump().finally(() => {
      this.sending = undefined;
    });
  }

  private take(): SpanRecord[] {
    const batch: SpanRecord[] = [];
    while (this.chunks.length > 0 && batch.length < this.batchSize) {
      const c = this.chunks[0]!;
      const want = this.batchSize - batch.length;
      if (c.length <= want) {
        this.chunks.shift();
        for (const s of c) batch.push(s);
      } else {
        for (let i = 0; i < want; i++) batch.push(c[i]!);
        this.chunks[0] = c.slice(want);
      }
    }
    this.queued -= batch.length;
    return batch;
  }

  private async pump(): Promise<void> {
    while (this.queued > 0) {
      const batch = this.take();
      let body: Buffer;
      try {
        const json = Buffer.from(encodeTracesJson(batch));
        body = this.gzip ? await gzipAsync(json) : json;
      } catch (e) {
        this.counters.failed += batch.length;
        this.log?.warn({ err: e }, 'otlp forward: encoding failed');
        continue;
      }
      const ok = await this.send(batch.length, body);
      if (!ok && this.closing) {
        this.counters.failed += this.queued;
        this.chunks = [];
        this.queued = 0;
      }
    }
  }

  /** One batch, with retries. True when the backend answered 2xx. */
  private async send(count: number, body: Buffer): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      let retryAfterMs: number | undefined;
      let why: string;
      try {
        const res = await request(this.url, { method: 'POST', headers: this.headers, body, dispatcher: this.dispatcher });
        const text = await res.body.text();
        if (res.statusCode >= 200 && res.statusCode < 300) {
          const rejected = partialRejections(text);
          this.counters.sent += count - rejected;
          this.counters.failed += rejected;
          if (rejected > 0) this.log?.warn({ rejected, url: this.url }, 'otlp forward: the backend rejected spans');
          return true;
        }
        why = `HTTP ${res.statusCode}`;
        if (!RETRYABLE.has(res.statusCode)) {
          this.counters.failed += count;
          this.log?.warn({ status: res.statusCode, body: text.slice(0, 300), url: this.url }, 'otlp forward: export refused; batch dropped');
          return false;
        }
        retryAfterMs = parseRetryAfter(res.headers['retry-after']);
      } catch (e) {
        why = (e as Error).message;
      }
      if (attempt >= this.maxAttempts || this.closing) {
        this.counters.failed += count;
        this.log?.warn({ url: this.url, attempts: attempt, why }, 'otlp forward: export failed; batch dropped');
        return false;
      }
      this.counters.retries++;
      const backoff = this.retryBaseMs * 2 ** (attempt - 1);
      await this.sleep(Math.min(this.maxRetryDelayMs, retryAfterMs ?? backoff / 2 + Math.random() * (backoff / 2)));
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = () => {
        this.wake = undefined;
        done();
      };
    });
  }
}

/** Retry-After as delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(v: string | string[] | undefined, now = Date.now()): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined || s === '') return undefined;
  if (/^\d+$/.test(s.trim())) return Number(s.trim()) * 1000;
  const at = Date.parse(s);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function partialRejections(text: string): number {
  if (text === '' || text === '{}') return 0;
  try {
    const n = Number((JSON.parse(text) as { partialSuccess?: { rejectedSpans?: unknown } }).partialSuccess?.rejectedSpans ?? 0);
    return Number.isFinite(n) && n > 0 ? n : 0;
  } catch {
    return 0;
  }
}
