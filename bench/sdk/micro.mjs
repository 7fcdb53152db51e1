// Scenario 1: CPU per call of an outbound policy chain (breaker + retry + per-try timeout + concurrency
// limit) with no network, for Plinth's OutboundEngine and for the same chain built from cockatiel and opossum
// (plinth.mjs builds Plinth's side; run.mjs also times the whole client over a fake dispatcher).
import { bulkhead, circuitBreaker, ExponentialBackoff, handleAll, retry, SamplingBreaker, timeout, TimeoutStrategy, wrap } from 'cockatiel';
import OpossumBreaker from 'opossum';

/** The one set of settings every implementation gets (Plinth's defaults where the rule leaves a field out). */
export const CHAIN = {
  maxAttempts: 3, // first try included
  breakerThresholdPercent: 50,
  breakerWindowMs: 10_000,
  breakerMinRequests: 5,
  recoveryMs: 5_000,
  timeoutMs: 1_000,
  maxConcurrency: 64,
};

const RESULT = Object.freeze({ status: 200, body: Buffer.from('{"ok":true}') });
const work = async () => RESULT;

/** cockatiel 3: wrap(retry, circuitBreaker, timeout, bulkhead), executing an async fn with the same answer. */
export function cockatielCall() {
  const policy = wrap(
    retry(handleAll, { maxAttempts: CHAIN.maxAttempts - 1, backoff: new ExponentialBackoff({ initialDelay: 25, maxDelay: 1000 }) }),
    circuitBreaker(handleAll, {
      halfOpenAfter: CHAIN.recoveryMs,
      breaker: new SamplingBreaker({
        threshold: CHAIN.breakerThresholdPercent / 100,
        duration: CHAIN.breakerWindowMs,
        minimumRps: CHAIN.breakerMinRequests / (CHAIN.breakerWindowMs / 1000),
      }),
    }),
    // Cooperative: the fn gets an AbortSignal it is expected to honour, as a transport does; the cheaper of
    // cockatiel's two strategies.
    timeout(CHAIN.timeoutMs, TimeoutStrategy.Cooperative),
    bulkhead(CHAIN.maxConcurrency, 0),
  );
  return { call: () => policy.execute(work), close() {} };
}

/**
 * opossum 9 has breaker, timeout and a concurrency cap (`capacity`) but no retry, so a plain loop around
 * fire() retries; on the success path it costs one try/catch. Percentile tracking is off (Plinth's errorRatio
 * breaker keeps no latencies): that makes opossum cheaper, not dearer.
 */
export function opossumCall() {
  const breaker = new OpossumBreaker(work, {
    timeout: CHAIN.timeoutMs,
    errorThresholdPercentage: CHAIN.breakerThresholdPercent,
    resetTimeout: CHAIN.recoveryMs,
    rollingCountTimeout: CHAIN.breakerWindowMs,
    rollingCountBuckets: 10,
    volumeThreshold: CHAIN.breakerMinRequests,
    capacity: CHAIN.maxConcurrency,
    rollingPercentilesEnabled: false,
  });
  const call = async () => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await breaker.fire();
      } catch (e) {
        if (attempt >= CHAIN.maxAttempts || breaker.opened) throw e;
      }
    }
  };
  return { call, close: () => breaker.shutdown() };
}

async function runCalls(call, n) {
  for (let i = 0; i < n; i++) await call();
}

/**
 * Sequential awaited calls. Every implementation gets the same warm-up; then `rounds` rounds of `calls`, the
 * order of implementations rotating each round so none always runs first (or right after a GC-heavy peer).
 * Figure: median over rounds of CPU ns per call (this process's user + system time, V8's GC and compiler
 * threads included), which time slices lost to other work on a shared machine do not inflate as they do wall
 * time; wall ns per call are kept beside it.
 */
export async function micro(impls, { calls, warmup, rounds }) {
  const names = Object.keys(impls);
  for (const name of names) await runCalls(impls[name].call, warmup);
  const cpu = Object.fromEntries(names.map((n) => [n, []]));
  const wall = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(r + k) % names.length];
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      await runCalls(impls[name].call, calls);
      const t = Number(process.hrtime.bigint() - t0);
      const c = process.cpuUsage(c0);
      wall[name].push(t / calls);
      cpu[name].push(((c.user + c.system) * 1000) / calls);
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const out = {};
  for (const name of names) out[name] = { median: median(cpu[name]), wallMedian: median(wall[name]), rounds: cpu[name], wallRounds: wall[name] };
  return out;
}
