// Same-run A/B of the tracing-overhead service variants against a saved build of the SDK, for development:
//   node bench/tracing/compare.mjs [LABEL=]VARIANT[@DIR] ...
// VARIANT is a service-child.mjs variant (none, sdk_off, sdk100, ...). With @DIR the child is DIR's copy of
// bench/tracing/service-child.mjs, so it loads DIR/packages/sdk/dist (a snapshot taken with
// `mkdir -p DIR/bench/tracing DIR/packages/sdk && cp -r packages/sdk/dist DIR/packages/sdk/ &&
// cp bench/tracing/service-child.mjs DIR/bench/tracing/`, DIR under bench/.work so that node_modules resolve).
// Pinning, warm-up and interleaved rounds as in run.mjs (BENCH_ROUNDS, BENCH_ROUND_S, BENCH_CONCURRENCY,
// BENCH_WARMUP_S); BENCH_CPU_PROF=1 profiles each child into bench/.work/profiles/ (sampling every
// BENCH_CPU_PROF_INTERVAL µs, when given). Writes nothing else.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanUp, round, spawnReady, stopChild } from '../push/lib.mjs';
import { overheadLoad } from './overhead.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const env = process.env;
const specs = process.argv.slice(2).map((a) => {
  const [label, rest] = a.includes('=') ? a.split('=', 2) : [a, a];
  const [variant, dir] = rest.split('@', 2);
  return { label, variant, script: dir ? join(resolve(dir), 'bench', 'tracing', 'service-child.mjs') : join(here, 'service-child.mjs') };
});
if (specs.length === 0) throw new Error('usage: node bench/tracing/compare.mjs [LABEL=]VARIANT[@DIR] ...');

process.on('exit', cleanUp);
setTimeout(() => {
  console.error('time limit (240 s) reached: stopping');
  cleanUp();
  process.exit(2);
}, 240_000).unref();

const TASKSET = existsSync('/usr/bin/taskset') || existsSync('/bin/taskset');
if (TASKSET) execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
const pinned = (core, args) => (TASKSET ? ['taskset', ['-c', core, process.execPath, ...args]] : [process.execPath, args]);
const prof = (label) => {
  if (!env.BENCH_CPU_PROF) return [];
  const dir = join(root, 'bench', '.work', 'profiles');
  mkdirSync(dir, { recursive: true });
  return ['--cpu-prof', ...(env.BENCH_CPU_PROF_INTERVAL ? [`--cpu-prof-interval=${env.BENCH_CPU_PROF_INTERVAL}`] : []), `--cpu-prof-dir=${dir}`, `--cpu-prof-name=compare-${label}-${Date.now()}.cpuprofile`];
};

const [sinkCmd, sinkArgs] = pinned('1', [join(here, 'sink.mjs')]);
const sink = await spawnReady(sinkCmd, sinkArgs, { name: 'sink' });
const children = [];
try {
  const services = {};
  for (const s of specs) {
    const [cmd, args] = pinned('0', [...prof(s.label), s.script, s.variant, sink.info.url]);
    const c = await spawnReady(cmd, args, { name: `service ${s.label}` });
    children.push(c.child);
    services[s.label] = { address: `http://127.0.0.1:${c.info.port}`, pid: c.info.pid };
  }
  const r = await overheadLoad(services, {
    concurrency: Number(env.BENCH_CONCURRENCY ?? 32),
    warmupMs: Number(env.BENCH_WARMUP_S ?? 2) * 1000,
    rounds: Number(env.BENCH_ROUNDS ?? 6),
    roundMs: Number(env.BENCH_ROUND_S ?? 1) * 1000,
    log: env.BENCH_VERBOSE ? console.log : undefined,
  });
  for (const s of specs) {
    const x = r[s.label];
    console.log(`${s.label.padEnd(12)} ${String(round(x.serviceCpuUsPerReq, 1)).padStart(6)} µs CPU/req (rounds ${x.roundsCpuUsPerReq.map((y) => round(y, 1)).join(' ')}), ${round(x.rps, 0)} rps, other ${round(x.otherCpuPct, 0)} %, ${x.requestsTotal} requests${x.failed ? `, ${x.failed} failed` : ''}`);
  }
} finally {
  await Promise.all(children.map((c) => stopChild(c)));
  await stopChild(sink.child);
}
