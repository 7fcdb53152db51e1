/** Something an admitted request holds until it ends: a concurrency slot, a place in an adaptive estimate. */
export interface Holder {
  /** `completed`: the request was served (feed latency); false: it was refused after taking the hold. */
  exit(startedAt: number, completed: boolean): void;
}

/**
 * An admitted request: the `ok` Admission itself, so admitting allocates this object and its release
 * closure and nothing else. Most requests hold one or two things (a slot, an estimate); a third and more
 * go to an array allocated only then.
 */
export class Lease {
  readonly ok = true as const;
  delayMs = 0;
  private h0: Holder | undefined = undefined;
  private h1: Holder | undefined = undefined;
  private more: Holder[] | undefined = undefined;
  private ended = false;

  constructor(readonly startedAt: number) {}

  /** Call once the response is done; later calls do nothing. A property, so it can be passed around detached. */
  readonly release = (): void => this.end(true);

  hold(h: Holder): void {
    if (this.h0 === undefined) this.h0 = h;
    else if (this.h1 === undefined) this.h1 = h;
    else (this.more ??= []).push(h);
  }

  /** The request was refused after some holds were taken: give them back without a latency sample. */
  abandon(): void {
    this.end(false);
  }

  /** Extra wait before the handler; throttles in several rules wait in parallel, so the longest counts. */
  waitAtLeast(ms: number): void {
    if (ms > this.delayMs) this.delayMs = ms;
  }

  /** An injected delay comes on top of any throttle wait. */
  addDelay(ms: number): void {
    this.delayMs += ms;
  }

  private end(completed: boolean): void {
    if (this.ended) return;
    this.ended = true;
    const start = this.startedAt;
    this.h0?.exit(start, completed);
    this.h1?.exit(start, completed);
    if (this.more !== undefined) for (const h of this.more) h.exit(start, completed);
  }
}

const noop = (): void => {};

/** What a request that no rule touched gets: one shared frozen object, nothing allocated. */
export const ADMIT: { readonly ok: true; readonly delayMs: 0; readonly release: () => void } = Object.freeze({ ok: true as const, delayMs: 0 as const, release: noop });

/** An admission with only an injected delay, nothing held. */
export function delayed(ms: number): { readonly ok: true; readonly delayMs: number; readonly release: () => void } {
  return { ok: true, delayMs: ms, release: noop };
}
