import type { ServerResponse } from 'node:http';
import type { ChangeType, Resource } from '@plinth/core';
import type { StoredChange } from '../store/types.js';
import type { Sink } from './hub.js';
import { typeFor, type WatchFilter } from './filter.js';

/** Past this much unsent data a watcher is too slow; it is dropped and resumes from its last id. */
const MAX_BUFFERED = 8 * 1024 * 1024;

/**
 * Serialized events are shared by every watcher that sees the same change the same way, so publishing to
 * a thousand watchers costs one JSON.stringify, not a thousand.
 */
const frameCache = new WeakMap<StoredChange, Map<ChangeType, string>>();

export function frameOf(ch: StoredChange, type: ChangeType, present: (r: Resource) => Resource): string {
  let byType = frameCache.get(ch);
  if (!byType) {
    byType = new Map();
    frameCache.set(ch, byType);
  }
  let frame = byType.get(type);
  if (frame === undefined) {
    const data = JSON.stringify({ type, revision: ch.revision, resource: present(ch.resource) });
    frame = `id: ${ch.revision}\nevent: ${type}\ndata: ${data}\n\n`;
    byType.set(type, frame);
  }
  return frame;
}

export class SseSink implements Sink {
  private lastSentBookmark = -1;

  constructor(
    private readonly res: ServerResponse,
    private readonly filter: WatchFilter,
    private readonly present: (r: Resource) => Resource,
    private readonly onClose: (reason: string) => void,
  ) {}

  send(ch: StoredChange): boolean {
    const type = typeFor(this.filter, ch);
    if (type === undefined) return true;
    if (this.res.writableLength > MAX_BUFFERED || this.res.destroyed) return false;
    this.res.write(frameOf(ch, type, this.present));
    return true;
  }

  bookmark(revision: number): void {
    this.lastSentBookmark = revision;
    this.res.write(`id: ${revision}\nevent: BOOKMARK\ndata: {"revision":${revision}}\n\n`);
  }

  heartbeat(revision: number): void {
    if (this.res.writableLength > MAX_BUFFERED) return;
    if (revision !== this.lastSentBookmark) this.bookmark(revision);
    else this.res.write(': heartbeat\n\n');
  }

  close(reason: 'resync' | 'slow' | 'shutdown', info?: { revision: number; compactedRevision: number }): void {
    if (reason === 'resync' && info && !this.res.destroyed) {
      this.res.write(`event: RESYNC\ndata: ${JSON.stringify(info)}\n\n`);
    }
    this.onClose(reason);
    this.res.end();
  }
}
