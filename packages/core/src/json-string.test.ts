import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jsonString } from './json-string.js';

describe('jsonString', () => {
  it('is what JSON.stringify gives, for plain text and for everything JSON must escape', () => {
    for (const s of ['', 'GET /orders/:id', '4bf92f3577b34da6', 'é ü 漢 😀', 'a"b', 'back\\slash', 'line\nbreak', '\u0000\u001f', 'lone \ud800 high', 'lone \udc00 low']) {
      assert.equal(jsonString(s), JSON.stringify(s), JSON.stringify(s));
    }
  });
});
