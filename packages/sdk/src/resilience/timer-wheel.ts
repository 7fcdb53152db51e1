import { monotonicClock, type Clock } from '../ratelimit/clock.js';

/** Whatever should happen at a deadline. The caller's own per-call state implements it: no closure, no wrapper. */
export interface Expirable {
  onExpire(): void;
}

/** The one real timer; injectable so tests count and fire it by hand. */
export type Schedule = (fn: () => void, ms: number) => { unref?(): void; ref?(): void };

export interface TimerWheelOptions {
  /** Resolution: an entry fires no earlier than its time and about this much late at most. Default 5. */
  tickMs?: number;
  clock?: Clock;
  schedule?: Schedule;
}

/** Slots of the wheel: 512 × 5 ms spans 2.56 s per turn; longer entries wait their round in the slot. */
const SLOTS = 512;
/**
 * Entries live in a slab; a token is generation × CAP + index, so a stale token does not hit a reused
 * entry (unless that entry was reused exactly 1024 times since, for the same target). Tokens stay below
 * 2^30, a small integer to V8: returning and storing one allocates nothing.
 */
const CAP = 2 ** 20;
const GEN_MASK = 0x3ff;
const FREE = -1;
const DUE = -2; // taken off its slot, about to fire

const defaultSchedule: Schedule = (fn, ms) => setTimeout(fn, ms);

/**
 * A hashed timer wheel (Varghese & Lauck; Netty's HashedWheelTimer): every per-call timeout and backoff
 * sleep of the process shares one timer. A timer per call costs ~10 µs to arm and cancel and churns the
 * heap; here `add` and `remove` are O(1) writes into preallocated typed arrays (the slab only grows, by
 * doubling, to the peak number of live entries).
 *
 * The real timer is armed only while entries exist, one tick at a time, and unref'd: an idle process holds
 * no timer and may exit. Pending `delay()` sleeps are the exception: they ref the timer, since a retry
 * waiting out its backoff is work the process has not finished.
 *
 * Entries fire in deadline order (by tick, then insertion), never before their time. `onExpire` runs on
 * the wheel's stack: it may add and remove entries; if it throws, the rest still fire and the first error
 * is rethrown afterwards, as a throwing setTimeout callback would be.
 */
export class TimerWheel {
  readonly tickMs: number;
  readonly clock: Clock;
  private readonly schedule: Schedule;

  private targets: (Expirable | undefined)[] = [];
  private ticks: Float64Array = new Float64Array(64);
  private seqs: Float64Array = new Float64Array(64);
  private gens: Int32Array = new Int32Array(64);
  private nexts: Int32Array = new Int32Array(64);
  private prevs: Int32Array = new Int32Array(64);
  /** The slot an entry is linked in, FREE or DUE. */
  private where: Int32Array = new Int32Array(64).fill(FREE);
  private used = 0;
  private freeHead = -1;
  private readonly heads = new Int32Array(SLOTS).fill(-1);
  private readonly tails = new Int32Array(SLOTS).fill(-1);
  private count = 0;
  private seq = 0;
  /**
   * Every tick up to this one has been processed. Starts as a number (never undefined), so V8 keeps the
   * field as a double in place instead of allocating a box on each write.
   */
  private lastTick = 0;

  private armed = false;
  private handle: ReturnType<Schedule> | undefined;
  /** Pending `delay()` sleeps: while any, the timer keeps the process alive. */
  private refs = 0;
  private firing = false;
  private failed = false;
  private firstError: unknown;
  /** Tokens of entries being fired; reused across ticks. */
  private readonly due: number[] = [];
  private readonly onTimer = (): void => {
    this.armed = false;
    this.handle = undefined;
    try {
      this.advance();
    } finally {
      if (this.count > 0 && !this.armed) this.arm();
    }
  };

  constructor(opts: TimerWheelOptions = {}) {
    this.tickMs = opts.tickMs ?? 5;
    if (!(this.tickMs > 0) || !Number.isFinite(this.tickMs)) throw new RangeError(`tickMs must be > 0, got ${this.tickMs}`);
    this.clock = opts.clock ?? monotonicClock;
    this.schedule = opts.schedule ?? defaultSchedule;
    this.lastTick = Math.floor(this.clock.now() / this.tickMs);
  }

