import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Resource, WatchEvent } from '@plinth/core';
import { parse as parseYaml } from 'yaml';
import { UsageError } from './errors.js';
import {
  diffView,
  formatAge,
  formatChanges,
  formatHistory,
  formatResource,
  formatResourceList,
  formatWatchEvent,
  parseOutputFormat,
  renderTable,
} from './output.js';
import { unifiedYamlDiff } from './commands/diff.js';

const NOW = Date.parse('2026-01-10T12:00:00Z');

function res(kind: string, name: string, spec: Record<string, unknown>, extra: Partial<Resource['metadata']> = {}): Resource {
  return {
    apiVersion: 'plinth.dev/v1',
    kind,
    metadata: {
      namespace: 'retail',
      name,
      labels: {},
      annotations: {},
      revision: 42,
      createRevision: 40,
      createdAt: '2026-01-10T11:55:00Z',
      updatedAt: '2026-01-10T11:59:00Z',
      ...extra,
    },
    spec,
  };
}

void describe('renderTable', () => {
  void it('pads columns to the widest cell, three spaces apart, without trailing blanks', () => {
    const t = renderTable(['A', 'LONGER'], [['xxxxx', 'y'], ['z', '']]);
    assert.equal(t, 'A       LONGER\nxxxxx   y\nz');
  });
});

void describe('formatAge', () => {
  void it('prints kubectl-style compact ages', () => {
    assert.equal(formatAge('2026-01-10T11:59:15Z', NOW), '45s');
    assert.equal(formatAge('2026-01-10T11:48:00Z', NOW), '12m');
    assert.equal(formatAge('2026-01-10T07:00:00Z', NOW), '5h');
    assert.equal(formatAge('2026-01-07T12:00:00Z', NOW), '3d');
    assert.equal(formatAge(undefined, NOW), '<unknown>');
    assert.equal(formatAge('not a date', NOW), '<unknown>');
    // A clock slightly ahead on the server is not a negative age.
    assert.equal(formatAge('2026-01-10T12:00:05Z', NOW), '0s');
  });
});

void describe('resource tables', () => {
  void it('shows the common columns plus FORMAT for Config', () => {
    const t = formatResourceList([res('Config', 'checkout', { format: 'yaml', content: 'a: 1\n' })], 'table', 42, NOW);
    const [head, row] = t.split('\n');
    assert.match(head!, /^NAMESPACE\s+NAME\s+REVISION\s+AGE\s+FORMAT$/);
    assert.match(row!, /^retail\s+checkout\s+42\s+5m\s+yaml$/);
  });

  void it('shows service, version, lane, address and health for Instance', () => {
    const i = res('Instance', 'orders-1', { service: 'orders', version: '1.2.0', address: '10.0.0.7:8080', health: 'passing', draining: true });
    const [head, row] = formatResource(i, 'table', NOW).split('\n');
    assert.match(head!, /^NAMESPACE\s+NAME\s+REVISION\s+AGE\s+SERVICE\s+VERSION\s+LANE\s+ADDRESS\s+HEALTH$/);
    assert.match(row!, /orders\s+1\.2\.0\s+<none>\s+10\.0\.0\.7:8080\s+passing,draining$/);
  });

  void it('shows Secret key names, never values', () => {
    const s = res('Secret', 'db', { keys: ['password', 'user'] });
    const t = formatResource(s, 'table', NOW);
    assert.match(t.split('\n')[0]!, /KEYS$/);
    assert.match(t.split('\n')[1]!, /password,user$/);
  });

  void it('adds a KIND column instead of kind-specific ones when kinds are mixed', () => {
    const t = formatResourceList([res('Config', 'a', {}), res('Secret', 'b', { keys: [] })], 'table', 1, NOW);
    assert.match(t.split('\n')[0]!, /^NAMESPACE\s+NAME\s+KIND\s+REVISION\s+AGE$/);
  });
});

