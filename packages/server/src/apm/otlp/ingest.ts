import { gunzip } from 'node:zlib';
import type { Logger } from 'pino';
import { PlinthError, PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE } from '@plinth/core';
import { readBody } from '../../http/body.js';
import { authorize, type GuardDeps } from '../../http/guard.js';
import type { RequestContext, Router } from '../../http/router.js';
import type { SpanRecord } from '../types.js';
import { decodeTraces } from './decode.js';
import { encodeExportResponse, JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE } from './encode.js';
import type { OtlpEncoding } from './normalize.js';
import { IngestQueue, type IngestQueueOptions, type SpanSink } from './queue.js';

export const OTLP_TRACES_PATH = '/v1/traces';
/** Wire body limit (compressed when gzip), as gRPC servers default to. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
/** Body limit after decompression: a gzip bomb stops here. */
export const DEFAULT_MAX_DECODED_BYTES = 32 * 1024 * 1024;

/** Stable codes of the answers that @plinth/core's ErrorCodes has no entry for (yet). */
export const OTLP_ERROR_CODES = { queueFull: 'ingest_queue_full', storeUnavailable: 'span_store_unavailable' } as const;

/** Takes accepted spans off the request path (an OtlpForwarder); must not block or throw. */
export interface SpanForwarder {
  enqueue(spans: readonly SpanRecord[]): void;
}

export interface OtlpIngestDeps extends GuardDeps {
  sink: SpanSink;
  /** Wire body limit in bytes. Default 4 MiB. */
  maxBodyBytes?: number | undefined;
  /** Decompressed body limit in bytes. Default 32 MiB. */
  maxDecodedBytes?: number | undefined;
  /** The queue in front of the sink, or its options. Default: 50,000 spans in flight. */
  queue?: IngestQueue | IngestQueueOptions | undefined;
  /** Stored spans are also handed here. */
  forward?: SpanForwarder | undefined;
  log?: Logger | undefined;
}

export interface OtlpIngestStats {
  requests: number;
  /** Spans stored. */
  accepted: number;
  /** Spans refused in a 200 answer (partialSuccess): invalid, or of a namespace the caller may not write. */
  rejected: number;
}

export interface OtlpIngest {
  readonly queue: IngestQueue;
  readonly stats: OtlpIngestStats;
  /** Stops admitting spans and waits until the admitted ones are stored. */
  close(): Promise<void>;
}

function encodingOf(header: string | undefined): OtlpEncoding {
  const type = (header ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === PROTOBUF_CONTENT_TYPE || type === 'application/protobuf') return 'protobuf';
  if (type === JSON_CONTENT_TYPE) return 'json';
  throw new PlinthError('UNSUPPORTED_MEDIA_TYPE', `send OTLP as application/x-protobuf or application/json, not ${type.slice(0, 100) || 'no Content-Type'}`);
}

function isGzip(header: string | undefined): boolean {
  const coding = (header ?? '').trim().toLowerCase();
  if (coding === '' || coding === 'identity') return false;
  if (coding === 'gzip' || coding === 'x-gzip') return true;
  throw new PlinthError('UNSUPPORTED_MEDIA_TYPE', `Content-Encoding ${coding.slice(0, 50)} is not supported; send gzip or none`);
}

/** zlib stops inflating at `maxOutputLength`, so a bomb costs at most the limit, never its full size. */
function gunzipLimited(body: Buffer, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    gunzip(body, { maxOutputLength: limit }, (err, out) => {
      if (!err) return resolve(out);
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
        reject(new PlinthError('PAYLOAD_TOO_LARGE', `the decompressed body may be at most ${limit} bytes`));
      } else reject(new PlinthError('MALFORMED_BODY', `invalid gzip body: ${err.message}`));
    });
  });
}

/** 429 and 503 with Retry-After: what OTLP clients back off on. problem+json like every other error. */
function sendRetryLater(ctx: RequestContext, status: 429 | 503, code: string, title: string, detail: string, seconds: number): void {
  const body = JSON.stringify({ type: PROBLEM_TYPE_BASE + code, title, status, detail, code, instance: ctx.url.pathname });
  ctx.res.writeHead(status, {
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'retry-after': String(seconds),
  });
  ctx.res.end(body);
  // Refused before reading: discard the body so the keep-alive connection stays usable.
  if (!ctx.req.complete) ctx.req.resume();
}

