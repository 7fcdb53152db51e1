// Closed-loop load: `concurrency` workers, each issuing its next call as soon as the previous one settled.
import { performance } from 'node:perf_hooks';

/**
 * Runs `call` from `concurrency` workers for `durationMs`. A call that throws counts as an error (by its
 * `code`, else its name) and the worker goes on. Also reads the CPU this process used meanwhile.
 */
export async function closedLoop(call, { concurrency, durationMs, onResult }) {
  const errors = new Map();
  let ok = 0;
  let failed = 0;
  const t0 = performance.now();
  const end = t0 + durationMs;
  const cpu0 = process.cpuUsage();
  const worker = async () => {
    while (performance.now() < end) {
      const started = performance.now();
      try {
        const r = await call();
        ok++;
        onResult?.(started, r, undefined);
      } catch (e) {
        failed++;
        const code = e?.code ?? e?.name ?? 'unknown';
        errors.set(code, (errors.get(code) ?? 0) + 1);
        onResult?.(started, undefined, e);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const calls = ok + failed;
  return {
    calls,
    ok,
    failed,
    errors: Object.fromEntries(errors),
    elapsedMs,
    rps: calls / (elapsedMs / 1000),
    cpuUsPerCall: calls === 0 ? NaN : (cpu.user + cpu.system) / calls,
  };
}