void describe('json and yaml', () => {
  void it('prints one resource as the document itself', () => {
    const r = res('Config', 'checkout', { format: 'text', content: 'line one\nline two\n' });
    assert.deepEqual(JSON.parse(formatResource(r, 'json')), r);
    assert.deepEqual(parseYaml(formatResource(r, 'yaml')), r);
  });

  void it('prints lists as a List document with the list revision', () => {
    const items = [res('Config', 'a', {}), res('Config', 'b', {})];
    const j = JSON.parse(formatResourceList(items, 'json', 77)) as { kind: string; revision: number; items: Resource[] };
    assert.equal(j.kind, 'List');
    assert.equal(j.revision, 77);
    assert.deepEqual(j.items, items);
    const y = parseYaml(formatResourceList(items, 'yaml', 77)) as { kind: string; items: Resource[] };
    assert.equal(y.kind, 'List');
    assert.equal(y.items.length, 2);
  });

  void it('does not fold long lines in YAML', () => {
    const long = 'x'.repeat(300);
    const text = formatResource(res('Config', 'a', { content: long }), 'yaml');
    assert.ok(text.includes(long));
  });
});

void describe('history, watch lines and diffs', () => {
  const ev = (type: WatchEvent['type'], revision: number): WatchEvent => ({ type, revision, resource: res('Config', 'checkout', {}, { revision }) });

  void it('prints history as REVISION TYPE TIME', () => {
    const t = formatHistory([ev('MODIFIED', 43), ev('ADDED', 40)], 'table');
    const lines = t.split('\n');
    assert.match(lines[0]!, /^REVISION\s+TYPE\s+TIME$/);
    assert.match(lines[1]!, /^43\s+MODIFIED\s+2026-01-10T11:59:00Z$/);
    assert.equal(JSON.parse(formatHistory([ev('ADDED', 40)], 'json')).items[0].revision, 40);
  });

  void it('prints one line per watch event', () => {
    assert.equal(formatWatchEvent(ev('MODIFIED', 43), 'table'), 'MODIFIED Config/retail/checkout rev 43');
    const line = formatWatchEvent(ev('DELETED', 44), 'json');
    assert.ok(!line.includes('\n'));
    assert.equal(JSON.parse(line).type, 'DELETED');
  });

  void it('prints server-side changes one per line', () => {
    const t = formatChanges([
      { path: 'spec.content', op: 'replace', before: 'a', after: 'b' },
      { path: 'metadata.labels.team', op: 'add', after: 'orders' },
      { path: 'spec.schema', op: 'remove', before: { type: 'object' } },
    ]);
    assert.equal(t, '~ spec.content: "a" -> "b"\n+ metadata.labels.team: "orders"\n- spec.schema: {"type":"object"}');
    assert.equal(formatChanges([]), 'no changes');
  });

  void it('makes a unified diff of the YAML, without revision bookkeeping', () => {
    const a = res('Config', 'c', { content: 'one' }, { revision: 1 });
    const b = res('Config', 'c', { content: 'two' }, { revision: 2, updatedAt: '2026-01-10T11:59:59Z' });
    const patch = unifiedYamlDiff('Config/retail/c', 1, 2, diffView(a), diffView(b));
    assert.match(patch, /^--- Config\/retail\/c@1/m);
    assert.match(patch, /^\+\+\+ Config\/retail\/c@2/m);
    assert.match(patch, /^-\s+content: one$/m);
    assert.match(patch, /^\+\s+content: two$/m);
    assert.doesNotMatch(patch, /revision|updatedAt/);
    assert.equal(unifiedYamlDiff('x', 1, 2, diffView(a), diffView(a)), '');
  });
});

void describe('parseOutputFormat', () => {
  void it('accepts the three formats and rejects others as usage errors', () => {
    assert.equal(parseOutputFormat('JSON'), 'json');
    assert.equal(parseOutputFormat(undefined), 'table');
    assert.throws(() => parseOutputFormat('xml'), UsageError);
  });
});
