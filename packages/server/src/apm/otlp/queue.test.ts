import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SpanRecord } from '../types.js';
import { IngestQueue } from './queue.js';
import { MemorySink } from './test-helpers.js';

const spans = (n: number, tag = 's') => Array.from({ length: n }, (_, i) => ({ spanId: `${tag}${i}` }) as unknown as SpanRecord);
const tick = () => new Promise((r) => setImmediate(r));

void describe('IngestQueue', () => {
  void it('coalesces the requests of one turn, and those that arrive during an insert, into one insert each, up to maxBatchSpans', async () => {
    const sink = new MemorySink();
    const q = new IngestQueue(sink, { maxSpans: 100, maxBatchSpans: 10 });
    sink.hold();
    const a = q.offer(spans(2, 'a'))!;
    const b = q.offer(spans(4, 'b'))!;
    await tick();
    assert.deepEqual(sink.calls, [6], 'the requests offered before the writer ran went in together');
    const c = q.offer(spans(5, 'c'))!;
    const d = q.offer(spans(2, 'd'))!;
    const e = q.offer(spans(4, 'e'))!;
    assert.equal(q.size, 17);
    sink.release();
    await Promise.all([a, b, c, d, e]);
    assert.deepEqual(sink.calls, [6, 7, 4]);
    assert.deepEqual(
      sink.spans.map((s) => s.spanId[0]),
      ['a', 'a', 'b', 'b', 'b', 'b', 'c', 'c', 'c', 'c', 'c', 'd', 'd', 'e', 'e', 'e', 'e'],
    );
    assert.equal(q.size, 0);
    assert.deepEqual(q.stats, { stored: 17, refused: 0, failed: 0 });
  });

  void it('refuses at once when the spans do not fit, but admits any batch into an empty queue', async () => {
    const sink = new MemorySink();
    const q = new IngestQueue(sink, { maxSpans: 5 });
    sink.hold();
    const big = q.offer(spans(8));
    assert.ok(big, 'an empty queue takes a batch larger than itself');
    assert.equal(q.full, true);
    assert.equal(q.offer(spans(1)), undefined);
    sink.release();
    await big;
    sink.hold();
    const three = q.offer(spans(3))!;
    assert.ok(q.offer(spans(2)));
    assert.equal(q.offer(spans(1)), undefined);
    assert.equal(q.stats.refused, 2);
    sink.release();
    await three;
  });

  void it("rejects a failed insert's requests and goes on with the next", async () => {
    const sink = new MemorySink();
    const q = new IngestQueue(sink);
    sink.hold();
    sink.fail = new Error('disk full');
    const first = q.offer(spans(1))!;
    const second = q.offer(spans(2))!;
    sink.release();
    await assert.rejects(first, /disk full/);
    await assert.rejects(second, /disk full/);
    sink.fail = undefined;
    await q.offer(spans(3));
    assert.deepEqual(q.stats, { stored: 3, refused: 0, failed: 3 });
    assert.equal(q.size, 0);
  });

  void it('estimates Retry-After from the backlog and the observed drain rate', async () => {
    let now = 0;
    const sink = new MemorySink();
    const q = new IngestQueue({ insert: async (s) => { now += 100; await sink.insert(s); } }, { maxSpans: 100_000, now: () => now });
    assert.equal(q.retryAfterSeconds(), 1, 'no rate observed yet');
    await q.offer(spans(1000)); // 1000 spans in 100 ms: 10 per ms
    sink.hold();
    void q.offer(spans(50_000));
    await tick();
    assert.equal(q.retryAfterSeconds(), 5);
    sink.release();
  });

  void it('waits for admitted spans on close and refuses new ones', async () => {
    const sink = new MemorySink();
    const q = new IngestQueue(sink);
    sink.hold();
    const p = q.offer(spans(2))!;
    const closed = q.close();
    assert.equal(q.offer(spans(1)), undefined);
    sink.release();
    await closed;
    await p;
    assert.equal(sink.spans.length, 2);
  });
});
