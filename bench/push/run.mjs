// `npm run bench:push`: plinth watch push latency vs etcd's native watch, and registry lease renewal
// cost, in one run on this machine. Writes bench/results/push.json and the figures in docs/benchmarks.md.
//
// Other shapes: BENCH_SUBSCRIBERS, BENCH_CHANGES, BENCH_INSTANCES, BENCH_MEASURE_S, BENCH_ETCD_CONNECTIONS,
// BENCH_ONLY=plinth,etcd,leases (partial runs write bench/.work/push.partial.json and leave the doc).
// BENCH_CPU_PROF=1 starts each plinth child under `node --cpu-prof` (profiles in bench/.work/profiles/).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEtcd } from './etcd.mjs';
import { leaseLoad } from './leases.mjs';
import { guardRun, machineInfo, memoryMiB, removeTempDir, replaceDocBlock, round, runMain, spawnReady, stopChild, tempDir, verdict } from './lib.mjs';
import { etcdHttpPush, etcdPush, plinthPush } from './push.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const env = process.env;
const PUSH = {
  subscribers: Number(env.BENCH_SUBSCRIBERS ?? 1000),
  changes: Number(env.BENCH_CHANGES ?? 200),
  spacingMs: 25,
  warmup: 20,
};
const ETCD_CONNECTIONS = Number(env.BENCH_ETCD_CONNECTIONS ?? 10);
const LEASES = {
  instances: Number(env.BENCH_INSTANCES ?? 10_000),
  ttlSeconds: 15,
  periodS: 5,
  warmupS: 5,
  measureS: Number(env.BENCH_MEASURE_S ?? 30),
  connections: 32,
};
const only = env.BENCH_ONLY ? new Set(env.BENCH_ONLY.split(',')) : undefined;
const runs = (part) => !only || only.has(part);
const TARGET = { pushP99Ms: 50, leaseCpuPct: 25 };
const TIME_LIMIT_MS = 230_000;

guardRun(TIME_LIMIT_MS);

