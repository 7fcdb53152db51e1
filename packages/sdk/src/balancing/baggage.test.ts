import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BAGGAGE_MAX_BYTES,
  BAGGAGE_MAX_MEMBERS,
  getBaggage,
  getLane,
  getUserId,
  isStress,
  parseBaggage,
  serializeBaggage,
  setBaggage,
  setLane,
  setStress,
  stripInternal,
} from './baggage.js';
import { seeded } from './testkit.test.helpers.js';

const entries = (h: string | string[] | undefined) => Object.fromEntries([...parseBaggage(h)].map(([k, e]) => [k, e.value]));

describe('baggage parsing', () => {
  it('reads the W3C examples', () => {
    const b = parseBaggage('key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue');
    assert.deepEqual(entries('key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue'), {
      key1: 'value1',
      key2: 'value2',
      key3: 'value3',
    });
    assert.equal(b.get('key1')?.properties, ';property1;property2');
    assert.equal(b.get('key3')?.properties, ';propertyKey=propertyValue');
    assert.equal(b.get('key2')?.properties, undefined);
    assert.deepEqual(entries('userId=alice,serverNode=DF%2028,isProduction=false'), {
      userId: 'alice',
      serverNode: 'DF 28',
      isProduction: 'false',
    });
    assert.deepEqual(entries('key1=value1, key2=, key3=%E2%9C%93'), { key1: 'value1', key2: '', key3: '✓' });
  });

  it('joins repeated headers and lets a later key win', () => {
    assert.deepEqual(entries(['a=1', 'b=2, a=3']), { a: '3', b: '2' });
    assert.deepEqual(entries(undefined), {});
    assert.deepEqual(entries(''), {});
  });

  it('drops malformed members and keeps the rest', () => {
    const h = [
      'good=1',
      'novalue',
      '=nokey',
      'bad key=1',
      'k(=1',
      'sp=a b',
      'quote=a"b',
      'back=a\\b',
      'pct=%zz',
      'utf=%C3%28',
      'prop=1;bad prop',
      'prop2=1;=x',
      ',',
      ' ok2 = 2 ',
      'tab=\t3\t',
    ].join(',');
    assert.deepEqual(entries(h), { good: '1', ok2: '2', tab: '3' });
  });

  it('enforces the member and byte limits', () => {
    const many = Array.from({ length: 250 }, (_, i) => `k${i}=v`).join(',');
    const b = parseBaggage(many);
    assert.equal(b.size, BAGGAGE_MAX_MEMBERS);
    assert.equal(b.has('k179'), true);
    assert.equal(b.has('k180'), false);

    const fat = Array.from({ length: 6 }, (_, i) => `f${i}=${'x'.repeat(2000)}`).join(',');
    const fb = parseBaggage(fat);
    assert.deepEqual([...fb.keys()], ['f0', 'f1', 'f2', 'f3'], 'members past 8192 bytes are dropped');
    assert.equal(parseBaggage(`big=${'x'.repeat(5000)},small=1`).size, 1, 'a member over 4096 bytes is dropped');
  });
});

describe('baggage serialization', () => {
  it('percent-encodes values and round-trips', () => {
    const b = parseBaggage('');
    setBaggage(b, 'note', 'a b,c;d=e%f "g" \\ ✓');
    setBaggage(b, 'plain', 'x');
    const h = serializeBaggage(b);
    assert.match(h, /^[\x21-\x7e]+$/);
    assert.equal(getBaggage(parseBaggage(h), 'note'), 'a b,c;d=e%f "g" \\ ✓');
    assert.equal(h.split(',').length, 2);
    assert.equal(serializeBaggage(parseBaggage('key1=value1;property1;property2,key3=value3;propertyKey=propertyValue')),
      'key1=value1;property1;property2,key3=value3;propertyKey=propertyValue');
  });

  it('refuses invalid keys and stays within limits', () => {
    const b = parseBaggage('');
    assert.equal(setBaggage(b, 'bad key', 'x'), false);
    assert.equal(setBaggage(b, '', 'x'), false);
    for (let i = 0; i < 300; i++) setBaggage(b, `k${i}`, 'y'.repeat(40));
    const h = serializeBaggage(b);
    assert.ok(h.length <= BAGGAGE_MAX_BYTES);
    assert.ok(h.split(',').length <= BAGGAGE_MAX_MEMBERS);
    assert.equal(parseBaggage(h).size, h.split(',').length);
  });

  it('has helpers for lane, stress mark and user id', () => {
    const b = parseBaggage('plinth.lane=gray, plinth.stress=1, user.id=u%2042');
    assert.equal(getLane(b), 'gray');
    assert.equal(isStress(b), true);
    assert.equal(getUserId(b), 'u 42');
    setLane(b, undefined);
    setStress(b, false);
    assert.equal(getLane(b), undefined);
    assert.equal(isStress(b), false);
    setLane(b, 'blue');
    setStress(b, true);
    assert.equal(serializeBaggage(b), 'user.id=u%2042,plinth.lane=blue,plinth.stress=1');
    assert.equal(getLane(parseBaggage('plinth.lane=')), undefined);
    assert.equal(isStress(parseBaggage('plinth.stress=yes')), false);
    assert.deepEqual([...stripInternal(b, new Set(['plinth.stress'])).keys()], ['plinth.stress']);
  });

  it('never throws on random input, and re-serializes stably', () => {
    const random = seeded(1234);
    const alphabet = 'ab=;,% \t"\\\x00\x7f=é✓\uD800%2%41kK-._*+~!#$&\'|^`()';
    for (let i = 0; i < 5000; i++) {
      const len = Math.floor(random() * 80);
      let s = '';
      for (let j = 0; j < len; j++) s += alphabet[Math.floor(random() * alphabet.length)];
      const b = parseBaggage(s);
      const once = serializeBaggage(b);
      assert.equal(serializeBaggage(parseBaggage(once)), once, JSON.stringify(s));
    }
  });
});
