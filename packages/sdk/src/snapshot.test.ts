import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Resource, WatchEvent } from '@plinth/core';
import { Snapshot } from './snapshot.js';

function res(name: string, revision: number, opts: { kind?: string; namespace?: string; labels?: Record<string, string> } = {}): Resource {
  return {
    apiVersion: 'plinth.dev/v1',
    kind: opts.kind ?? 'Config',
    metadata: { namespace: opts.namespace ?? 'app', name, labels: opts.labels ?? {}, annotations: {}, revision, createRevision: revision, createdAt: '', updatedAt: '' },
    spec: { content: `${name}@${revision}` },
  };
}

const ev = (type: WatchEvent['type'], r: Resource): WatchEvent => ({ type, revision: r.metadata.revision, resource: r });

test('apply: ADDED/MODIFIED store, DELETED removes, and what changed is reported from the snapshot’s view', () => {
  const s = new Snapshot();
  assert.deepEqual(s.apply(ev('ADDED', res('a', 5))), ev('ADDED', res('a', 5)));
  assert.equal(s.get('Config', 'app', 'a')?.metadata.revision, 5);
  // A MODIFIED for something not held yet is an addition for this snapshot (and the reverse).
  assert.equal(s.apply(ev('MODIFIED', res('b', 6)))?.type, 'ADDED');
  assert.equal(s.apply(ev('ADDED', res('b', 7)))?.type, 'MODIFIED');
  assert.equal(s.size, 2);
  const gone = s.apply(ev('DELETED', res('a', 8)));
  assert.equal(gone?.type, 'DELETED');
  assert.equal(s.get('Config', 'app', 'a'), undefined);
  assert.equal(s.size, 1);
});

test('apply is idempotent: replays and stale events change nothing', () => {
  const s = new Snapshot();
  s.apply(ev('ADDED', res('a', 5)));
  s.apply(ev('MODIFIED', res('a', 9)));
  assert.equal(s.apply(ev('MODIFIED', res('a', 9))), undefined, 'same revision again');
  assert.equal(s.apply(ev('MODIFIED', res('a', 7))), undefined, 'older revision');
  assert.equal(s.apply(ev('DELETED', res('a', 9))), undefined, 'a delete no newer than the held version');
  assert.equal(s.get('Config', 'app', 'a')?.metadata.revision, 9);
  assert.equal(s.apply(ev('DELETED', res('zzz', 10))), undefined, 'deleting what is not held');
  assert.equal(s.size, 1);
  // A delete then a re-create with newer revisions both apply.
  assert.equal(s.apply(ev('DELETED', res('a', 10)))?.type, 'DELETED');
  assert.equal(s.apply(ev('ADDED', res('a', 11)))?.type, 'ADDED');
  assert.equal(s.get('Config', 'app', 'a')?.metadata.revision, 11);
});

test('get and list are scoped by kind and namespace', () => {
  const s = Snapshot.of([res('a', 1), res('b', 2, { namespace: 'other' }), res('c', 3, { kind: 'Instance' })]);
  assert.deepEqual(s.list('Config').map((r) => r.metadata.name).sort(), ['a', 'b']);
  assert.deepEqual(s.list('Config', 'other').map((r) => r.metadata.name), ['b']);
  assert.deepEqual(s.list('Config', 'nowhere'), []);
  assert.deepEqual(s.list('Nothing'), []);
  assert.equal(s.get('Instance', 'app', 'c')?.metadata.revision, 3);
  assert.equal(s.get('Config', 'app', 'c'), undefined);
  assert.equal([...s.all()].length, 3);
});

test('diff reports what turns one snapshot into another, deletions at the given revision', () => {
  const before = Snapshot.of([res('same', 1), res('changed', 2), res('gone', 3)]);
  const after = Snapshot.of([res('same', 1), res('changed', 12), res('new', 11)]);
  const changes = before.diff(after, 20);
  assert.deepEqual(
    changes.map((c) => [c.type, c.resource.metadata.name, c.revision]),
    [
      ['ADDED', 'new', 11],
      ['MODIFIED', 'changed', 12],
      ['DELETED', 'gone', 20],
    ],
  );
  // The deletion carries the last state held, so a consumer knows what went away.
  assert.equal(changes[2]?.resource.metadata.revision, 3);
  assert.deepEqual(after.diff(after, 20), []);
});