/**
 * `POST /v1/traces`: OTLP/HTTP trace ingest, protobuf or JSON, plain or gzip. Authenticated; each
 * namespace in the batch needs `create Span`. Spans of namespaces the caller may not write, and invalid
 * spans, are refused in a partialSuccess; a batch with nothing left is a 403 (or 400).
 */
export function registerOtlpRoutes(router: Router, deps: OtlpIngestDeps): OtlpIngest {
  const maxBody = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const maxDecoded = deps.maxDecodedBytes ?? DEFAULT_MAX_DECODED_BYTES;
  const queue = deps.queue instanceof IngestQueue ? deps.queue : new IngestQueue(deps.sink, deps.queue);
  const stats: OtlpIngestStats = { requests: 0, accepted: 0, rejected: 0 };

  const refuseFull = (ctx: RequestContext) =>
    sendRetryLater(ctx, 429, OTLP_ERROR_CODES.queueFull, 'Too many requests', `the span ingest queue is full (${queue.size} spans pending); retry later`, queue.retryAfterSeconds());

  router.add('POST', OTLP_TRACES_PATH, async (ctx) => {
    stats.requests++;
    const encoding = encodingOf(ctx.req.headers['content-type']);
    const gzip = isGzip(ctx.req.headers['content-encoding']);
    // Under overload, refuse before paying for reading and decoding.
    if (queue.full) return refuseFull(ctx);
    const raw = await readBody(ctx.req, gzip ? maxBody : Math.min(maxBody, maxDecoded));
    const body = gzip ? await gunzipLimited(raw, maxDecoded) : raw;
    const batch = decodeTraces(body, encoding);

    let spans: SpanRecord[] = batch.spans;
    let rejected = batch.rejected;
    let denial: PlinthError | undefined;
    let denied = 0;
    const allowed = async (namespace: string): Promise<boolean> => {
      try {
        await authorize(ctx, deps, 'create', 'Span', namespace);
        return true;
      } catch (e) {
        if (!(e instanceof PlinthError) || e.code !== 'forbidden') throw e;
        denial ??= e;
        return false;
      }
    };
    const first = spans[0];
    if (first) {
      let mixed = false;
      for (const s of spans) {
        if (s.namespace !== first.namespace) {
          mixed = true;
          break;
        }
      }
      if (!mixed) {
        if (!(await allowed(first.namespace))) {
          denied = spans.length;
          spans = [];
        }
      } else {
        const decisions = new Map<string, boolean>();
        for (const s of spans) if (!decisions.has(s.namespace)) decisions.set(s.namespace, await allowed(s.namespace));
        const kept = spans.filter((s) => decisions.get(s.namespace) === true);
        denied = spans.length - kept.length;
        spans = kept;
      }
    }
    rejected += denied;

    if (spans.length === 0 && rejected > 0) {
      if (denial) throw denial;
      throw new PlinthError('BAD_REQUEST', `no valid span in the request: ${batch.errorMessage ?? 'invalid spans'}`);
    }
    if (spans.length > 0) {
      const stored = queue.offer(spans);
      if (!stored) return refuseFull(ctx);
      try {
        await stored;
      } catch (e) {
        deps.log?.warn({ err: e, spans: spans.length }, 'span store insert failed; the client is told to retry');
        const pe = new PlinthError('UNAVAILABLE', 'the span store is unavailable; retry later');
        return sendRetryLater(ctx, 503, OTLP_ERROR_CODES.storeUnavailable, pe.title, pe.message, queue.retryAfterSeconds());
      }
      deps.forward?.enqueue(spans);
    }
    stats.accepted += spans.length;
    stats.rejected += rejected;

    const messages: string[] = [];
    if (batch.errorMessage) messages.push(`${batch.rejected} invalid span(s), first: ${batch.errorMessage}`);
    if (denial) messages.push(`${denied} span(s) refused: ${(denial as PlinthError).message}`);
    const out = encodeExportResponse(encoding, rejected, messages.length > 0 ? messages.join('; ') : undefined);
    ctx.res.writeHead(200, {
      'content-type': encoding === 'json' ? JSON_CONTENT_TYPE : PROTOBUF_CONTENT_TYPE,
      'content-length': out.length,
      'cache-control': 'no-store',
    });
    ctx.res.end(out);
  });

  return { queue, stats, close: () => queue.close() };
}
