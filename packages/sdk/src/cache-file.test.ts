import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Resource } from '@plinth/core';
import { CacheWriter, loadCache, type CacheContents, type CacheScope } from './cache-file.js';
import { recordingLogger } from './testing/control-plane.js';

const dir = mkdtempSync(join(tmpdir(), 'plinth-sdk-cache-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const scope: CacheScope = { kinds: ['Config', 'Instance'], namespace: 'app', selector: 'team=a' };
const item: Resource = {
  apiVersion: 'plinth.dev/v1',
  kind: 'Config',
  metadata: { namespace: 'app', name: 'a', labels: { team: 'a' }, annotations: {}, revision: 7, createRevision: 7, createdAt: '', updatedAt: '' },
  spec: { content: 'x' },
};
const contents = (over: Partial<CacheContents> = {}): CacheContents => ({ version: 1, ...scope, revision: 9, items: [item], savedAt: new Date().toISOString(), ...over });

test('a cache round-trips through the writer, atomically and without leftovers', async () => {
  const file = join(dir, 'sub', 'round-trip.json');
  let state = contents();
  const w = new CacheWriter(file, () => state, recordingLogger(), 20);
  w.schedule();
  state = contents({ revision: 10 }); // produced when the timer fires: the latest state is what lands
  w.schedule(); // coalesced into the same write
  await w.flush();
  const log = recordingLogger();
  assert.deepEqual(await loadCache(file, scope, log), { revision: 10, items: [item] });
  assert.deepEqual(log.warnings, []);
  assert.deepEqual(readdirSync(join(dir, 'sub')), ['round-trip.json'], 'no temporary file left behind');
});

test('a missing cache is silent; corrupt, foreign-scope or malformed ones are ignored with a warning', async () => {
  const log = recordingLogger();
  assert.equal(await loadCache(join(dir, 'absent.json'), scope, log), undefined);
  assert.deepEqual(log.warnings, []);

  const cases: [string, string][] = [
    ['garbage', '{"version":1,"revision":'],
    ['not an object', '"hello"'],
    ['unknown version', JSON.stringify(contents({ version: 2 as 1 }))],
    ['other kinds', JSON.stringify(contents({ kinds: ['Config'] }))],
    ['other namespace', JSON.stringify(contents({ namespace: null }))],
    ['other selector', JSON.stringify(contents({ selector: '' }))],
    ['malformed item', JSON.stringify(contents({ items: [{ kind: 'Config' } as Resource] }))],
    ['item of another kind', JSON.stringify(contents({ items: [{ ...item, kind: 'Secret' }] }))],
  ];
  for (const [what, text] of cases) {
    const file = join(dir, `bad-${what.replace(/ /g, '-')}.json`);
    writeFileSync(file, text);
    const l = recordingLogger();
    assert.equal(await loadCache(file, scope, l), undefined, what);
    assert.equal(l.warnings.length, 1, `${what}: one warning`);
  }
});

test('a failed write is a warning, not a crash', async () => {
  const blocker = join(dir, 'blocker');
  writeFileSync(blocker, 'a file where a directory is needed');
  const log = recordingLogger();
  const w = new CacheWriter(join(blocker, 'cache.json'), () => contents(), log, 1);
  w.schedule();
  await w.flush();
  assert.equal(log.warnings.length, 1);
  assert.equal(readFileSync(blocker, 'utf8'), 'a file where a directory is needed');
});
