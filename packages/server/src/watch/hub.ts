import type { Logger } from 'pino';
import type { Resource } from '@plinth/core';
import type { Store, StoredChange } from '../store/types.js';

/** Turns a stored resource into what watchers and readers may see (Secrets lose their sealed values). */
export type Presenter = (r: Resource) => Resource;

export interface Sink {
  /** Writes one event; returns false when the subscriber can't keep up and must be dropped. */
  send(ch: StoredChange): boolean;
  /** Called when the hub reaches a revision with nothing more for this sink (catch-up done, heartbeat). */
  bookmark(revision: number): void;
  /** Periodic keep-alive (shared timer). */
  heartbeat(revision: number): void;
  close(reason: 'resync' | 'slow' | 'shutdown', info?: { revision: number; compactedRevision: number }): void;
}

interface Subscriber {
  sink: Sink;
  /** Live events that arrived while this subscriber replayed history; flushed when it goes live. */
  buffer: StoredChange[] | undefined;
  closed: boolean;
}

const PAGE = 500;

/**
 * One reader of the store's change log per server, fanning changes out in revision order to every
 * watcher. Writes on any server (PostgreSQL NOTIFY) reach this one through `store.onChange`; the hub then
 * reads `changesSince(lastRevision)`, so coalesced or lost notifications cost latency, never events.
 */
