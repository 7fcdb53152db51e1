import { ConcurrencyLimiter } from '../ratelimit/concurrency.js';
import { sharedWheel, type Expirable, type TimerWheel } from './timer-wheel.js';

export interface BulkheadOptions {
  maxConcurrency: number;
  /** Calls that may wait for a slot. Default 0: refuse at once when full. */
  maxQueue?: number;
  /** Longest wait in the queue. Default 1000. */
  queueTimeoutMs?: number;
}

export const BULKHEAD_DEFAULTS = { maxQueue: 0, queueTimeoutMs: 1000 } as const;

/** Shared, already settled: refusing a queued acquire allocates nothing. */
const REFUSED: Promise<boolean> = Promise.resolve(false);

/** A call waiting for a slot: queue node, wheel entry and abort listener in one object. */
class Waiter implements Expirable {
  prev: Waiter | undefined;
  next: Waiter | undefined;
  token = -1;

  constructor(
    private readonly bulkhead: Bulkhead,
    readonly resolve: (granted: boolean) => void,
    readonly signal: AbortSignal | undefined,
  ) {}

  onExpire(): void {
    this.bulkhead.leaveQueue(this);
  }

  handleEvent(): void {
    this.bulkhead.leaveQueue(this);
  }
}

/**
 * A bulkhead for outbound calls (a `concurrencyLimit` strategy with `side: outbound`): at most
 * `maxConcurrency` calls in flight to the target, up to `maxQueue` more waiting at most `queueTimeoutMs`
 * in FIFO order. A freed slot goes straight to the oldest waiter, so a newcomer's `tryAcquire` cannot
 * overtake the queue. Queue timeouts ride the shared timer wheel: no timer per waiter.
 *
 * Every acquire that got a slot (`true`, or a promise resolved `true`) is paired with exactly one `release`.
 */
export class Bulkhead {
  private readonly limiter: ConcurrencyLimiter;
  private maxQueue: number;
  private queueTimeoutMs: number;
  private head: Waiter | undefined;
  private tail: Waiter | undefined;
  private waiting = 0;

  constructor(
    opts: BulkheadOptions,
    private readonly wheel: TimerWheel = sharedWheel,
  ) {
    this.limiter = new ConcurrencyLimiter(opts.maxConcurrency);
    this.maxQueue = checkQueue(opts.maxQueue ?? BULKHEAD_DEFAULTS.maxQueue);
    this.queueTimeoutMs = checkTimeout(opts.queueTimeoutMs ?? BULKHEAD_DEFAULTS.queueTimeoutMs);
  }

  get inFlight(): number {
    return this.limiter.inFlight;
  }

  get queued(): number {
    return this.waiting;
  }

  get maxConcurrency(): number {
    return this.limiter.limit;
  }

  tryAcquire(): boolean {
    return this.limiter.tryAcquire();
  }

  /**
   * `true` at once when a slot is free; otherwise a place in the queue: the promise resolves true with the
   * slot, or false when the queue is full, the wait reached queueTimeoutMs, or `signal` aborted.
   */
  acquire(signal?: AbortSignal): true | Promise<boolean> {
    if (this.limiter.tryAcquire()) return true;
    if (this.waiting >= this.maxQueue || signal?.aborted) return REFUSED;
    return new Promise<boolean>((resolve) => {
      const w = new Waiter(this, resolve, signal);
      w.prev = this.tail;
      if (this.tail) this.tail.next = w;
      else this.head = w;
      this.tail = w;
      this.waiting++;
      w.token = this.wheel.add(this.wheel.clock.now() + this.queueTimeoutMs, w);
      signal?.addEventListener('abort', w, { once: true });
    });
  }

  release(): void {
    const w = this.head;
    if (w === undefined) {
      this.limiter.release();
      return;
    }
    // Hand the slot over: in-flight stays the same, nobody can slip in between.
    this.settle(w, true);
  }

  /**
   * Applies a changed rule live. A lower maxConcurrency sheds nothing in flight and only refuses new work
   * until below; a higher one admits waiters at once. A smaller maxQueue keeps who already waits (they are
   * bounded by their timeout); a new queueTimeoutMs applies to new waiters.
   */
  reconfigure(opts: BulkheadOptions): void {
    const maxQueue = checkQueue(opts.maxQueue ?? BULKHEAD_DEFAULTS.maxQueue);
    const queueTimeoutMs = checkTimeout(opts.queueTimeoutMs ?? BULKHEAD_DEFAULTS.queueTimeoutMs);
    this.limiter.limit = opts.maxConcurrency;
    this.maxQueue = maxQueue;
    this.queueTimeoutMs = queueTimeoutMs;
    while (this.head !== undefined && this.limiter.tryAcquire()) this.settle(this.head, true);
  }

  /** @internal A waiter timed out or its signal aborted. */
  leaveQueue(w: Waiter): void {
    if (w.token !== -1) this.settle(w, false);
  }

  private settle(w: Waiter, granted: boolean): void {
    if (w.prev) w.prev.next = w.next;
    else this.head = w.next;
    if (w.next) w.next.prev = w.prev;
    else this.tail = w.prev;
    w.prev = w.next = undefined;
    this.waiting--;
    // A no-op when the wheel is what fired.
    this.wheel.remove(w.token, w);
    w.token = -1;
    w.signal?.removeEventListener('abort', w);
    w.resolve(granted);
  }
}

function checkQueue(n: number): number {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`maxQueue must be an integer >= 0, got ${n}`);
  return n;
}

function checkTimeout(n: number): number {
  if (!(n > 0) || !Number.isFinite(n)) throw new RangeError(`queueTimeoutMs must be a positive number of ms, got ${n}`);
  return n;
}
