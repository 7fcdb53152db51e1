import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { backends, resource, startTestServer, type TestServer } from '../testing/harness.js';
import { SseClient } from '../testing/sse.js';

for (const { backend, skip } of backends()) {
  describe(`watch (${backend})`, { skip }, () => {
    let s: TestServer;
    const clients: SseClient[] = [];
    const watch = (query: string, headers?: Record<string, string>) => {
      const c = new SseClient(`${s.url}/v1/watch?${query}`, s.token, headers);
      clients.push(c);
      return c;
    };
    before(async () => {
      s = await startTestServer(backend, { retainRevisions: 1_000_000 });
    });
    after(async () => {
      for (const c of clients) c.close();
      await s?.destroy();
    });

    it('delivers every change in revision order, after a BOOKMARK that marks catch-up', async () => {
      const w = watch('kinds=Config&namespace=w1');
      await w.waitFor((ev) => ev.some((e) => e.event === 'BOOKMARK'));
      const revs: number[] = [];
      await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const r = await s.api('PUT', `/v1/resources/Config/w1/c${i % 10}`, resource('Config', 'w1', `c${i % 10}`, { content: `v${i}` }));
          assert.ok(r.status === 200 || r.status === 201, JSON.stringify(r.body));
          if (r.headers.get('plinth-result') !== 'unchanged') revs.push(r.body.metadata.revision);
        }),
      );
      await w.waitFor(() => w.changes().length >= revs.length);
      const got = w.changes().map((e) => e.data.revision);
      assert.deepEqual(got, [...revs].sort((a, b) => a - b));
      assert.deepEqual(w.changes().map((e) => Number(e.id)), got);
    });

    it('replays from since= and from Last-Event-ID without gaps or duplicates', async () => {
      const first = await s.api('PUT', '/v1/resources/Config/w2/a', resource('Config', 'w2', 'a', { content: '1' }));
      const since = first.body.metadata.revision;
      await s.api('PUT', '/v1/resources/Config/w2/a', resource('Config', 'w2', 'a', { content: '2' }));
      await s.api('PUT', '/v1/resources/Config/w2/b', resource('Config', 'w2', 'b', { content: '1' }));
      await s.api('DELETE', '/v1/resources/Config/w2/a');
      const a = watch(`kinds=Config&namespace=w2&since=${since - 1}`);
      await a.waitFor(() => a.changes().length >= 4);
      assert.deepEqual(a.changes().map((e) => e.event), ['ADDED', 'MODIFIED', 'ADDED', 'DELETED']);
      const b = watch('kinds=Config&namespace=w2&since=0', { 'last-event-id': String(since) });
      await b.waitFor(() => b.events.some((e) => e.event === 'BOOKMARK'));
      assert.deepEqual(b.changes().map((e) => e.event), ['MODIFIED', 'ADDED', 'DELETED']);
    });

    it('filters by selector, turning a resource that leaves or joins the selection into DELETED or ADDED', async () => {
      const w = watch('kinds=Config&namespace=w3&selector=' + encodeURIComponent('lane=blue'));
      await w.waitFor((ev) => ev.some((e) => e.event === 'BOOKMARK'));
      await s.api('PUT', '/v1/resources/Config/w3/x', resource('Config', 'w3', 'x', { content: '1' }, { lane: 'green' }));
      await s.api('PUT', '/v1/resources/Config/w3/x', resource('Config', 'w3', 'x', { content: '1' }, { lane: 'blue' }));
      await s.api('PUT', '/v1/resources/Config/w3/x', resource('Config', 'w3', 'x', { content: '2' }, { lane: 'blue' }));
      await s.api('PUT', '/v1/resources/Config/w3/x', resource('Config', 'w3', 'x', { content: '2' }, { lane: 'green' }));
      await s.api('PUT', '/v1/resources/Config/w3/y', resource('Config', 'w3', 'y', { content: '1' }, { lane: 'blue' }));
      await w.waitFor(() => w.changes().length >= 4);
      assert.deepEqual(
        w.changes().map((e) => `${e.event} ${e.data.resource.metadata.name}`),
        ['ADDED x', 'MODIFIED x', 'DELETED x', 'ADDED y'],
      );
    });

    it('sends heartbeat BOOKMARKs that advance an idle filtered watcher', async () => {
      const w = watch('kinds=Secret&namespace=nothing-here');
      await w.waitFor((ev) => ev.some((e) => e.event === 'BOOKMARK'));
      const before = Number(w.events.at(-1)!.id);
      await s.api('PUT', '/v1/resources/Config/w4/z', resource('Config', 'w4', 'z', { content: '1' }));
      await w.waitFor((ev) => ev.some((e) => e.event === 'BOOKMARK' && Number(e.id) > before), 3000);
      assert.equal(w.changes().length, 0);
    });

    it('rejects bad parameters with problem+json', async () => {
      const bad = await fetch(`${s.url}/v1/watch?kinds=Nope`, { headers: { authorization: `Bearer ${s.token}` } });
      assert.equal(bad.status, 404);
      assert.equal(((await bad.json()) as any).code, 'unknown_kind');
      const since = await fetch(`${s.url}/v1/watch?since=-4`, { headers: { authorization: `Bearer ${s.token}` } });
      assert.equal(since.status, 400);
      await since.body?.cancel();
    });
  });

  describe(`watch after compaction (${backend})`, { skip }, () => {
    it('answers RESYNC to a revision older than the compaction point', async () => {
      const s = await startTestServer(backend, { retainRevisions: 3 });
      try {
        for (let i = 0; i < 12; i++) await s.api('PUT', '/v1/resources/Config/c/x', resource('Config', 'c', 'x', { content: String(i) }));
        // Compaction runs on a timer; wait until it has passed revision 1.
        const deadline = Date.now() + 10_000;
        let w: SseClient;
        for (;;) {
          w = new SseClient(`${s.url}/v1/watch?since=1`, s.token);
          await w.done;
          if (w.events.some((e) => e.event === 'RESYNC') || Date.now() > deadline) break;
        }
        const resync = w.events.find((e) => e.event === 'RESYNC');
        assert.ok(resync, JSON.stringify(w.events));
        assert.ok(resync.data.compactedRevision >= 1);
        assert.ok(resync.data.revision >= 12);
      } finally {
        await s.destroy();
      }
    });
  });
}