export class WatchHub {
  private lastRevision = 0;
  private subscribers = new Set<Subscriber>();
  private listeners: ((ch: StoredChange) => void)[] = [];
  private pumping = false;
  private again = false;
  private unlisten: (() => void) | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private safetyTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private waiters: { revision: number; done: (reached: boolean) => void }[] = [];

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly heartbeatMs: number,
  ) {}

  get revision(): number {
    return this.lastRevision;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  async start(): Promise<void> {
    this.lastRevision = await this.store.currentRevision();
    this.unlisten = this.store.onChange(() => this.pump());
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.heartbeatMs);
    this.heartbeatTimer.unref();
    // A safety net: if a notification is ever lost (connection blip), the next tick still catches up.
    this.safetyTimer = setInterval(() => this.pump(), 1000);
    this.safetyTimer.unref();
  }

  /** Every change, in order, for in-process consumers (identity caches, registry TTLs). Must not throw. */
  onChange(fn: (ch: StoredChange) => void): void {
    this.listeners.push(fn);
  }

  /** Reads and dispatches everything new. Concurrent calls coalesce into one extra pass. */
  pump(): void {
    if (this.stopped) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    void this.drain().finally(() => {
      this.pumping = false;
      if (this.again) {
        this.again = false;
        this.pump();
      }
    });
  }

  /** Waits until every committed change up to `revision` has been dispatched. */
  async caughtUp(revision: number): Promise<void> {
    for (let i = 0; this.lastRevision < revision && !this.stopped; i++) {
      if (i > 100) throw new Error(`watch hub could not reach revision ${revision}`);
      await this.drain();
    }
  }

  /**
   * Resolves true once every change up to `revision` has reached the in-process listeners, so that a
   * request which changed roles or credentials answers only after this server enforces the change; false
   * after `timeoutMs` when the change log cannot be read (the write itself has already committed).
   */
  reached(revision: number, timeoutMs = 5000): Promise<boolean> {
    if (this.lastRevision >= revision || this.stopped) return Promise.resolve(this.lastRevision >= revision);
    return new Promise((resolve) => {
      const w = {
        revision,
        done: (ok: boolean) => {
          clearTimeout(timer);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(w);
      this.pump();
    });
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (w.revision <= this.lastRevision) w.done(true);
      else still.push(w);
    }
    this.waiters = still;
  }

  private async drain(): Promise<void> {
    try {
      for (;;) {
        const batch = await this.store.changesSince(this.lastRevision, PAGE);
        if (batch.length === 0) return;
        for (const ch of batch) {
          if (ch.revision <= this.lastRevision) continue;
          this.lastRevision = ch.revision;
          this.dispatch(ch);
        }
        this.wake();
        if (batch.length < PAGE) return;
      }
    } catch (e) {
      this.log.warn({ err: e }, 'watch hub could not read the change log; retrying on the next notification');
    }
  }

  private dispatch(ch: StoredChange): void {
    for (const fn of this.listeners) {
      try {
        fn(ch);
      } catch (e) {
        this.log.error({ err: e }, 'change listener failed');
      }
    }
    for (const s of this.subscribers) {
      if (s.closed) continue;
      if (s.buffer) s.buffer.push(ch);
      else if (!s.sink.send(ch)) this.drop(s, 'slow');
    }
  }

  private heartbeat(): void {
    for (const s of this.subscribers) if (!s.closed && !s.buffer) s.sink.heartbeat(this.lastRevision);
  }

  private drop(s: Subscriber, reason: 'resync' | 'slow' | 'shutdown', info?: { revision: number; compactedRevision: number }): void {
    if (s.closed) return;
    s.closed = true;
    this.subscribers.delete(s);
    s.sink.close(reason, info);
  }

  /**
   * Subscribes from `since` (exclusive). Replays the log from the store up to the hub's revision at join
   * time while buffering live changes, then flushes the buffer: no change is missed or sent twice, and
   * order is kept. A `since` older than the compaction point closes the sink with 'resync'.
   */
  async subscribe(sink: Sink, since: number | undefined): Promise<() => void> {
    const sub: Subscriber = { sink, buffer: [], closed: false };
    this.subscribers.add(sub);
    const unsubscribe = () => {
      sub.closed = true;
      this.subscribers.delete(sub);
    };
    const joinRevision = this.lastRevision;
    let cursor = since ?? joinRevision;
    try {
      if (cursor > joinRevision) {
        const current = await this.store.currentRevision();
        if (cursor > current) {
          // A revision this store never reached (a store was replaced): only a fresh list is right.
          this.drop(sub, 'resync', { revision: current, compactedRevision: await this.store.compactedRevision() });
          return unsubscribe;
        }
        // A client fresh from another server sharing the store: wait until this hub has seen what it saw.
        await this.caughtUp(cursor);
      }
      while (cursor < joinRevision && !sub.closed) {
        const compacted = await this.store.compactedRevision();
        if (cursor < compacted) {
          this.drop(sub, 'resync', { revision: this.lastRevision, compactedRevision: compacted });
          return unsubscribe;
        }
        const page = await this.store.changesSince(cursor, PAGE);
        // Revisions are contiguous in the log; a gap means compaction ran between the two reads above.
        if (page.length > 0 && page[0]!.revision !== cursor + 1) {
          const nowCompacted = await this.store.compactedRevision();
          if (cursor < nowCompacted) {
            this.drop(sub, 'resync', { revision: this.lastRevision, compactedRevision: nowCompacted });
            return unsubscribe;
          }
        }
        if (page.length === 0) break;
        for (const ch of page) {
          if (ch.revision > joinRevision) break;
          if (!sink.send(ch)) {
            this.drop(sub, 'slow');
            return unsubscribe;
          }
          cursor = ch.revision;
        }
        if (page.length < PAGE || page[page.length - 1]!.revision >= joinRevision) break;
      }
      const buffered = sub.buffer ?? [];
      sub.buffer = undefined;
      for (const ch of buffered) {
        if (ch.revision <= cursor) continue;
        if (!sink.send(ch)) {
          this.drop(sub, 'slow');
          return unsubscribe;
        }
        cursor = ch.revision;
      }
      if (!sub.closed) sink.bookmark(Math.max(cursor, this.lastRevision));
    } catch (e) {
      this.log.warn({ err: e }, 'watch replay failed');
      this.drop(sub, 'shutdown');
    }
    return unsubscribe;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unlisten?.();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.safetyTimer) clearInterval(this.safetyTimer);
    for (const s of [...this.subscribers]) this.drop(s, 'shutdown');
    for (const w of this.waiters) w.done(false);
    this.waiters = [];
  }
}
