import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { SpanRecord } from '../types.js';

/** Where accepted spans go: the span store's `insert`, or anything with its shape. */
export interface SpanSink {
  insert(spans: readonly SpanRecord[]): Promise<void>;
}

export interface IngestQueueOptions {
  /** Spans admitted and not yet written, at most. Default 50,000. */
  maxSpans?: number | undefined;
  /** Spans handed to one `insert`, at most (requests are coalesced up to it). Default 5,000. */
  maxBatchSpans?: number | undefined;
  /** Epoch ms; tests move time. */
  now?: (() => number) | undefined;
}

export interface IngestQueueStats {
  /** Spans written by the sink. */
  stored: number;
  /** Spans refused because the queue was full (answered 429). */
  refused: number;
  /** Spans whose insert failed (answered 503). */
  failed: number;
}

interface Pending {
  spans: readonly SpanRecord[];
  resolve: () => void;
  reject: (e: unknown) => void;
}

export const DEFAULT_INGEST_QUEUE_SPANS = 50_000;
const DEFAULT_BATCH_SPANS = 5_000;

/**
 * Bounded hand-off between OTLP requests and the span store. A request's spans are admitted whole or
 * refused at once (the caller answers 429, OTLP clients retry after Retry-After): ingest never waits for
 * room and the backlog never exceeds `maxSpans` (plus one request when the queue was empty, so a batch
 * larger than the queue is not refused forever).
 *
 * One writer drains it, coalescing the requests that arrived during the previous insert into one call:
 * a store writes 5,000 spans in one transaction far cheaper than 50 transactions of 100.
 * Each request's promise settles when its spans are written, so a 200 means stored.
 */
export class IngestQueue {
  readonly stats: IngestQueueStats = { stored: 0, refused: 0, failed: 0 };
  private readonly maxSpans: number;
  private readonly maxBatch: number;
  private readonly now: () => number;
  private pending: Pending[] = [];
  private inFlight = 0;
  private writing: Promise<void> | undefined;
  /** Observed drain rate, spans per ms (moving average), for Retry-After. */
  private rate = 0;
  private closed = false;

  constructor(
    private readonly sink: SpanSink,
    options: IngestQueueOptions = {},
  ) {
    this.maxSpans = options.maxSpans ?? DEFAULT_INGEST_QUEUE_SPANS;
    this.maxBatch = options.maxBatchSpans ?? DEFAULT_BATCH_SPANS;
    this.now = options.now ?? Date.now;
    if (!(this.maxSpans >= 1) || !(this.maxBatch >= 1)) throw new RangeError('IngestQueue: maxSpans and maxBatchSpans must be at least 1');
  }

  /** Spans admitted and not yet written. */
  get size(): number {
    return this.inFlight;
  }

  get full(): boolean {
    return this.closed || this.inFlight >= this.maxSpans;
  }

  /**
   * Admits the spans, or returns undefined at once when there is no room. The promise resolves when the
   * sink has written them and rejects with the sink's error.
   */
  offer(spans: readonly SpanRecord[]): Promise<void> | undefined {
    if (this.closed || (this.inFlight > 0 && this.inFlight + spans.length > this.maxSpans)) {
      this.stats.refused += spans.length;
      return undefined;
    }
    if (spans.length === 0) return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.pending.push({ spans, resolve, reject }));
    this.inFlight += spans.length;
    this.writing ??= this.drain();
    return p;
  }

  /** Whole seconds a refused client should wait: the backlog over the observed drain rate, 1-30. */
  retryAfterSeconds(): number {
    if (!(this.rate > 0)) return 1;
    return Math.min(30, Math.max(1, Math.ceil(this.inFlight / this.rate / 1000)));
  }

  /** Refuses new spans and waits until the admitted ones are written. */
  async close(): Promise<void> {
    this.closed = true;
    await this.writing;
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        // One turn of the event loop first: requests whose bodies are in by then join this batch (a
        // synchronous store would otherwise write each request alone, as it arrives), and the answers to
        // the previous batch go out before this one is written.
        await yieldToLoop();
        const items: Pending[] = [];
        let count = 0;
        while (this.pending.length > 0 && (items.length === 0 || count + this.pending[0]!.spans.length <= this.maxBatch)) {
          const it = this.pending.shift()!;
          items.push(it);
          count += it.spans.length;
        }
        const batch = items.length === 1 ? items[0]!.spans : items.flatMap((i) => i.spans);
        const started = this.now();
        try {
          await this.sink.insert(batch);
          this.stats.stored += count;
          const r = count / Math.max(1, this.now() - started);
          this.rate = this.rate === 0 ? r : this.rate * 0.8 + r * 0.2;
          for (const it of items) it.resolve();
        } catch (e) {
          this.stats.failed += count;
          for (const it of items) it.reject(e);
        } finally {
          this.inFlight -= count;
        }
      }
    } finally {
      this.writing = undefined;
    }
  }
}