async function withPlinth(label, fn) {
  const profDir = join(root, 'bench', '.work', 'profiles');
  const nodeArgs = env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=plinth-${label}-${Date.now()}.cpuprofile`] : [];
  const dataDir = tempDir('plinth-bench-');
  try {
    const { child, info } = await spawnReady(process.execPath, [...nodeArgs, join(here, 'plinth-child.mjs'), dataDir], { name: 'plinth server' });
    try {
      return await fn(info);
    } finally {
      await stopChild(child);
    }
  } finally {
    removeTempDir(dataDir);
  }
}

const ms = (x) => round(x, 2);
const log = (...a) => console.log(...a);
// More than this much CPU (% of one core) used by anything else during a measurement makes its figures suspect.
const BUSY_MACHINE_PCT = 15;
const busyNote = (what, pct) =>
  pct > BUSY_MACHINE_PCT ? [`other work used ${round(pct, 0)} % of a core during ${what}; its figures are inflated, rerun on an idle machine`] : [];
const logPush = (r) =>
  log(`  p50 ${ms(r.p50)} ms  p99 ${ms(r.p99)} ms  max ${ms(r.max)} ms  missed ${r.missed}  ` +
    `write ack p50 ${ms(r.write.p50)} p99 ${ms(r.write.p99)} ms  ` +
    `CPU server ${round(r.cpu.serverPct, 0)} % (kernel ${round(r.cpu.serverSysPct, 0)} %) receiver ${round(r.cpu.receiverPct, 0)} % rest ${round(r.cpu.otherPct, 0)} %  ` +
    `rss ${round(r.memory.rss, 1)} MiB (peak ${round(r.memory.hwm, 1)}, ${round(r.idleMemory.rss, 1)} before watchers)`);

async function main() {
  const results = {};
  const notes = [];

  if (runs('plinth')) {
    log(`plinth push: ${PUSH.subscribers} SSE watchers, ${PUSH.changes} changes every ${PUSH.spacingMs} ms…`);
    const r = await withPlinth('push', (s) => plinthPush(s, { ...PUSH, pid: s.pid }));
    logPush(r);
    notes.push(...busyNote('the plinth push run', r.cpu.otherPct));
    Object.assign(results, {
      push_write_p50_ms: ms(r.write.p50), push_write_p99_ms: ms(r.write.p99),
      push_server_cpu_pct: round(r.cpu.serverPct, 0), push_server_sys_pct: round(r.cpu.serverSysPct, 0), push_receiver_cpu_pct: round(r.cpu.receiverPct, 0),
      push_other_cpu_pct: round(r.cpu.otherPct, 0),
      push_p50_ms: ms(r.p50), push_p99_ms: ms(r.p99), push_max_ms: ms(r.max),
      missed: r.missed, duplicates: r.duplicates, push_write_errors: r.writeErrors,
      server_rss_mb: round(r.memory.rss, 1), server_hwm_mb: round(r.memory.hwm, 1), server_rss_before_watchers_mb: round(r.idleMemory.rss, 1),
      plinth_subscribe_all_ms: round(r.subscribeMs, 0),
    });
  }

  if (runs('etcd')) {
    const etcd = await startEtcd();
    if (etcd.skipped) {
      notes.push(`etcd skipped: ${etcd.skipped}`);
      log(`etcd skipped: ${etcd.skipped}`);
    } else {
      try {
        log(`etcd ${etcd.version} push: ${PUSH.subscribers} watchers over ${ETCD_CONNECTIONS} gRPC connections…`);
        const r = await etcdPush({ endpoint: etcd.endpoint, connections: ETCD_CONNECTIONS }, { ...PUSH, pid: etcd.pid });
        logPush(r);
        notes.push(...busyNote('the etcd push run', r.cpu.otherPct));
        Object.assign(results, {
          etcd_version: etcd.version,
          etcd_write_p50_ms: ms(r.write.p50), etcd_write_p99_ms: ms(r.write.p99),
          etcd_server_cpu_pct: round(r.cpu.serverPct, 0), etcd_server_sys_pct: round(r.cpu.serverSysPct, 0), etcd_receiver_cpu_pct: round(r.cpu.receiverPct, 0),
          etcd_other_cpu_pct: round(r.cpu.otherPct, 0),
          etcd_push_p50_ms: ms(r.p50), etcd_push_p99_ms: ms(r.p99), etcd_push_max_ms: ms(r.max),
          etcd_missed: r.missed, etcd_write_errors: r.writeErrors,
          etcd_rss_mb: round(r.memory.rss, 1), etcd_hwm_mb: round(r.memory.hwm, 1), etcd_rss_before_watchers_mb: round(r.idleMemory.rss, 1),
          etcd_connections: ETCD_CONNECTIONS,
        });
        log(`etcd ${etcd.version} push: ${PUSH.subscribers} watchers, one HTTP/1.1 connection each (etcd's JSON gateway)…`);
        const h = await etcdHttpPush({ endpoint: etcd.endpoint }, { ...PUSH, pid: etcd.pid });
        logPush(h);
        notes.push(...busyNote('the etcd per-connection push run', h.cpu.otherPct));
        Object.assign(results, {
          etcd_conn_push_p50_ms: ms(h.p50), etcd_conn_push_p99_ms: ms(h.p99), etcd_conn_push_max_ms: ms(h.max),
          etcd_conn_missed: h.missed, etcd_conn_server_cpu_pct: round(h.cpu.serverPct, 0), etcd_conn_rss_mb: round(h.memory.rss, 1),
        });
      } finally {
        await etcd.stop();
      }
    }
  }
  if (results.push_p99_ms != null && results.etcd_push_p99_ms != null) {
    results.push_p99_ratio_vs_etcd = round(results.push_p99_ms / results.etcd_push_p99_ms, 3);
  }
  if (results.push_p99_ms != null && results.etcd_conn_push_p99_ms != null) {
    results.push_p99_ratio_vs_etcd_per_connection = round(results.push_p99_ms / results.etcd_conn_push_p99_ms, 3);
  }

  if (runs('leases')) {
    const rate = LEASES.instances / LEASES.periodS;
    log(`plinth leases: ${LEASES.instances} instances, one renewal each per ${LEASES.periodS} s (${rate}/s), ${LEASES.warmupS} s warm-up + ${LEASES.measureS} s…`);
    const r = await withPlinth('leases', async (s) => ({ ...(await leaseLoad(s, LEASES)), memory: memoryMiB(s.pid) }));
    log(`  registered in ${round(r.registerS, 1)} s (${r.registerErrors} errors); server CPU ${round(r.serverCpuPct, 1)} % of one core (${round(r.serverSysPct, 1)} % in the kernel); ` +
      `renew p50 ${ms(r.renew.p50)} ms p99 ${ms(r.renew.p99)} ms; ${round(r.achievedRate, 0)}/s achieved; ${r.failed} failed; ` +
      `load generator CPU ${round(r.loadgenCpuPct, 0)} %, rest ${round(r.otherCpuPct, 0)} %`);
    notes.push(...busyNote('the lease run', r.otherCpuPct));
    if (r.achievedRate < 0.98 * rate || r.maxLagMs > 250) {
      const why = `the load generator did not sustain ${rate} renewals/s: ${round(r.achievedRate, 0)}/s completed, up to ${round(r.maxLagMs, 0)} ms behind schedule, generator at ${round(r.loadgenCpuPct, 0)} % of a core`;
      notes.push(why);
    }
    Object.assign(results, {
      instances: LEASES.instances,
      lease_cpu_pct: round(r.serverCpuPct, 1), lease_cpu_sys_pct: round(r.serverSysPct, 1),
      renew_p50_ms: ms(r.renew.p50), renew_p99_ms: ms(r.renew.p99), renew_max_ms: ms(r.renew.max),
      renew_rate_per_s: round(r.achievedRate, 0), renew_target_per_s: rate,
      renew_failed: r.failed, register_errors: r.registerErrors, register_s: round(r.registerS, 1),
      loadgen_cpu_pct: round(r.loadgenCpuPct, 0), lease_other_cpu_pct: round(r.otherCpuPct, 0), lease_server_rss_mb: round(r.memory.rss, 1),
    });
  }

  Object.assign(results, {
    subscribers: PUSH.subscribers,
    changes: PUSH.changes,
    change_spacing_ms: PUSH.spacingMs,
    machine: machineInfo(),
    notes,
  });
  // The keys readers rely on are always there; null when that part did not run.
  const KEYS = ['push_p50_ms', 'push_p99_ms', 'push_max_ms', 'server_rss_mb', 'missed', 'etcd_push_p50_ms', 'etcd_push_p99_ms', 'etcd_rss_mb',
    'push_p99_ratio_vs_etcd', 'push_p99_ratio_vs_etcd_per_connection', 'instances', 'lease_cpu_pct', 'renew_p50_ms', 'renew_p99_ms', 'renew_rate_per_s'];
  for (const k of KEYS) results[k] ??= null;
  const met = verdicts(results);
  results.targets = met;

  const out = only ? join(root, 'bench', '.work', 'push.partial.json') : join(root, 'bench', 'results', 'push.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  log(`\nwrote ${out}`);
  if (!only) writeDoc(results);
  for (const [k, v] of Object.entries(met)) log(`  target ${k}: ${v.met === null ? 'not measured' : v.met ? 'met' : 'MISSED'} (${v.detail})`);
  for (const n of notes) log(`  note: ${n}`);
}

