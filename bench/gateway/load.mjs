// Loaded runs with wrk (closed loop: -t1, a fixed number of connections) and sequential unloaded latency
// with undici, plus the CPU each process spent meanwhile, from /proc.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'undici';
import { cpuSeconds, killPidOnExit, machineBusySeconds, percentile } from '../push/lib.mjs';
import { pinned } from './tools.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU seconds of this process's reaped children (cutime + cstime): how wrk's CPU is read once it exited. */
function reapedChildrenSeconds() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / CLK_TCK;
}

const sumCpu = (pids) => pids.reduce((s, pid) => s + cpuSeconds(pid), 0);

/** Busy CPU seconds of one core (its line in /proc/stat). */
function coreBusySeconds(core) {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${core} `));
  if (!line) return NaN;
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq + steal) / CLK_TCK;
}

/**
 * One wrk run against `url`. `proxyPids` and `otherPids` (upstream, control plane) are read before and
 * after, so their CPU during the run is known; what else the machine did meanwhile is `otherMachineS`.
 */
export function wrk({ wrkPath, taskset, core, proxyCore, url, connections, durationS, headers, proxyPids, watchPids }) {
  const args = [wrkPath, '-t1', `-c${connections}`, `-d${durationS}s`, '--timeout', '5s', '-s', join(here, 'report.lua')];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const [cmd, argv] = pinned(taskset, core, args);
  const proxy0 = sumCpu(proxyPids);
  const watch0 = Object.fromEntries(Object.entries(watchPids).map(([k, pid]) => [k, cpuSeconds(pid)]));
  const reaped0 = reapedChildrenSeconds();
  const self0 = process.cpuUsage();
  const busy0 = machineBusySeconds();
  const proxyCore0 = coreBusySeconds(proxyCore);
  const t0 = performance.now();
  return new Promise((ok, fail) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const forget = killPidOnExit(child.pid);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.once('error', fail);
    child.once('exit', (code) => {
      forget();
      const wallS = (performance.now() - t0) / 1000;
      const proxyS = sumCpu(proxyPids);
      const watch = Object.fromEntries(Object.entries(watchPids).map(([k, pid]) => [k, cpuSeconds(pid) - watch0[k]]));
      const wrkS = reapedChildrenSeconds() - reaped0;
      const selfUsage = process.cpuUsage(self0);
      const selfS = (selfUsage.user + selfUsage.system) / 1e6;
      const busyS = machineBusySeconds() - busy0;
      const proxyCoreS = coreBusySeconds(proxyCore) - proxyCore0;
      const line = /^WRK_JSON (.*)$/m.exec(out)?.[1];
      if (code !== 0 || !line) return fail(new Error(`wrk exited ${code}: ${err}${out}`));
      const w = JSON.parse(line);
      const proxyCpuS = proxyS - proxy0;
      const known = proxyCpuS + wrkS + selfS + Object.values(watch).reduce((a, b) => a + b, 0);
      ok({
        requests: w.requests,
        rps: w.requests / (w.duration_us / 1e6),
        p50Ms: w.p50_us / 1000,
        p90Ms: w.p90_us / 1000,
        p99Ms: w.p99_us / 1000,
        maxMs: w.max_us / 1000,
        errors: { connect: w.errors_connect, read: w.errors_read, write: w.errors_write, status: w.errors_status, timeout: w.errors_timeout },
        proxyCpuUsPerReq: proxyPids.length > 0 ? (proxyCpuS * 1e6) / w.requests : null,
        proxyCpuPct: (100 * proxyCpuS) / wallS,
        cpuUsPerReq: Object.fromEntries(Object.entries(watch).map(([k, s]) => [k, (s * 1e6) / w.requests])),
        wrkCpuPct: (100 * wrkS) / wallS,
        // Everything on the machine that is none of ours: other work inflates latency and lowers req/s.
        otherCpuPct: (100 * Math.max(0, busyS - known)) / wallS,
        // … and the part of it that ran on the proxy's own core, taking time from the proxy.
        otherOnProxyCorePct: (100 * Math.max(0, proxyCoreS - proxyCpuS)) / wallS,
      });
    });
  });
}

/**
 * Sequential requests over one kept-alive connection per target, after a warm-up; the targets take turns in
 * rounds so that a burst of other work on the machine hits them all alike. Returns per target the sorted
 * latencies' p50/p90/p99 in ms.
 */
export async function unloaded(targets, { headers, path, warmup, rounds, perRound }) {
  const clients = Object.fromEntries(Object.entries(targets).map(([k, url]) => [k, new Client(url, { pipelining: 1, keepAliveTimeout: 60_000 })]));
  const samples = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
  const statuses = Object.fromEntries(Object.keys(targets).map((k) => [k, {}]));
  const one = async (k) => {
    const t0 = performance.now();
    const r = await clients[k].request({ method: 'GET', path, headers });
    await r.body.dump();
    const ms = performance.now() - t0;
    statuses[k][r.statusCode] = (statuses[k][r.statusCode] ?? 0) + 1;
    return ms;
  };
  try {
    for (const k of Object.keys(targets)) for (let i = 0; i < warmup; i++) await one(k);
    for (const k of Object.keys(targets)) statuses[k] = {};
    for (let r = 0; r < rounds; r++) {
      for (const k of Object.keys(targets)) for (let i = 0; i < perRound; i++) samples[k].push(await one(k));
    }
  } finally {
    await Promise.all(Object.values(clients).map((c) => c.close()));
  }
  const out = {};
  for (const [k, v] of Object.entries(samples)) {
    const sorted = Float64Array.from(v).sort();
    out[k] = { n: sorted.length, p50Ms: percentile(sorted, 50), p90Ms: percentile(sorted, 90), p99Ms: percentile(sorted, 99), statuses: statuses[k] };
  }
  return out;
}
