import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseIdempotencyKey } from './key.js';

describe('parseIdempotencyKey', () => {
  it('reads the draft sf-string form and the bare form as the same key', () => {
    assert.equal(parseIdempotencyKey('"8e03978e-40d5-43e8-bc93-6894a57f9324"'), '8e03978e-40d5-43e8-bc93-6894a57f9324');
    assert.equal(parseIdempotencyKey('8e03978e-40d5-43e8-bc93-6894a57f9324'), '8e03978e-40d5-43e8-bc93-6894a57f9324');
    assert.equal(parseIdempotencyKey('  "abc"\t'), 'abc');
    assert.equal(parseIdempotencyKey('"a \\"quoted\\" \\\\ key"'), 'a "quoted" \\ key');
  });

  it('accepts exactly 255 characters and refuses 256', () => {
    assert.equal(parseIdempotencyKey('k'.repeat(255)), 'k'.repeat(255));
    assert.equal(parseIdempotencyKey('k'.repeat(256)), undefined);
    assert.equal(parseIdempotencyKey(`"${'k'.repeat(255)}"`), 'k'.repeat(255));
    assert.equal(parseIdempotencyKey(`"${'k'.repeat(256)}"`), undefined);
  });

  it('refuses empty, non-printable, non-ASCII and malformed sf-string values', () => {
    for (const bad of ['', '   ', '""', 'a\u0001b', 'caf\u00e9', 'tab\there', '"abc', '"a"b', '"a", "b"', '"\\x"', '"\u00e9"', 'a\u007f']) {
      assert.equal(parseIdempotencyKey(bad), undefined, JSON.stringify(bad));
    }
  });
});