function verdicts(r) {
  const v = {};
  if (r.push_p99_ms != null) {
    v.push_p99 = { met: r.push_p99_ms <= TARGET.pushP99Ms && r.missed === 0, detail: `p99 ${r.push_p99_ms} ms ≤ ${TARGET.pushP99Ms} ms, ${r.missed} missed` };
  }
  v.push_vs_etcd = r.push_p99_ratio_vs_etcd == null
    ? { met: null, detail: 'etcd not measured' }
    : { met: r.push_p99_ms <= r.etcd_push_p99_ms, detail: `plinth p99 / etcd p99 = ${r.push_p99_ratio_vs_etcd} ≤ 1` };
  v.push_vs_etcd_per_connection = r.push_p99_ratio_vs_etcd_per_connection == null
    ? { met: null, detail: 'etcd per-connection run not measured' }
    : { met: r.push_p99_ms <= r.etcd_conn_push_p99_ms, detail: `plinth p99 / etcd (one connection per watcher) p99 = ${r.push_p99_ratio_vs_etcd_per_connection} ≤ 1` };
  if (r.lease_cpu_pct != null) {
    v.lease_cpu = {
      met: r.lease_cpu_pct <= TARGET.leaseCpuPct && r.renew_failed === 0 && r.renew_rate_per_s >= 0.98 * r.renew_target_per_s,
      detail: `${r.lease_cpu_pct} % ≤ ${TARGET.leaseCpuPct} % of one core at ${r.renew_rate_per_s}/${r.renew_target_per_s} renewals/s, ${r.renew_failed} failed`,
    };
  }
  return v;
}

