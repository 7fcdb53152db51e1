import { monotonicClock, type Clock } from './clock.js';

export interface KeyedOptions<L> {
  /** Builds the limiter for a key seen for the first time (or again after eviction). */
  create: (key: string) => L;
  /** Hard cap on live keys; the least recently used key is evicted beyond it. Default 10 000. */
  maxKeys?: number;
  /** A key unused for this long is dropped. Default 60 000 ms; pick at least the bucket's refill time. */
  idleMs?: number;
}

interface Entry<L> {
  readonly limiter: L;
  lastUsed: number;
  /** Used since it took its current place in the map's order (CLOCK's reference bit). */
  referenced: boolean;
}

/** How many stale entries one call may rotate or evict, so a single call's cost stays bounded. */
const MAX_WORK_PER_CALL = 8;

/**
 * Per-caller limiters (key = caller identity, IP, route, ...) in a bounded map with idle eviction, so a
 * flood of hostile keys costs at most `maxKeys` entries and no sweep timer runs.
 *
 * The Map's insertion order is the eviction order. Refreshing order on every hit would cost a delete and a
 * re-insert per call; instead a hit only stamps `lastUsed` and sets a reference bit, and an entry reaching
 * the front with its bit set is rotated to the back with the bit cleared (a "second chance" / CLOCK scheme).
 * Sweeping looks only at the front, at most MAX_WORK_PER_CALL entries per call, and not at all before the
 * front could have gone idle, so a hit is a clock read, a comparison and a Map lookup: no allocation.
 *
 * Idle keys are dropped lazily, on later calls: between `idleMs` and about `2 · idleMs` after their last use
 * (a rotated entry can sit behind a younger one). That imprecision is harmless when `idleMs` is at least the
 * limiter's refill time: a dropped key comes back with a fresh, full limiter, which is what it would have
 * refilled to anyway.
 *
 * What this cannot stop: with more live hostile keys than `maxKeys`, keys used less often than once per
 * `maxKeys` new keys are evicted and come back with a full bucket. Bound `maxKeys` by memory, and put a
 * global limiter in front of the keyed one so the total stays capped whatever the keys.
 */
export class KeyedLimiter<L> {
  readonly maxKeys: number;
  readonly idleMs: number;
  private readonly create: (key: string) => L;
  private readonly entries = new Map<string, Entry<L>>();
  private evictedCount = 0;
  /** Before this time nothing in the map can be idle, so `get` skips the sweep. */
  private sweepAt = Infinity;

  constructor(opts: KeyedOptions<L>, private readonly clock: Clock = monotonicClock) {
    this.create = opts.create;
    this.maxKeys = opts.maxKeys ?? 10_000;
    this.idleMs = opts.idleMs ?? 60_000;
    if (!(this.maxKeys >= 1)) throw new RangeError('maxKeys must be >= 1');
    if (!(this.idleMs > 0)) throw new RangeError('idleMs must be > 0');
  }

  /** The limiter for `key`, created on first use. */
  get(key: string): L {
    const now = this.clock.now();
    if (now >= this.sweepAt) this.sweep(now);
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      hit.lastUsed = now;
      hit.referenced = true;
      return hit.limiter;
    }
    if (this.entries.size >= this.maxKeys) this.evictOne(now);
    const limiter = this.create(key);
    this.entries.set(key, { limiter, lastUsed: now, referenced: false });
    if (now + this.idleMs < this.sweepAt) this.sweepAt = now + this.idleMs;
    return limiter;
  }

  /** The limiter for `key` if it is live, without creating or touching it. */
  peek(key: string): L | undefined {
    return this.entries.get(key)?.limiter;
  }

  delete(key: string): boolean {
    this.sweepAt = -Infinity; // the front may have changed
    return this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }

  /** Keys dropped so far, by idleness or by the cap. */
  get evictions(): number {
    return this.evictedCount;
  }

  /** Drop idle entries at the front; rotate entries that were used since they were placed. */
  private sweep(now: number): void {
    for (let work = 0; work < MAX_WORK_PER_CALL; work++) {
      const front = this.front();
      if (front === undefined) {
        this.sweepAt = Infinity;
        return;
      }
      const [key, entry] = front;
      if (now - entry.lastUsed >= this.idleMs) {
        this.entries.delete(key);
        this.evictedCount++;
      } else if (entry.referenced) {
        this.rotate(key, entry);
      } else {
        // Unreferenced and not idle: nothing changes at the front until it goes idle or is used again,
        // and a use is only acted on at the next sweep anyway.
        this.sweepAt = entry.lastUsed + this.idleMs;
        return;
      }
    }
    this.sweepAt = now; // out of budget: carry on at the next call
  }

  /** Make room: the front after giving a few recently used entries their second chance. */
  private evictOne(now: number): void {
    for (let work = 0; work < MAX_WORK_PER_CALL; work++) {
      const front = this.front();
      if (front === undefined) return;
      const [key, entry] = front;
      if (entry.referenced && now - entry.lastUsed < this.idleMs) this.rotate(key, entry);
      else break;
    }
    const front = this.front();
    if (front !== undefined) {
      this.entries.delete(front[0]);
      this.evictedCount++;
    }
    this.sweepAt = now; // the front changed
  }

  private rotate(key: string, entry: Entry<L>): void {
    this.entries.delete(key);
    entry.referenced = false;
    this.entries.set(key, entry);
  }

  private front(): [string, Entry<L>] | undefined {
    // Map iterators yield in insertion order; the first entry is the oldest placement.
    const it = this.entries.entries().next();
    return it.done === true ? undefined : it.value;
  }
}
