// Closed-loop HTTP load against the variants of the fastify service: same concurrency, same connections,
// same warm-up for each, measured rounds interleaved (the order rotates every round) so that other work on
// a shared machine spreads over all variants instead of landing on one.
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import { cpuSeconds, machineBusySeconds } from '../push/lib.mjs';

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** `concurrency` workers, each sending its next GET as soon as the previous answer was read to the end. */
async function closedLoop(pool, { concurrency, durationMs }) {
  let ok = 0;
  let failed = 0;
  const errors = {};
  const end = performance.now() + durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      try {
        const res = await pool.request({ method: 'GET', path: '/hello' });
        await res.body.dump({ limit: 1 << 20 });
        if (res.statusCode === 200) ok++;
        else {
          failed++;
          errors[res.statusCode] = (errors[res.statusCode] ?? 0) + 1;
        }
      } catch (e) {
        failed++;
        const code = e?.code ?? e?.name ?? 'unknown';
        errors[code] = (errors[code] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { ok, failed, errors };
}

/** One measured slot: throughput, and the CPU the service, this process and everything else used. */
async function measure(v, opts) {
  const t0 = performance.now();
  const svc0 = cpuSeconds(v.pid);
  const self0 = process.cpuUsage();
  const busy0 = machineBusySeconds();
  const r = await closedLoop(v.pool, opts);
  const wallS = (performance.now() - t0) / 1000;
  const svcS = cpuSeconds(v.pid) - svc0;
  const self = process.cpuUsage(self0);
  const selfS = (self.user + self.system) / 1e6;
  const busyS = machineBusySeconds() - busy0;
  return {
    ...r,
    wallS,
    rps: r.ok / wallS,
    serviceCpuPct: (100 * svcS) / wallS,
    serviceCpuUsPerReq: r.ok > 0 ? (svcS * 1e6) / r.ok : NaN,
    loadgenCpuPct: (100 * selfS) / wallS,
    otherCpuPct: (100 * Math.max(0, busyS - svcS - selfS)) / wallS,
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * `services`: { name: { address, pid } }. Each variant gets `warmupMs` of the same load (unmeasured), then
 * `rounds` measured slots of `roundMs`. A variant's figure is the median of its rounds.
 */
export async function overheadLoad(services, { concurrency, warmupMs, roundMs, rounds, log }) {
  const names = Object.keys(services);
  const vs = Object.fromEntries(
    names.map((n) => [n, { ...services[n], pool: new Pool(services[n].address, { connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 }) }]),
  );
  try {
    for (const n of names) {
      const w = await closedLoop(vs[n].pool, { concurrency, durationMs: warmupMs });
      if (w.ok === 0) throw new Error(`variant ${n} answered no request during warm-up: ${JSON.stringify(w.errors)}`);
      vs[n].requests = w.ok + w.failed;
    }
    const byVariant = Object.fromEntries(names.map((n) => [n, []]));
    for (let round = 0; round < rounds; round++) {
      const order = names.map((_, i) => names[(i + round) % names.length]);
      if (round % 2 === 1) order.reverse();
      for (const n of order) {
        const m = await measure(vs[n], { concurrency, durationMs: roundMs });
        vs[n].requests += m.ok + m.failed;
        byVariant[n].push(m);
        log?.(`    round ${round + 1} ${n.padEnd(8)} ${Math.round(m.rps)} rps, service ${Math.round(m.serviceCpuPct)} % CPU (${m.serviceCpuUsPerReq.toFixed(1)} µs/req), load generator ${Math.round(m.loadgenCpuPct)} %, rest ${Math.round(m.otherCpuPct)} %${m.failed ? `, ${m.failed} failed ${JSON.stringify(m.errors)}` : ''}`);
      }
    }
    // Let the last batches leave the exporters (flush interval 1 s) before the sink is read.
    await sleep(2500);
    return Object.fromEntries(
      names.map((n) => {
        const rs = byVariant[n];
        return [
          n,
          {
            rps: median(rs.map((r) => r.rps)),
            serviceCpuUsPerReq: median(rs.map((r) => r.serviceCpuUsPerReq)),
            serviceCpuPct: median(rs.map((r) => r.serviceCpuPct)),
            loadgenCpuPct: median(rs.map((r) => r.loadgenCpuPct)),
            otherCpuPct: median(rs.map((r) => r.otherCpuPct)),
            failed: rs.reduce((a, r) => a + r.failed, 0),
            roundsRps: rs.map((r) => r.rps),
            roundsCpuUsPerReq: rs.map((r) => r.serviceCpuUsPerReq),
            requestsTotal: vs[n].requests,
          },
        ];
      }),
    );
  } finally {
    await Promise.all(names.map((n) => vs[n].pool.close()));
  }
}