/** Rewrites the generated block of docs/benchmarks.md; the prose around it is kept as written. */
function writeDoc(r) {
  const yes = verdict;
  const m = r.machine;
  const rows = [
    '| figure | plinth | etcd | target | |',
    '|---|---|---|---|---|',
    `| push p50 (ms) | ${r.push_p50_ms} | ${r.etcd_push_p50_ms ?? '–'} | | |`,
    `| push p99 (ms) | ${r.push_p99_ms} | ${r.etcd_push_p99_ms ?? '–'} | ≤ ${TARGET.pushP99Ms} | ${yes(r.targets.push_p99)} |`,
    `| push max (ms) | ${r.push_max_ms} | ${r.etcd_push_max_ms ?? '–'} | | |`,
    `| p99 ratio plinth / etcd (etcd: 100 watchers per gRPC connection) | ${r.push_p99_ratio_vs_etcd ?? '–'} | 1 | ≤ 1 | ${yes(r.targets.push_vs_etcd)} |`,
    `| push p50 / p99 / max, one connection per watcher (ms) | ${r.push_p50_ms} / ${r.push_p99_ms} / ${r.push_max_ms} | ${r.etcd_conn_push_p50_ms ?? '–'} / ${r.etcd_conn_push_p99_ms ?? '–'} / ${r.etcd_conn_push_max_ms ?? '–'} | | |`,
    `| p99 ratio plinth / etcd, one connection per watcher | ${r.push_p99_ratio_vs_etcd_per_connection ?? '–'} | 1 | ≤ 1 | ${yes(r.targets.push_vs_etcd_per_connection)} |`,
    `| deliveries missed (of ${r.subscribers * r.changes}) | ${r.missed} | ${r.etcd_missed ?? '–'} | 0 | |`,
    `| server RSS with ${r.subscribers} watchers, MiB (before watchers) | ${r.server_rss_mb} (${r.server_rss_before_watchers_mb}) | ${r.etcd_rss_mb ?? '–'} (${r.etcd_rss_before_watchers_mb ?? '–'}) | | |`,
    `| server CPU during push, % of one core (kernel) | ${r.push_server_cpu_pct} (${r.push_server_sys_pct}) | ${r.etcd_server_cpu_pct ?? '–'} (${r.etcd_server_sys_pct ?? '–'}) | | |`,
    `| lease renewals: server CPU (% of one core) | ${r.lease_cpu_pct} | | ≤ ${TARGET.leaseCpuPct} | ${yes(r.targets.lease_cpu)} |`,
    `| renewals/s achieved (target ${r.renew_target_per_s}) | ${r.renew_rate_per_s} | | | |`,
    `| renew latency p50 / p99 (ms) | ${r.renew_p50_ms} / ${r.renew_p99_ms} | | | |`,
    `| failed renewals | ${r.renew_failed} | | 0 | |`,
  ];
  log(
    replaceDocBlock(join(root, 'docs', 'benchmarks.md'), 'push', [
      `Last run: ${m.date.slice(0, 10)}, ${m.nproc} cores (${m.cpu}), Node ${m.node}, etcd ${r.etcd_version ?? 'not run'}; ` +
        `${r.subscribers} watchers × ${r.changes} changes every ${r.change_spacing_ms} ms; ${r.instances} instances.`,
      '',
      ...rows,
      ...(r.notes.length ? ['', ...r.notes.map((n) => `Note: ${n}.`)] : []),
    ]),
  );
}

runMain(main);
