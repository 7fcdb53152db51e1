// Registry leases: register N Instances, then renew each every `periodS` seconds, spread evenly
// (N / periodS renewals per second), open-loop; measure server CPU over a window after a warm-up.
import { Pool } from 'undici';
import { cpuTimes, machineBusySeconds, sleep, summarize } from './lib.mjs';

export async function leaseLoad({ url, token, pid }, { instances, ttlSeconds, periodS, warmupS, measureS, connections }) {
  const pool = new Pool(url, { connections });
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  try {
    // Register with bounded concurrency (one request per pool connection).
    const tReg = performance.now();
    let next = 0;
    let registerErrors = 0;
    await Promise.all(
      Array.from({ length: connections }, async () => {
        for (let n = next++; n < instances; n = next++) {
          const res = await pool.request({
            method: 'PUT',
            path: `/v1/resources/Instance/bench-reg/i${n}`,
            headers,
            body: JSON.stringify({ spec: { service: 'bench', version: '1', address: `127.0.0.1:${20000 + (n % 40000)}`, leaseTtlSeconds: ttlSeconds } }),
          });
          await res.body.dump();
          if (res.statusCode !== 201 && res.statusCode !== 200) registerErrors++;
        }
      }),
    );
    const registerS = (performance.now() - tReg) / 1000;

    // Renewal k goes to instance k % N at start + k / rate: every instance once per period, evenly spread.
    const rate = instances / periodS;
    const renew = { issued: 0, failed: 0, inWindow: [], completedInWindow: 0, maxLagMs: 0 };
    const start = performance.now();
    const windowStart = start + warmupS * 1000;
    const windowEnd = windowStart + measureS * 1000;
    const inflight = new Set();
    const one = async (n) => {
      const t = performance.now();
      try {
        const res = await pool.request({ method: 'POST', path: `/v1/leases/bench-reg/i${n}`, headers: { authorization: headers.authorization } });
        await res.body.dump();
        if (res.statusCode !== 200) renew.failed++;
      } catch {
        renew.failed++;
      }
      const done = performance.now();
      if (t >= windowStart && t < windowEnd) renew.inWindow.push(done - t);
      if (done >= windowStart && done < windowEnd) renew.completedInWindow++;
    };

    let cpuAtStart;
    let loadgenCpuAtStart;
    while (performance.now() < windowEnd) {
      const now = performance.now();
      if (cpuAtStart === undefined && now >= windowStart) {
        cpuAtStart = { server: cpuTimes(pid), machine: machineBusySeconds(), at: now };
        loadgenCpuAtStart = process.cpuUsage();
      }
      const due = Math.floor(((now - start) / 1000) * rate);
      // How far behind schedule the generator is: if this grows, the generator, not the server, limits.
      if (due - renew.issued > 0) renew.maxLagMs = Math.max(renew.maxLagMs, ((due - renew.issued) / rate) * 1000);
      for (; renew.issued < due; renew.issued++) {
        const p = one(renew.issued % instances);
        inflight.add(p);
        p.finally(() => inflight.delete(p));
      }
      await sleep(1);
    }
    const cpuEnd = cpuTimes(pid);
    const machineEnd = machineBusySeconds();
    const wallS = (performance.now() - cpuAtStart.at) / 1000;
    const loadgen = process.cpuUsage(loadgenCpuAtStart);
    const serverS = cpuEnd.user + cpuEnd.system - cpuAtStart.server.user - cpuAtStart.server.system;
    const loadgenS = (loadgen.user + loadgen.system) / 1e6;
    await Promise.all(inflight);

    return {
      registerS,
      registerErrors,
      targetRate: rate,
      achievedRate: renew.completedInWindow / measureS,
      serverCpuPct: (serverS / wallS) * 100,
      // Kernel time is shown apart: on loopback, the TCP work of both ends is largely charged to the sender.
      serverSysPct: ((cpuEnd.system - cpuAtStart.server.system) / wallS) * 100,
      loadgenCpuPct: (loadgenS / wallS) * 100,
      otherCpuPct: Math.max(0, ((machineEnd - cpuAtStart.machine - serverS - loadgenS) / wallS) * 100), // ±tick jitter
      renew: summarize(renew.inWindow),
      failed: renew.failed,
      issued: renew.issued,
      maxLagMs: renew.maxLagMs,
    };
  } finally {
    await pool.destroy();
  }
}
