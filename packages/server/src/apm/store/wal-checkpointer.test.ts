import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import Database from 'better-sqlite3';
import { WalCheckpointer } from './wal-checkpointer.js';

void it('WalCheckpointer: asks for a checkpoint once the estimated WAL reaches the target, learns frames per span, closes quietly', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-wal-'));
  const path = join(dir, 'a.db');
  const db = new Database(path);
  const errors: unknown[] = [];
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.exec('CREATE TABLE t (v TEXT)');
    const cp = await WalCheckpointer.start(path, { targetFrames: 100, onError: (e) => errors.push(e) });
    const write = (rows: number) => {
      const ins = db.prepare('INSERT INTO t VALUES (?)');
      db.transaction(() => {
        for (let i = 0; i < rows; i++) ins.run('x'.repeat(6000));
      })();
    };
    // A function, so that one assertion's narrowing of `cp.idle` does not stick to the next reading.
    const idle = (): Promise<void> | undefined => cp.idle;
    write(10);
    cp.written(10);
    assert.ok(idle() === undefined, 'an estimated 10 frames: below the target');
    write(100);
    cp.written(100);
    const first = idle();
    assert.ok(first, 'an estimated 110 frames: a checkpoint runs');
    await first;
    const frames = cp.lastWalFrames ?? 0;
    assert.ok(frames >= 1.3 * 110, `the WAL held ${frames} frames`);
    // Now 1.3 or more frames per span are known (a 6000-byte row spills into an overflow page): 80 spans
    // reach the target of 100, where the first guess (1 frame per span) would have waited for 100.
    write(80);
    cp.written(80);
    const second = idle();
    assert.ok(second, 'the learnt ratio triggers the next checkpoint sooner');
    await second;
    await cp.close();
    assert.equal(cp.alive, false);
    assert.deepEqual(errors, []);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

void it('WalCheckpointer: a file it cannot open fails the start', async () => {
  await assert.rejects(WalCheckpointer.start(join(tmpdir(), 'plinth-wal-missing', 'nope.db')), /directory does not exist|unable to open/);
});
