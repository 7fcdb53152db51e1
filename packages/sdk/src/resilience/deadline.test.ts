import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deadlineAt, formatGrpcTimeout, formatTimeout, MAX_TIMEOUT_MS, parseGrpcTimeout, parseTimeoutHeader, remainingMs } from './deadline.js';

describe('parseTimeoutHeader', () => {
  it('reads a non-negative integer of ms', () => {
    assert.equal(parseTimeoutHeader('250'), 250);
    assert.equal(parseTimeoutHeader(' 250 '), 250);
    assert.equal(parseTimeoutHeader('0'), 0);
    assert.equal(parseTimeoutHeader('007'), 7);
    assert.equal(parseTimeoutHeader(undefined), undefined);
  });

  it('rejects hostile and malformed values', () => {
    for (const v of ['', ' ', '-1', '+5', '1.5', '1e3', '0x10', 'NaN', 'Infinity', '12ms', '١٢', '5 5', ',', '1,', '1,abc']) {
      assert.equal(parseTimeoutHeader(v), undefined, JSON.stringify(v));
    }
    assert.equal(parseTimeoutHeader([]), undefined);
    assert.equal(parseTimeoutHeader(['100', '-1']), undefined);
  });

  it('caps huge values instead of trusting them', () => {
    assert.equal(parseTimeoutHeader(String(MAX_TIMEOUT_MS + 1)), MAX_TIMEOUT_MS);
    assert.equal(parseTimeoutHeader('9'.repeat(400)), MAX_TIMEOUT_MS, 'would be Infinity as a Number');
    assert.equal(parseTimeoutHeader('1'.repeat(100_000)), MAX_TIMEOUT_MS);
    assert.equal(MAX_TIMEOUT_MS, 86_400_000);
  });

  it('takes the tightest of repeated fields', () => {
    assert.equal(parseTimeoutHeader(['300', '100']), 100);
    assert.equal(parseTimeoutHeader('300, 100'), 100);
    assert.equal(parseTimeoutHeader(['300, 50', '100']), 50);
  });
});

describe('deadlineAt and remainingMs', () => {
  it('takes the smallest defined budget', () => {
    assert.equal(deadlineAt(1000, 500, undefined, 200), 1200);
    assert.equal(deadlineAt(1000, undefined, 800), 1800);
    assert.equal(deadlineAt(1000), undefined);
    assert.equal(deadlineAt(1000, undefined, undefined), undefined);
  });

  it('reads NaN and Infinity as no budget and a negative one as none left', () => {
    assert.equal(deadlineAt(1000, NaN, Infinity), undefined);
    assert.equal(deadlineAt(1000, NaN, 300), 1300);
    assert.equal(deadlineAt(1000, -50, 300), 1000);
  });

  it('counts down to 0, never below, and is Infinity without a deadline', () => {
    assert.equal(remainingMs(1500, 1000), 500);
    assert.equal(remainingMs(1500, 1500), 0);
    assert.equal(remainingMs(1500, 9000), 0);
    assert.equal(remainingMs(undefined, 1000), Infinity);
  });
});

describe('formatTimeout', () => {
  it('sends whole ms, rounded down', () => {
    assert.equal(formatTimeout(250), '250');
    assert.equal(formatTimeout(249.9), '249');
    assert.equal(formatTimeout(0.4), '0');
  });

  it('never sends a negative, fractional, exponent or unbounded value', () => {
    assert.equal(formatTimeout(-5), '0');
    assert.equal(formatTimeout(NaN), '0');
    assert.equal(formatTimeout(Infinity), String(MAX_TIMEOUT_MS));
    assert.equal(formatTimeout(1e25), String(MAX_TIMEOUT_MS));
  });

  it('formats each value anew when the figure changes from call to call', () => {
    assert.deepEqual([1000, 1000, 999.5, 1000, 0.4, 1000, 86_400_001].map(formatTimeout), ['1000', '1000', '999', '1000', '0', '1000', String(MAX_TIMEOUT_MS)]);
  });

  it('round-trips through parseTimeoutHeader', () => {
    for (const v of [0, 1, 999.99, 30_000, MAX_TIMEOUT_MS]) assert.equal(parseTimeoutHeader(formatTimeout(v)), Math.floor(v));
  });
});

describe('parseGrpcTimeout and formatGrpcTimeout', () => {
  it('reads every unit of gRPC over HTTP/2 into ms, and writes whole ms back', () => {
    assert.deepEqual(['1H', '2M', '5S', '250m', '1500u', '2000000n'].map((v) => parseGrpcTimeout(v)), [3_600_000, 120_000, 5000, 250, 1.5, 2]);
    assert.equal(formatGrpcTimeout(1234.9), '1234m');
    assert.equal(formatGrpcTimeout(-5), '0m');
    assert.equal(parseGrpcTimeout(formatGrpcTimeout(4321)), 4321);
  });

  it('refuses what the grammar does not allow, and caps what is too long to honour', () => {
    for (const bad of [undefined, '', '5', 'S', '5s', '5 S', '-5S', '1.5S', '123456789S', '5S, 6S']) assert.equal(parseGrpcTimeout(bad), undefined, String(bad));
    assert.equal(parseGrpcTimeout(['5S']), undefined, 'a repeated header is not one timeout');
    assert.equal(parseGrpcTimeout('99999999H'), MAX_TIMEOUT_MS);
  });
});
