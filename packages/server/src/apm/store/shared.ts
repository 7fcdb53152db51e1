import { PlinthError } from '@plinth/core';
import type { SliQuery } from '../types.js';

/** Named jobs running in this process: a second run of the same name is refused while the first runs. */
export class Exclusive {
  private readonly running = new Set<string>();

  /** Runs `fn` unless `name` is already running here; `hold` may take a cross-process lock around it. */
  async run(name: string, fn: () => Promise<void>, hold?: (inner: () => Promise<void>) => Promise<boolean>): Promise<boolean> {
    if (this.running.has(name)) return false;
    this.running.add(name);
    try {
      if (hold) return await hold(fn);
      await fn();
      return true;
    } finally {
      this.running.delete(name);
    }
  }
}

export function checkSli(q: SliQuery): void {
  if (q.indicator === 'latency' && !(typeof q.thresholdMs === 'number' && Number.isFinite(q.thresholdMs) && q.thresholdMs >= 0)) {
    throw new PlinthError('INVALID_PARAMETER', 'a latency SLI needs thresholdMs (a non-negative number)', {
      errors: [{ field: 'thresholdMs', message: 'required for the latency indicator' }],
    });
  }
}
