import { FLAG_SAMPLED } from '../balancing/traceparent.js';

/** What to do with a new span. */
export const DROP = 0;
/** Recorded but not sampled: exported at its end only if it failed or was slow ("keep on demand"). */
export const DEFER = 1;
/** Head-sampled: recorded and exported. */
export const SAMPLE = 2;
export type Decision = typeof DROP | typeof DEFER | typeof SAMPLE;

export interface SamplerOptions {
  /** Share of new traces (no parent) to sample, 0..1. Default 1. */
  ratio?: number;
  /** Export a span that was not head-sampled when it ends in error (status error, HTTP 5xx). Default true. */
  keepErrors?: boolean;
  /** Export a span that was not head-sampled when it took at least this long. Default: never for slowness. */
  keepSlowerThanMs?: number;
}

const TWO_POW_52 = 2 ** 52;

/** Hex digits 18..30 of a trace id as a number: the top 52 of its rightmost 56 bits, exact in a double. */
export function randomnessOf(traceId: string): number {
  let r = 0;
  for (let i = 18; i < 31; i++) {
    const c = traceId.charCodeAt(i);
    r = r * 16 + (c <= 57 ? c - 48 : (c | 0x20) - 87);
  }
  return r;
}

/**
 * Parent-based head sampling with a trace-id ratio for roots, plus keep-on-demand for the rest.
 *
 * The ratio test follows OpenTelemetry's consistent probability sampling: a trace is sampled when the
 * rightmost 56 bits of its id (random by W3C Trace Context level 2) are at or above (1 - ratio) * 2^56,
 * compared here on their top 52 bits so the arithmetic stays exact in a double. So the decision is the same
 * in every process, and a trace sampled at 1% is also sampled at 10%.
 */
export class PlinthSampler {
  private threshold = 0;
  private ratioValue = 1;
  readonly keepErrors: boolean;
  readonly keepSlowerThanMs: number;
  /** Whether unsampled spans are worth recording at all. */
  readonly defers: boolean;

  constructor(o: SamplerOptions = {}) {
    this.keepErrors = o.keepErrors ?? true;
    this.keepSlowerThanMs = o.keepSlowerThanMs ?? Number.POSITIVE_INFINITY;
    this.defers = this.keepErrors || Number.isFinite(this.keepSlowerThanMs);
    this.setRatio(o.ratio ?? 1);
  }

  get ratio(): number {
    return this.ratioValue;
  }

  /** Changes the ratio for new traces (a governance update, say); spans already started keep their decision. */
  setRatio(ratio: number): void {
    const r = Number.isNaN(ratio) ? 0 : Math.min(1, Math.max(0, ratio));
    this.ratioValue = r;
    this.threshold = r <= 0 ? Number.POSITIVE_INFINITY : Math.ceil((1 - r) * TWO_POW_52);
  }

  /** Whether a new trace with this id is head-sampled by the ratio. */
  sampledByRatio(traceId: string): boolean {
    return this.threshold === 0 || this.sampledByRandomness(randomnessOf(traceId));
  }

  /** The same test given the id's randomness (`randomnessOf`) already. */
  sampledByRandomness(r: number): boolean {
    return r >= this.threshold;
  }

  /** The decision for a span in `traceId`; `parentFlags` undefined for a root. */
  decide(traceId: string, parentFlags: number | undefined): Decision {
    const sampled = parentFlags === undefined ? this.sampledByRatio(traceId) : (parentFlags & FLAG_SAMPLED) !== 0;
    return sampled ? SAMPLE : this.defers ? DEFER : DROP;
  }

  /** `decide` for a root whose id's randomness is known. */
  decideRoot(randomness: number): Decision {
    return this.sampledByRandomness(randomness) ? SAMPLE : this.defers ? DEFER : DROP;
  }

  /** Whether a deferred span that ended is exported after all. */
  keep(failed: boolean, durationMs: number): boolean {
    return (failed && this.keepErrors) || durationMs >= this.keepSlowerThanMs;
  }
}
