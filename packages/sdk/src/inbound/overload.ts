import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Clock } from '../ratelimit/clock.js';

/**
 * The instance-wide load signals adaptiveOverload compares with its `triggerThreshold`. Read per request,
 * so they are plain numbers refreshed by one shared sampler, never measured on the request path.
 */
export interface OverloadSignal {
  /** p99 event-loop delay over the last sample period, in ms. */
  readonly eventLoopDelayMs: number;
  /** CPU used by this process over the last sample period, in percent of one core (0–100). */
  readonly cpuPercent: number;
}

export const SAMPLE_INTERVAL_MS = 500;

/**
 * One sampler for the whole process however many pipelines or rules use it: a single unref'd interval and
 * one event-loop-delay histogram. Reference-counted so it runs only while some adaptiveOverload rule is live.
 */
class ProcessSampler implements OverloadSignal {
  eventLoopDelayMs = 0;
  cpuPercent = 0;
  private users = 0;
  private timer: NodeJS.Timeout | undefined;
  private histogram: IntervalHistogram | undefined;
  private lastCpu: NodeJS.CpuUsage | undefined;
  private lastAt = 0;

  acquire(): () => void {
    if (this.users++ === 0) this.start();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.users === 0) this.stop();
    };
  }

  private start(): void {
    // 10 ms resolution: finer costs more wake-ups, and a loop stall under 10 ms is no overload.
    this.histogram = monitorEventLoopDelay({ resolution: 10 });
    this.histogram.enable();
    this.lastCpu = process.cpuUsage();
    this.lastAt = performance.now();
    this.timer = setInterval(() => this.sample(), SAMPLE_INTERVAL_MS);
    this.timer.unref();
  }

  private stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.histogram?.disable();
    this.timer = undefined;
    this.histogram = undefined;
    this.eventLoopDelayMs = 0;
    this.cpuPercent = 0;
  }

  private sample(): void {
    const h = this.histogram;
    if (h !== undefined) {
      // The histogram counts the timer's own lateness, so its resolution is the floor of any reading.
      this.eventLoopDelayMs = h.count > 0 ? Math.max(0, h.percentile(99) / 1e6 - 10) : 0;
      h.reset();
    }
    const now = performance.now();
    const cpu = process.cpuUsage(this.lastCpu);
    const elapsedUs = (now - this.lastAt) * 1000;
    // Percent of one core: the JS thread cannot use more, and it is the one whose saturation hurts.
    if (elapsedUs > 0) this.cpuPercent = Math.min(100, ((cpu.user + cpu.system) / elapsedUs) * 100);
    this.lastCpu = process.cpuUsage();
    this.lastAt = now;
  }
}

const processSampler = new ProcessSampler();

/** Starts (or joins) the shared sampler; call the returned function once when done with it. */
export function acquireProcessSignal(): { signal: OverloadSignal; release: () => void } {
  return { signal: processSampler, release: processSampler.acquire() };
}

const BUCKET_MS = 100;
const BUCKETS = 50;
/** After a shed, keep judging by capacity this long even if the metric dipped (no flapping at the threshold). */
const COOL_OFF_MS = 1000;

/**
 * BBR-style admission (as Kratos' and Sentinel's system-adaptive rule): estimate the instance's capacity
 * from what it has shown it can do, max throughput × min latency (Little's law), and shed only when the
 * load metric is over the threshold AND more requests are in flight than that capacity. A hot loop with
 * few requests in flight is not shed; requests piling up on a hot loop are.
 *
 * Samples go into 50 buckets of 100 ms (a 5 s window) held in typed arrays: recording is two array writes,
 * the max/min scan runs once per bucket change, not per request.
 */
export class BbrEstimator {
  private readonly pass = new Float64Array(BUCKETS);
  private readonly rtSum = new Float64Array(BUCKETS);
  private readonly stamp = new Float64Array(BUCKETS).fill(-1);
  private inFlightCount = 0;
  private cachedFor = -1;
  private cachedCapacity = 1;
  private lastShedAt = -Infinity;

  constructor(private readonly clock: Clock) {}

  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Capacity estimate in concurrent requests, from completed buckets of the window; at least 1. */
  capacity(now = this.clock.now()): number {
    const current = Math.floor(now / BUCKET_MS);
    if (current === this.cachedFor) return this.cachedCapacity;
    let maxPass = 0;
    let minRt = Infinity;
    for (let i = 0; i < BUCKETS; i++) {
      const s = this.stamp[i] ?? -1;
      // Only completed buckets inside the window: the current one is still filling.
      if (s < 0 || s >= current || s < current - BUCKETS) continue;
      const p = this.pass[i] ?? 0;
      if (p <= 0) continue;
      if (p > maxPass) maxPass = p;
      const rt = (this.rtSum[i] ?? 0) / p;
      if (rt < minRt) minRt = rt;
    }
    // No evidence yet: while overloaded, admit one at a time until the instance shows it can do more.
    const cap = maxPass === 0 ? 1 : Math.max(1, Math.ceil((maxPass * Math.max(minRt, 1)) / BUCKET_MS));
    this.cachedFor = current;
    this.cachedCapacity = cap;
    return cap;
  }

  /** Decides one request; on true the caller must `exit` it later. */
  tryEnter(overThreshold: boolean): boolean {
    const now = this.clock.now();
    if (overThreshold || now - this.lastShedAt < COOL_OFF_MS) {
      if (this.inFlightCount >= this.capacity(now)) {
        if (overThreshold) this.lastShedAt = now;
        return false;
      }
    }
    this.inFlightCount++;
    return true;
  }

  /** An admitted request ended without a meaningful latency (refused further on): free its place only. */
  abandon(): void {
    if (this.inFlightCount > 0) this.inFlightCount--;
  }

  /** A request admitted at `startedAt` finished. */
  exit(startedAt: number): void {
    if (this.inFlightCount > 0) this.inFlightCount--;
    const now = this.clock.now();
    const b = Math.floor(now / BUCKET_MS);
    const i = b % BUCKETS;
    if (this.stamp[i] !== b) {
      this.stamp[i] = b;
      this.pass[i] = 0;
      this.rtSum[i] = 0;
    }
    this.pass[i] = (this.pass[i] ?? 0) + 1;
    this.rtSum[i] = (this.rtSum[i] ?? 0) + Math.max(0, now - startedAt);
  }
}
