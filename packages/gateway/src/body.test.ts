/**
 * StreamedBody on a stream standing in for the client's request (node:http's IncomingMessage is a
 * Readable; these are its parts the body uses): what each try reads, and when a retry can still replay.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { BodyTooLargeError, REPLAYABLE_BYTES, StreamedBody, type BodyReader } from './body.js';

const request = (): PassThrough & IncomingMessage => new PassThrough() as PassThrough & IncomingMessage;
const tick = () => new Promise((r) => setImmediate(r));

/** Everything a reader yields until it ends (or is stopped), as text. */
async function readAll(reader: BodyReader): Promise<string> {
  let out = '';
  for await (const c of reader) out += (c as Buffer).toString();
  return out;
}

/** What a reader has yielded so far, without waiting for its end. */
function collect(reader: BodyReader): { text: () => string } {
  let out = '';
  reader.on('data', (c: Buffer) => (out += c.toString()));
  return { text: () => out };
}

describe('StreamedBody', () => {
  it('streams to the first try as the client sends, and gives a retry the copy then the rest', async () => {
    const req = request();
    const body = new StreamedBody(req, [], 0, 1 << 20, true);
    const first = collect(body.open());
    req.write('a');
    await tick();
    assert.equal(first.text(), 'a', 'the first try gets bytes before the body ended');
    assert.equal(body.replayable, true);
    const second = body.open();
    req.write('b');
    req.end('c');
    assert.equal(await readAll(second), 'abc', 'the retry starts from the beginning and follows the client');
    assert.equal(first.text(), 'a', 'the try given up on gets no more');
    assert.equal(body.size, 3);
  });

  it('is no longer replayable once more than REPLAYABLE_BYTES passed, or once an answer was taken', async () => {
    const req = request();
    const body = new StreamedBody(req, [], 0, 1 << 20, true);
    const reader = collect(body.open());
    req.write(Buffer.alloc(REPLAYABLE_BYTES, 'x'));
    await tick();
    assert.equal(body.replayable, true, 'exactly the limit is still kept');
    req.write('y');
    await tick();
    assert.equal(body.replayable, false);
    assert.equal(reader.text().length, REPLAYABLE_BYTES + 1, 'the try itself goes on');

    const req2 = request();
    const body2 = new StreamedBody(req2, [], 0, 1 << 20, true);
    const r2 = body2.open();
    req2.write('z');
    r2.commit();
    assert.equal(body2.replayable, false, 'a long-lived stream lets go of its copy once its answer is chosen');
  });

  it('stops a try at the limit without an error of its own, the reason on the reader, and drains the client', async () => {
    const req = request();
    const body = new StreamedBody(req, [], 0, 10, true);
    const reader = body.open();
    const got = collect(reader);
    const closed = once(reader, 'close');
    req.write(Buffer.alloc(8));
    req.write(Buffer.alloc(8));
    await closed;
    assert.equal(got.text(), '\0'.repeat(8));
    assert.equal(reader.errored, null, 'destroyed without an error: undici ends the upstream stream cleanly');
    assert.ok(reader.failure instanceof BodyTooLargeError);
    assert.equal(body.replayable, false);
    req.end(Buffer.alloc(1000));
    await tick();
    assert.equal(req.readableEnded, true, 'the rest of the upload drains, so the client can read its answer');
  });

  it('keeps what comes between two tries for the next one, and drains a body not kept once its try let go', async () => {
    const req = request();
    const body = new StreamedBody(req, [], 0, 1 << 20, true);
    const first = body.open();
    req.write('a');
    await tick();
    // The try ended before the body did (its answer came, a 503 the engine retries).
    first.destroy();
    req.write('b');
    await tick();
    const next = body.open();
    req.end('c');
    assert.equal(await readAll(next), 'abc');

    const req2 = request();
    const body2 = new StreamedBody(req2, [], 0, 1 << 20, false);
    body2.open().destroy();
    req2.end('the rest');
    await tick();
    assert.equal(req2.readableEnded, true, 'drained into nothing');
    assert.equal(body2.replayable, false);
  });
});
