import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigFormatError, parseConfigContent, parseProperties } from './config-format.js';
import { resolveConfig } from './kinds/config.js';

describe('config formats', () => {
  it('parses Java properties: separators, comments, continuations, escapes', () => {
    const text = '# comment\n! also\na=1\nb : two\nc three\nlong = one \\\n   two\nunicode=\\u00e9t\\u00e9\nkey\\ with\\ space=v\ntab=a\\tb\nempty=\n';
    assert.deepEqual(parseProperties(text), { a: '1', b: 'two', c: 'three', long: 'one two', unicode: 'été', 'key with space': 'v', tab: 'a\tb', empty: '' });
  });
  it('reports bad JSON, YAML and escapes as format errors', () => {
    assert.throws(() => parseConfigContent('json', '{"a":'), ConfigFormatError);
    assert.throws(() => parseConfigContent('yaml', 'a: [1, 2\nb: 3'), /YAML/);
    assert.throws(() => parseConfigContent('properties', 'a=\\u12'), /line 1/);
    assert.deepEqual(parseConfigContent('yaml', 'a: 1\nb: [x]\n'), { a: 1, b: ['x'] });
    assert.equal(parseConfigContent('text', 'anything {'), 'anything {');
  });
});

describe('gray config resolution', () => {
  const spec = {
    content: 'main',
    gray: [
      { name: 'canary', match: { lanes: ['canary'] }, content: 'canary' },
      { name: 'pinned', match: { instances: ['orders-7'] }, content: 'pinned' },
      { name: 'eu', match: { labels: { region: 'eu', tier: 'gold' } }, content: 'eu-gold' },
    ],
  };
  it('picks the first matching variant, else the main content', () => {
    assert.deepEqual(resolveConfig(spec, { lane: 'canary', instance: 'orders-7' }), { content: 'canary', variant: 'canary' });
    assert.deepEqual(resolveConfig(spec, { instance: 'orders-7' }), { content: 'pinned', variant: 'pinned' });
    assert.deepEqual(resolveConfig(spec, { labels: { region: 'eu', tier: 'gold', x: 'y' } }), { content: 'eu-gold', variant: 'eu' });
    assert.deepEqual(resolveConfig(spec, { labels: { region: 'eu' } }), { content: 'main', variant: undefined });
    assert.deepEqual(resolveConfig(spec, {}), { content: 'main', variant: undefined });
  });
});