  get size(): number {
    return this.count;
  }

  /**
   * Schedules `target.onExpire()` at clock time `at` (a time already past fires on the next tick). Returns
   * the token for `remove`. `now`: the wheel's clock as the caller just read it, if it did (saves a read).
   */
  add(at: number, target: Expirable, now?: number): number {
    if (!Number.isFinite(at)) throw new RangeError(`timer deadline must be a finite clock time, got ${at}`);
    // An empty wheel may have slept for hours: start counting from now instead of walking the gap.
    if (this.count === 0 && !this.firing) this.lastTick = Math.floor((now ?? this.clock.now()) / this.tickMs);
    let tick = Math.ceil(at / this.tickMs);
    if (tick <= this.lastTick) tick = this.lastTick + 1;
    const i = this.alloc();
    this.targets[i] = target;
    this.ticks[i] = tick;
    this.seqs[i] = this.seq++;
    this.link(i, slotOf(tick));
    this.count++;
    if (!this.armed) this.arm(now);
    return this.gens[i]! * CAP + i;
  }

  /** Cancels an entry. A token that already fired or was removed (even if its slot was reused since) is a no-op. */
  remove(token: number, target: Expirable): void {
    const i = token % CAP;
    const gen = (token - i) / CAP;
    if (this.gens[i] !== gen || this.targets[i] !== target) return;
    const w = this.where[i]!;
    if (w >= 0) this.unlink(i, w);
    this.free(i);
  }

