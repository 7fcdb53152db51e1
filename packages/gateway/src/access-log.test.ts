import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { accessLine, createAccessLog, IsoClock, type AccessEntry } from './access-log.js';
import { sleep } from './testkit.test.helpers.js';

const entry = (i: number): AccessEntry => ({
  method: 'GET', host: 'shop.example.com', path: `/api/items/${i}`, route: 'edge/items', service: 'items', status: 200, durationMs: 1.25,
  upstream: '10.0.0.7:8080', bytesIn: 0, bytesOut: 120, traceId: '4bf92f3577b34da6a3ce929d0e0e4736', identity: 'shopper',
  lane: undefined, stress: false, reason: undefined,
});

const lines = (file: string): Record<string, unknown>[] =>
  readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

describe('access log to a file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-access-log-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a lone request\'s line without waiting for more traffic', async () => {
    const file = join(dir, 'quiet.log');
    const log = createAccessLog({ destination: file });
    log.write(entry(1));
    let seen: Record<string, unknown>[] = [];
    for (let i = 0; i < 60 && seen.length === 0; i++) {
      await sleep(50);
      try {
        seen = lines(file);
      } catch {
        /* not created yet */
      }
    }
    assert.equal(seen.length, 1, 'the line reached the file while the log was still open');
    assert.equal(seen[0]!.path, '/api/items/1');
    assert.equal(seen[0]!.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.match(String(seen[0]!.time), /^\d{4}-\d{2}-\d{2}T/);
    await log.close();
  });

  it('has every line in the file once closed', async () => {
    const file = join(dir, 'busy.log');
    const log = createAccessLog({ destination: file });
    for (let i = 0; i < 2000; i++) log.write(entry(i));
    await log.close();
    const seen = lines(file);
    assert.equal(seen.length, 2000);
    assert.equal(seen[1999]!.path, '/api/items/1999');
    assert.equal(log.dropped, 0);
  });

  it('drops and counts lines, within a bounded buffer, while the destination takes nothing', async () => {
    const fifo = join(dir, 'stuck.fifo');
    execFileSync('mkfifo', [fifo]);
    // A reader that holds the pipe open but does not read (a stuck log shipper).
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const log = createAccessLog({ destination: fifo });
    await sleep(100);
    // ~40 MiB of lines against a 64 KiB pipe and a 16 MiB buffer.
    for (let i = 0; i < 140_000; i++) log.write(entry(i));
    assert.ok(log.dropped > 50_000, `dropped ${log.dropped}`);
    assert.ok(log.dropped < 140_000, 'lines up to the bound were kept');
    // The shipper catches up: what was kept drains, and the log closes.
    const buf = Buffer.alloc(1 << 20);
    const drained = log.close();
    let open = true;
    drained.then(() => (open = false), () => (open = false));
    while (open) {
      try {
        readSync(reader, buf);
      } catch {
        /* EAGAIN: nothing to read this instant */
      }
      await sleep(1);
    }
    closeSync(reader);
  });
});

describe('access log lines', () => {
  /** What pino itself writes for `info(e)` at `time`: the format the gateway's lines keep. */
  const viaPino = (e: AccessEntry, time: string): string => {
    let out = '';
    const log = pino({ base: null, messageKey: 'msg', timestamp: () => `,"time":"${time}"` }, { write: (s: string) => void (out += s) });
    log.info(e);
    return out;
  };
  const time = '2026-12-01T13:32:48.007Z';

  it('are the lines pino writes, field for field, with and without the optional fields', () => {
    const full: AccessEntry = { ...entry(7), lane: 'canary', stress: true, reason: 'upstream_error', durationMs: 12.5, status: 503, grpcStatus: 14 };
    const bare: AccessEntry = { ...entry(8), route: undefined, upstream: undefined, traceId: undefined, identity: undefined, status: 404 };
    // The request ID in the place the gateway's entries hold it, after the trace id.
    const { identity, lane, stress, reason, grpcStatus, ...head } = full;
    const withId: AccessEntry = { ...head, requestId: 'lb-7f3a', identity, lane, stress, reason, grpcStatus };
    for (const e of [entry(1), full, bare, withId]) assert.equal(accessLine(e, time), viaPino(e, time));
  });

  it('escape what clients send, so every line stays one valid JSON object', () => {
    const e: AccessEntry = { ...entry(2), host: 'evil"host\\', path: '/a\nb\u0001c', identity: 'é ü 漢', lane: 'x\ud800y' };
    const line = accessLine(e, time);
    assert.equal(line.indexOf('\n'), line.length - 1, 'one line');
    const parsed = JSON.parse(line) as Record<string, unknown>;
    assert.equal(parsed.host, 'evil"host\\');
    assert.equal(parsed.path, '/a\nb\u0001c');
    assert.equal(parsed.identity, 'é ü 漢');
    // A lone surrogate is escaped rather than written as a byte sequence that is not UTF-8.
    assert.equal(parsed.lane, 'x\ud800y');
    assert.match(line, /"lane":"x\\ud800y"/);
    // pino agrees on everything else.
    const { lane: _lane, ...rest } = parsed;
    const { lane: _pinoLane, ...pinoRest } = JSON.parse(viaPino({ ...e, lane: 'x' }, time)) as Record<string, unknown>;
    assert.deepEqual(rest, pinoRest);
  });
});

describe('IsoClock', () => {
  it('reads what Date#toISOString reads, across seconds and for every width of milliseconds', () => {
    let t = 0;
    const c = new IsoClock(() => t);
    for (const at of [Date.UTC(2026, 11, 1, 13, 32, 48, 7), Date.UTC(2026, 11, 1, 13, 32, 48, 42), Date.UTC(2026, 11, 1, 13, 32, 48, 999), Date.UTC(2026, 11, 1, 13, 32, 49, 0), Date.UTC(2027, 0, 1, 0, 0, 0, 100), 0]) {
      t = at;
      assert.equal(c.now(), new Date(at).toISOString());
    }
  });
});
