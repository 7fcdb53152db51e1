import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isControlPlaneError } from './errors.js';
import { parseWatchMessage, readWatchStream, type WatchMessage } from './watch-stream.js';

const resource = { apiVersion: 'plinth.dev/v1', kind: 'Config', metadata: { namespace: 'app', name: 'a', labels: {}, annotations: {}, revision: 43 }, spec: {} };

async function* chunks(...parts: (string | Uint8Array)[]): AsyncIterable<string | Uint8Array> {
  for (const p of parts) yield p;
}

test('parseWatchMessage reads changes, bookmarks and resyncs, and skips unknown events', () => {
  assert.deepEqual(parseWatchMessage({ event: 'MODIFIED', id: '43', data: JSON.stringify({ type: 'MODIFIED', revision: 43, resource }) }), {
    type: 'change',
    event: { type: 'MODIFIED', revision: 43, resource },
  });
  assert.deepEqual(parseWatchMessage({ event: 'BOOKMARK', id: '50', data: '{"revision":50}' }), { type: 'bookmark', revision: 50 });
  assert.deepEqual(parseWatchMessage({ event: 'RESYNC', data: '{"revision":60,"compactedRevision":55}' }), { type: 'resync', revision: 60, compactedRevision: 55 });
  assert.equal(parseWatchMessage({ event: 'SOMETHING_NEW', data: 'whatever' }), undefined);
  assert.equal(parseWatchMessage({ data: 'no event name' }), undefined);
});

test('parseWatchMessage refuses malformed data with protocol_error rather than applying it', () => {
  for (const data of ['not json', '42', '{"type":"ADDED"}', '{"revision":-1,"resource":{}}', JSON.stringify({ revision: 3, resource: { kind: 'Config' } })]) {
    assert.throws(
      () => parseWatchMessage({ event: 'ADDED', data }),
      (e: unknown) => isControlPlaneError(e, 'protocol_error'),
      data,
    );
  }
});

test('readWatchStream applies events in order across arbitrary chunk boundaries', async () => {
  const frame = `id: 43\nevent: ADDED\ndata: ${JSON.stringify({ type: 'ADDED', revision: 43, resource: { ...resource, spec: { content: 'é€' } } })}\n\n`;
  const bytes = new TextEncoder().encode(`retry: 1000\n\n: heartbeat\n\n${frame}id: 44\nevent: BOOKMARK\ndata: {"revision":44}\n\n`);
  // Split inside the multi-byte characters and inside field names.
  const split = [1, 17, bytes.indexOf(0xc3) + 1, bytes.indexOf(0xe2) + 2, bytes.length - 3];
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const s of split) {
    parts.push(bytes.slice(at, s));
    at = s;
  }
  parts.push(bytes.slice(at));
  const got: WatchMessage[] = [];
  let byteCallbacks = 0;
  await readWatchStream(chunks(...parts), (m) => got.push(m), () => byteCallbacks++);
  assert.equal(byteCallbacks, parts.length, 'every chunk, heartbeat comments included, is a sign of life');
  assert.equal(got.length, 2);
  assert.equal(got[0]?.type === 'change' && (got[0].event.resource.spec as { content: string }).content, 'é€');
  assert.deepEqual(got[1], { type: 'bookmark', revision: 44 });
});

test('readWatchStream stops at the first failure: nothing after a bad event is applied', async () => {
  const got: WatchMessage[] = [];
  const good = (rev: number) => `event: BOOKMARK\ndata: {"revision":${rev}}\n\n`;
  await assert.rejects(
    readWatchStream(chunks(good(1) + 'event: ADDED\ndata: {broken\n\n' + good(2)), (m) => got.push(m), () => {}),
    (e: unknown) => isControlPlaneError(e, 'protocol_error'),
  );
  assert.deepEqual(got, [{ type: 'bookmark', revision: 1 }]);

  // An error thrown by the consumer (the client throws on RESYNC) ends the read the same way.
  const seen: number[] = [];
  await assert.rejects(
    readWatchStream(
      chunks(good(1) + good(2) + good(3)),
      (m) => {
        if (m.type === 'bookmark') seen.push(m.revision);
        if (seen.length === 2) throw new Error('stop');
      },
      () => {},
    ),
    /stop/,
  );
  assert.deepEqual(seen, [1, 2]);
});
