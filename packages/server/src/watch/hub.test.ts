import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { SqliteStore } from '../store/sqlite.js';
import type { StoredChange } from '../store/types.js';
import { WatchHub } from './hub.js';

const log = pino({ level: 'silent' });

/** A store whose change log reads lag, as they do on a busy database: in-process caches fall behind commits. */
async function laggingStore(lagMs: number): Promise<SqliteStore> {
  const store = new SqliteStore(':memory:', { onError: () => {} });
  await store.init();
  const read = store.changesSince.bind(store);
  store.changesSince = async (after: number, limit: number) => {
    await sleep(lagMs);
    return read(after, limit);
  };
  return store;
}

const put = (store: SqliteStore, name: string) =>
  store.put({ kind: 'Config', namespace: 'team-a', name, labels: {}, annotations: {}, spec: { content: name } });

describe('WatchHub.reached', () => {
  it('resolves only after every listener has seen the revision, however slow the change log', async () => {
    const store = await laggingStore(40);
    const hub = new WatchHub(store, log, 60_000);
    await hub.start();
    const seen: number[] = [];
    hub.onChange((ch: StoredChange) => seen.push(ch.revision));
    try {
      for (let i = 0; i < 3; i++) {
        const { resource } = await put(store, `c${i}`);
        const rev = resource.metadata.revision;
        assert.equal(seen.includes(rev), false, 'the lag this test relies on');
        assert.equal(await hub.reached(rev), true);
        assert.equal(seen.at(-1), rev);
      }
      assert.equal(await hub.reached(1), true, 'a revision already dispatched resolves at once');
    } finally {
      await hub.stop();
      await store.close();
    }
  });

  it('gives up with false after the timeout when the revision never comes, and on stop', async () => {
    const store = await laggingStore(0);
    const hub = new WatchHub(store, log, 60_000);
    await hub.start();
    try {
      assert.equal(await hub.reached(1000, 50), false);
      const pending = hub.reached(1001, 60_000);
      await hub.stop();
      assert.equal(await pending, false);
    } finally {
      await store.close();
    }
  });
});
