// The thread a WalCheckpointer starts: its own connection to the span file, which copies the WAL back
// into the database when asked. A checkpoint ends in two fsyncs (tens to hundreds of ms on a busy disk);
// run here, they stall this thread instead of the event loop that serves ingest.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointReply, CheckpointRequest } from './wal-checkpointer.js';

const port = parentPort!;
const { path } = workerData as { path: string };
let db: Database.Database | undefined;

function reply(r: CheckpointReply): void {
  port.postMessage(r);
}

try {
  db = new Database(path, { fileMustExist: true });
  db.pragma('busy_timeout = 5000');
  // Per connection: the checkpoint syncs the WAL and the database as the writer's NORMAL would.
  db.pragma('synchronous = NORMAL');
  // This connection never writes; it must never checkpoint on its own either.
  db.pragma('wal_autocheckpoint = 0');
  reply({ type: 'ready' });
} catch (e) {
  reply({ type: 'failed', message: (e as Error).message });
  port.close();
}

port.on('message', (m: CheckpointRequest) => {
  if (!db) return;
  if (m === 'close') {
    db.close();
    db = undefined;
    port.close();
    return;
  }
  try {
    // PASSIVE: never waits for the writer or readers; copies what no reader still needs.
    const r = (db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[])[0]!;
    reply({ type: 'done', log: r.log, checkpointed: r.checkpointed });
  } catch (e) {
    reply({ type: 'failed', message: (e as Error).message });
  }
});
