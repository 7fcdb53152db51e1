import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { SpanRecord } from '../types.js';
import { decodeJsonTraces } from './decode.js';
import { OtlpForwarder, parseRetryAfter, type OtlpForwarderOptions } from './forward.js';
import { jsonRequest, jsonSpan } from './test-helpers.js';

interface Received {
  headers: IncomingHttpHeaders;
  spans: SpanRecord[];
}

/** Another OTLP backend: records what it receives and answers from a script (then 200 {}). */
class Backend {
  received: Received[] = [];
  script: { status: number; headers?: Record<string, string>; body?: string }[] = [];
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;
  private server!: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void (async () => {
          const raw = Buffer.concat(chunks);
          const body = req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
          this.received.push({ headers: req.headers, spans: decodeJsonTraces(body).spans });
          if (this.gate) await this.gate;
          const next = this.script.shift() ?? { status: 200, body: '{}' };
          res.writeHead(next.status, { 'content-type': 'application/json', ...next.headers });
          res.end(next.body ?? '{}');
        })();
      });
    });
    await new Promise<void>((ok) => this.server.listen(0, '127.0.0.1', ok));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/traces`;
  }

  hold(): void {
    this.gate = new Promise((r) => (this.open = r));
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }

  async stop(): Promise<void> {
    this.release();
    await new Promise<void>((ok) => {
      this.server.close(() => ok());
      this.server.closeAllConnections();
    });
  }
}

function records(n: number, namespace = 'retail'): SpanRecord[] {
  const spans = Array.from({ length: n }, (_, i) =>
    jsonSpan({
      spanId: (i + 1).toString(16).padStart(16, '0'),
      startTimeUnixNano: `${1700000000000000000 + i * 1_000_123}`,
      endTimeUnixNano: `${1700000000000000000 + i * 1_000_123 + 2_345_678}`,
      attributes: [
        { key: 'http.request.method', value: { stringValue: 'GET' } },
        { key: 'http.route', value: { stringValue: '/orders/:id' } },
        { key: 'n', value: { intValue: String(i) } },
        { key: 'ratio', value: { doubleValue: 0.5 } },
        { key: 'ok', value: { boolValue: true } },
      ],
      events: [{ timeUnixNano: '1700000000000500000', name: 'e', attributes: [{ key: 'k', value: { stringValue: 'v' } }] }],
      status: i % 2 ? { code: 2, message: 'boom' } : { code: 1 },
    }),
  );
  const b = decodeJsonTraces(Buffer.from(JSON.stringify(jsonRequest({ 'service.namespace': namespace, 'service.name': 'orders', 'service.version': '1.0.0' }, spans))));
  assert.equal(b.rejected, 0);
  return b.spans;
}

void describe('OTLP forwarding', () => {
  const backend = new Backend();
  const forwarders: OtlpForwarder[] = [];
  const forwarder = (o: Partial<OtlpForwarderOptions> = {}) => {
    const f = new OtlpForwarder({ url: backend.url, flushMs: 60_000, retryBaseMs: 1, ...o });
    forwarders.push(f);
    return f;
  };
  before(() => backend.start());
  beforeEach(() => {
    backend.received = [];
    backend.script = [];
  });
  after(async () => {
    for (const f of forwarders) await f.close();
    await backend.stop();
  });

  void it('sends OTLP/JSON (gzip) that decodes back to the same span records', async () => {
    const f = forwarder({ headers: { 'x-api-key': 'k1' } });
    const spans = records(3);
    f.enqueue(spans);
    await f.flush();
    assert.equal(backend.received.length, 1);
    const got = backend.received[0]!;
    assert.equal(got.headers['content-type'], 'application/json');
    assert.equal(got.headers['content-encoding'], 'gzip');
    assert.equal(got.headers['x-api-key'], 'k1');
    assert.deepEqual(got.spans, spans);
    assert.deepEqual(f.counters, { sent: 3, dropped: 0, failed: 0, retries: 0 });
  });

  void it('batches by batchSize', async () => {
    const f = forwarder({ batchSize: 4, gzip: false });
    const spans = records(10);
    f.enqueue(spans.slice(0, 3));
    f.enqueue(spans.slice(3, 7));
    f.enqueue(spans.slice(7));
    await f.flush();
    assert.deepEqual(
      backend.received.map((r) => r.spans.length),
      [4, 4, 2],
    );
    assert.deepEqual(
      backend.received.flatMap((r) => r.spans.map((s) => s.spanId)),
      spans.map((s) => s.spanId),
    );
    assert.equal(f.counters.sent, 10);
  });

  void it('retries 503 and 429 with backoff, honouring Retry-After', async () => {
    backend.script = [{ status: 503, headers: { 'retry-after': '0' } }, { status: 429 }];
    const f = forwarder();
    f.enqueue(records(2));
    await f.flush();
    assert.equal(backend.received.length, 3);
    assert.deepEqual(f.counters, { sent: 2, dropped: 0, failed: 0, retries: 2 });
  });

  void it('gives up after maxAttempts and on non-retryable answers, counting the spans as failed', async () => {
    backend.script = [{ status: 503 }, { status: 503 }, { status: 400, body: '{"code":"bad"}' }];
    const f = forwarder({ maxAttempts: 2 });
    f.enqueue(records(2));
    await f.flush();
    f.enqueue(records(3));
    await f.flush();
    assert.equal(backend.received.length, 3);
    assert.deepEqual(f.counters, { sent: 0, dropped: 0, failed: 5, retries: 1 });
  });

  void it('counts spans the backend rejected in a partialSuccess as failed', async () => {
    backend.script = [{ status: 200, body: '{"partialSuccess":{"rejectedSpans":"1","errorMessage":"no"}}' }];
    const f = forwarder();
    f.enqueue(records(3));
    await f.flush();
    assert.deepEqual(f.counters, { sent: 2, dropped: 0, failed: 1, retries: 0 });
  });

  void it('drops and counts spans once the queue is full, never blocking the caller', async () => {
    backend.hold();
    const f = forwarder({ maxQueueSpans: 10, batchSize: 5 });
    const spans = records(18);
    f.enqueue(spans.slice(0, 5)); // a full batch: goes out at once and is held by the backend
    while (backend.received.length === 0) await new Promise((r) => setTimeout(r, 5));
    f.enqueue(spans.slice(5, 12));
    f.enqueue(spans.slice(12, 18)); // 7 queued, room for 3 of these 6
    assert.equal(f.pending, 10);
    assert.equal(f.counters.dropped, 3);
    backend.release();
    await f.flush();
    assert.deepEqual(f.counters, { sent: 15, dropped: 3, failed: 0, retries: 0 });
    assert.deepEqual(
      backend.received.flatMap((r) => r.spans.map((s) => s.spanId)),
      spans.slice(0, 15).map((s) => s.spanId),
    );
  });

  void it('sends what is queued on close and drops what comes after', async () => {
    const f = forwarder({ batchSize: 100 });
    f.enqueue(records(3));
    await f.close();
    f.enqueue(records(2));
    assert.equal(backend.received.length, 1);
    assert.deepEqual(f.counters, { sent: 3, dropped: 2, failed: 0, retries: 0 });
  });

  void it('reads Retry-After as seconds or an HTTP date', () => {
    assert.equal(parseRetryAfter('3'), 3000);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000);
    assert.equal(parseRetryAfter('soon'), undefined);
    assert.equal(parseRetryAfter(undefined), undefined);
  });
});
