import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SseParser, type SseMessage } from './sse.js';

function parse(chunks: string[]): SseMessage[] {
  const got: SseMessage[] = [];
  const p = new SseParser((m) => got.push(m));
  for (const c of chunks) p.feed(c);
  return got;
}

void describe('SseParser', () => {
  void it('parses events with id, type and data, skipping comments', () => {
    const got = parse([': heartbeat\n\nid: 43\nevent: MODIFIED\ndata: {"a":1}\n\nid: 44\nevent: BOOKMARK\ndata: {"revision":44}\n\n']);
    assert.deepEqual(got, [
      { event: 'MODIFIED', data: '{"a":1}', id: '43' },
      { event: 'BOOKMARK', data: '{"revision":44}', id: '44' },
    ]);
  });

  void it('reassembles events split across chunks at any byte, including CR LF', () => {
    const text = 'id: 1\r\nevent: ADDED\r\ndata: x\r\ndata: y\r\n\r\nevent: RESYNC\ndata: {}\n\n';
    for (let i = 1; i < text.length; i++) {
      const got = parse([text.slice(0, i), text.slice(i)]);
      assert.deepEqual(got, [
        { event: 'ADDED', data: 'x\ny', id: '1' },
        { event: 'RESYNC', data: '{}', id: undefined },
      ], `split at ${i}`);
    }
  });

  void it('does not dispatch an event that never ended', () => {
    assert.deepEqual(parse(['id: 1\nevent: ADDED\ndata: x\n']), []);
  });
});