  /** A promise resolved after `ms` on the wheel (for retry backoff); rejects with the signal's reason on abort. */
  delay(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (!(ms > 0)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const sleeper = new Sleeper(this, resolve, reject, signal);
      sleeper.token = this.add(this.clock.now() + ms, sleeper);
      this.retain();
      signal?.addEventListener('abort', sleeper, { once: true });
    });
  }

  /** Fires everything due at `clock.now()`. Called by the wheel's timer; tests call it with a ManualClock. */
  advance(): void {
    if (this.firing) return;
    const current = Math.floor(this.clock.now() / this.tickMs);
    if (current <= this.lastTick) return;
    if (this.count === 0) {
      this.lastTick = current;
      return;
    }
    this.firing = true;
    this.failed = false;
    this.firstError = undefined;
    try {
      if (current - this.lastTick >= SLOTS) {
        // The loop stalled for more than a turn of the wheel: collect every due entry at once, in order.
        this.lastTick = current;
        let n = 0;
        for (let s = 0; s < SLOTS; s++) n = this.collect(s, current, n);
        const tokens = this.due.slice(0, n).sort((a, b) => {
          const ia = a % CAP;
          const ib = b % CAP;
          return this.ticks[ia]! - this.ticks[ib]! || this.seqs[ia]! - this.seqs[ib]!;
        });
        this.fire(tokens, n);
      } else {
        for (let t = this.lastTick + 1; t <= current; t++) {
          this.lastTick = t;
          const n = this.collect(slotOf(t), t, 0);
          if (n > 0) this.fire(this.due, n);
        }
      }
    } finally {
      this.firing = false;
    }
    if (this.failed) {
      const e = this.firstError;
      this.firstError = undefined;
      throw e;
    }
  }

  /** Moves the due entries of slot `s` (tick <= upTo) to `due` from position n; returns the new count. */
  private collect(s: number, upTo: number, n: number): number {
    let i = this.heads[s]!;
    while (i !== -1) {
      const next = this.nexts[i]!;
      if (this.ticks[i]! <= upTo) {
        this.unlink(i, s);
        this.where[i] = DUE;
        this.due[n++] = this.gens[i]! * CAP + i;
      }
      i = next;
    }
    return n;
  }

  private fire(tokens: readonly number[], n: number): void {
    for (let k = 0; k < n; k++) {
      const token = tokens[k]!;
      const i = token % CAP;
      // Skipped when an earlier callback removed it (and perhaps reused its slot).
      if (this.where[i] !== DUE || this.gens[i]! * CAP + i !== token) continue;
      const target = this.targets[i]!;
      this.free(i);
      try {
        target.onExpire();
      } catch (e) {
        if (!this.failed) {
          this.failed = true;
          this.firstError = e;
        }
      }
    }
  }

  private arm(now: number = this.clock.now()): void {
    this.armed = true;
    // Wake just after the next tick boundary, so an entry is late by timer jitter rather than a whole tick.
    const wait = Math.max(1, Math.ceil((Math.floor(now / this.tickMs) + 1) * this.tickMs - now));
    const h = this.schedule(this.onTimer, wait);
    this.handle = h;
    if (this.refs === 0) h.unref?.();
  }

  /** @internal A sleeper started: keep the process alive while it waits. */
  retain(): void {
    if (this.refs++ === 0) this.handle?.ref?.();
  }

  /** @internal A sleeper ended. */
  releaseRef(): void {
    if (this.refs > 0 && --this.refs === 0) this.handle?.unref?.();
  }

  private alloc(): number {
    if (this.freeHead !== -1) {
      const i = this.freeHead;
      this.freeHead = this.nexts[i]!;
      return i;
    }
    if (this.used === this.ticks.length) this.grow();
    return this.used++;
  }

  private free(i: number): void {
    this.targets[i] = undefined;
    this.gens[i] = (this.gens[i]! + 1) & GEN_MASK;
    this.where[i] = FREE;
    this.nexts[i] = this.freeHead;
    this.freeHead = i;
    this.count--;
  }

  private grow(): void {
    const size = this.ticks.length * 2;
    if (size > CAP) throw new RangeError(`timer wheel full: ${CAP} live entries`);
    this.ticks = growF64(this.ticks, size);
    this.seqs = growF64(this.seqs, size);
    this.gens = growI32(this.gens, size, 0);
    this.nexts = growI32(this.nexts, size, -1);
    this.prevs = growI32(this.prevs, size, -1);
    this.where = growI32(this.where, size, FREE);
  }

  private link(i: number, s: number): void {
    const tail = this.tails[s]!;
    this.prevs[i] = tail;
    this.nexts[i] = -1;
    if (tail === -1) this.heads[s] = i;
    else this.nexts[tail] = i;
    this.tails[s] = i;
    this.where[i] = s;
  }

  private unlink(i: number, s: number): void {
    const p = this.prevs[i]!;
    const n = this.nexts[i]!;
    if (p === -1) this.heads[s] = n;
    else this.nexts[p] = n;
    if (n === -1) this.tails[s] = p;
    else this.prevs[n] = p;
  }
}

/**
 * Ticks are epoch-sized (~3.5e11): too big for int32, so `tick % SLOTS` would compile to a call of the C
 * library's fmod (~20 ns, on every add). Floor division is a few machine instructions, exact below 2^53,
 * and never negative.
 */
function slotOf(tick: number): number {
  return tick - Math.floor(tick / SLOTS) * SLOTS;
}

function growF64(a: Float64Array, size: number): Float64Array {
  const b = new Float64Array(size);
  b.set(a);
  return b;
}

function growI32(a: Int32Array, size: number, fill: number): Int32Array {
  const b = new Int32Array(size).fill(fill);
  b.set(a);
  return b;
}

/** One `delay()` sleep: the wheel entry and the abort listener in one object. */
class Sleeper implements Expirable {
  token = -1;

  constructor(
    private readonly wheel: TimerWheel,
    private readonly resolve: () => void,
    private readonly reject: (e: unknown) => void,
    private readonly signal: AbortSignal | undefined,
  ) {}

  onExpire(): void {
    this.signal?.removeEventListener('abort', this);
    this.wheel.releaseRef();
    this.resolve();
  }

  handleEvent(): void {
    this.wheel.remove(this.token, this);
    this.wheel.releaseRef();
    this.reject(this.signal?.reason);
  }
}

/** The process-wide wheel on the monotonic clock. It holds no timer until something is added. */
export const sharedWheel = new TimerWheel();
