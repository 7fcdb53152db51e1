import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { seeded } from './testkit.test.helpers.js';
import { childContext, childTraceparent, formatTraceparent, isSampled, newTraceContext, parseTraceparent, randomSpanId, randomTraceId } from './traceparent.js';

const EXAMPLE = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('traceparent', () => {
  it('parses and formats the spec example', () => {
    const ctx = parseTraceparent(EXAMPLE);
    assert.deepEqual(ctx, { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', flags: 1 });
    assert.ok(ctx && isSampled(ctx));
    assert.equal(ctx && formatTraceparent(ctx), EXAMPLE);
    const unsampled = parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00');
    assert.ok(unsampled && !isSampled(unsampled));
    assert.equal(formatTraceparent({ traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), flags: 0xab }), `00-${'a'.repeat(32)}-${'b'.repeat(16)}-ab`);
  });

  it('formats a child of a trace with a new span id each time, keeping the flags', () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const one = childTraceparent(traceId, 1);
    const two = childTraceparent(traceId, 1);
    const c = parseTraceparent(one);
    assert.ok(c);
    assert.deepEqual([c.traceId, c.flags], [traceId, 1]);
    assert.notEqual(one, two);
    assert.match(childTraceparent(traceId, 0), /-00$/);
    assert.match(childTraceparent(traceId, 0xab), /-ab$/);
  });

  it('rejects what the spec calls invalid', () => {
    for (const bad of [
      undefined,
      '',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01', // all-zero trace id
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', // all-zero parent id
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', // version ff
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', // uppercase
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra', // 00 has exactly four fields
      '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01', // short trace id
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g',
      '0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01',
      'cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x', // future version: extra must follow a dash
    ])
      assert.equal(parseTraceparent(bad), undefined, String(bad));
  });

  it('reads future versions by their 00 prefix', () => {
    assert.deepEqual(parseTraceparent('cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds'), {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      flags: 1,
    });
    assert.ok(parseTraceparent(` ${EXAMPLE} `), 'surrounding whitespace is tolerated');
  });

  it('creates children with the same trace and a new span', () => {
    const root = newTraceContext();
    const child = childContext(root);
    assert.equal(child.traceId, root.traceId);
    assert.notEqual(child.spanId, root.spanId);
    assert.equal(child.flags, root.flags);
    assert.deepEqual(parseTraceparent(formatTraceparent(child)), child);
    assert.equal(newTraceContext(false).flags, 0);
  });

  it('generates valid, distinct ids across pool refills', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 5000; i++) {
      const t = randomTraceId();
      const s = randomSpanId();
      assert.match(t, /^[0-9a-f]{32}$/);
      assert.match(s, /^[0-9a-f]{16}$/);
      seen.add(t);
    }
    assert.equal(seen.size, 5000);
  });

  it('never throws on random input', () => {
    const random = seeded(77);
    const alphabet = '0123456789abcdefABCDEF-xz \t';
    for (let i = 0; i < 5000; i++) {
      let s = i % 2 ? EXAMPLE : '';
      const len = Math.floor(random() * 70);
      const chars = [...s];
      for (let j = 0; j < len; j++) {
        const c = alphabet[Math.floor(random() * alphabet.length)] ?? '';
        if (i % 2) chars[Math.floor(random() * chars.length)] = c;
        else chars.push(c);
      }
      s = chars.join('');
      const ctx = parseTraceparent(s);
      if (ctx) assert.deepEqual(parseTraceparent(formatTraceparent(ctx)), ctx);
    }
  });
});
