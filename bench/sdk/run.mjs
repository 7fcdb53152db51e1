// `npm run bench:sdk`: what Plinth's outbound client costs per call and what it does when an instance dies,
// in one run on this machine. Writes bench/results/sdk.json and the figures in docs/benchmarks.md.
//
// BENCH_QUICK=1: small sizes, for development (writes bench/.work/sdk.quick.json, leaves the doc alone).
// BENCH_ONLY=micro,e2e,fault: a partial run (bench/.work/sdk.partial.json, doc left alone).
// BENCH_MICRO_IMPLS=chain: only these micro implementations (chain, client, cockatiel, opossum, dispatch_floor;
// for `node --cpu-prof`, see profile-top.mjs).
// Sizes: BENCH_MICRO_CALLS, BENCH_E2E_S, BENCH_CONCURRENCY, BENCH_CONNECTIONS.
// BENCH_DOC_ONLY=1: rewrites the docs block from bench/results/sdk.json without measuring.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, guardRun, machineBusySeconds, machineInfo, replaceDocBlock, round, runMain, spawnReady, stopChild, verdict } from '../push/lib.mjs';
import { endToEnd } from './e2e.mjs';
import { BURST_GAP_MS, killOne } from './fault.mjs';
import { bareDispatch, FakeDispatcher } from './fake-dispatcher.mjs';
import { CHAIN, cockatielCall, micro, opossumCall } from './micro.mjs';
import { plinthClient, plinthEngine, SERVICE } from './plinth.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const env = process.env;
const QUICK = env.BENCH_QUICK === '1';
const MICRO = {
  calls: Number(env.BENCH_MICRO_CALLS ?? (QUICK ? 20_000 : 200_000)),
  rounds: 5,
  instances: 3,
};
MICRO.warmup = Math.min(MICRO.calls, 50_000);
const E2E = {
  concurrency: Number(env.BENCH_CONCURRENCY ?? 32),
  connections: Number(env.BENCH_CONNECTIONS ?? 32),
  durationMs: Number(env.BENCH_E2E_S ?? (QUICK ? 1 : 3)) * 1000,
  warmupMs: QUICK ? 1000 : 2000,
  rounds: QUICK ? 3 : 6,
};
const FAULT = { concurrency: E2E.concurrency, warmupMs: QUICK ? 1000 : 2000, beforeMs: QUICK ? 1500 : 3000, afterMs: QUICK ? 3000 : 7000 };
const only = env.BENCH_ONLY ? new Set(env.BENCH_ONLY.split(',')) : undefined;
const runs = (part) => !only || only.has(part);
const MICRO_ADDRESSES = Array.from({ length: MICRO.instances }, (_, i) => `http://127.0.0.${i + 1}:9`);
const TARGET = { chainNs: 1000, vsCockatiel: 5, e2eRatio: 0.9, killErrorPct: 0.1 };
const TIME_LIMIT_MS = 240_000;

guardRun(TIME_LIMIT_MS);

const log = (...a) => console.log(...a);
const BUSY_MACHINE_PCT = 15;

async function startUpstream(name) {
  const { child, info } = await spawnReady(process.execPath, [join(here, 'upstream-child.mjs'), name], { name: `upstream ${name}` });
  return { child, pid: info.pid, address: `http://127.0.0.1:${info.port}` };
}

/** CPU used by everything but this process and `pids` while `fn` ran, in % of one core. */
async function measuringOthers(pids, fn) {
  const wall0 = performance.now();
  const busy0 = machineBusySeconds();
  const self0 = process.cpuUsage();
  const kids0 = pids.map(cpuSeconds);
  const out = await fn();
  const wallS = (performance.now() - wall0) / 1000;
  const self = process.cpuUsage(self0);
  const selfS = (self.user + self.system) / 1e6;
  const kidsS = pids.map((p, i) => {
    try {
      return cpuSeconds(p) - kids0[i];
    } catch {
      return 0; // gone (the killed instance)
    }
  });
  const kidsTotal = kidsS.reduce((a, b) => a + b, 0);
  return {
    out,
    selfPct: (100 * selfS) / wallS,
    upstreamPct: (100 * kidsTotal) / wallS,
    otherPct: (100 * Math.max(0, machineBusySeconds() - busy0 - selfS - kidsTotal)) / wallS,
  };
}

async function main() {
  const results = { quick: QUICK };
  const notes = [];
  const busyNote = (what, pct) => {
    if (pct > BUSY_MACHINE_PCT) notes.push(`other work used ${round(pct, 0)} % of a core during ${what}; its figures are inflated, rerun on an idle machine`);
  };

  if (runs('micro')) {
    const fake = new FakeDispatcher();
    // Several instances, so that routing picks between candidates (p2c) as in production, not from a list of one.
    const addresses = MICRO_ADDRESSES;
    const engine = plinthEngine({ addresses });
    const client = plinthClient({ addresses, dispatcherFactory: () => fake });
    // One bare dispatch() into the same fake, no policy, no headers: the floor under client_ns.
    const floorOpts = { origin: addresses[0], method: 'GET', path: '/micro', headers: null, body: null };
    const floor = { call: () => bareDispatch(fake, floorOpts), close() {} };
    const all = {
      chain: engine,
      client: { call: () => client.request(SERVICE, { method: 'GET', path: '/micro' }), close: () => client.close() },
      cockatiel: cockatielCall(),
      opossum: opossumCall(),
      dispatch_floor: floor,
    };
    const pick = env.BENCH_MICRO_IMPLS ? env.BENCH_MICRO_IMPLS.split(',') : Object.keys(all);
    const impls = Object.fromEntries(pick.map((k) => [k, all[k]]));
    // Every implementation must answer as the others do before it is timed.
    for (const [name, impl] of Object.entries(impls)) {
      const r = await impl.call();
      const status = r.status ?? r.statusCode ?? 200;
      if (status !== 200) throw new Error(`micro: ${name} answered ${status}`);
    }
    log(`micro: ${Object.keys(impls).join(', ')}; ${MICRO.warmup} warm-up calls each, then ${MICRO.rounds} rounds × ${MICRO.calls} sequential calls…`);
    const m = await measuringOthers([], () => micro(impls, MICRO));
    for (const impl of Object.values(impls)) await impl.close();
    busyNote('the micro run', m.otherPct);
    for (const [name, r] of Object.entries(m.out)) {
      log(`  ${name}: ${round(r.median, 0)} CPU ns/call (rounds ${r.rounds.map((x) => round(x, 0)).join(', ')}), wall ${round(r.wallMedian, 0)} ns/call`);
    }
    const ns = (k) => (m.out[k] ? round(m.out[k].median, 0) : null);
    Object.assign(results, {
      chain_ns: ns('chain'),
      client_ns: ns('client'),
      cockatiel_ns: ns('cockatiel'),
      opossum_ns: ns('opossum'),
      dispatch_floor_ns: ns('dispatch_floor'),
      micro_wall_ns: Object.fromEntries(Object.entries(m.out).map(([k, r]) => [k, round(r.wallMedian, 0)])),
      micro_rounds_cpu_ns: Object.fromEntries(Object.entries(m.out).map(([k, r]) => [k, r.rounds.map((x) => round(x, 0))])),
      micro_rounds_wall_ns: Object.fromEntries(Object.entries(m.out).map(([k, r]) => [k, r.wallRounds.map((x) => round(x, 0))])),
      micro_fake_dispatches: fake.dispatches,
      micro_other_cpu_pct: round(m.otherPct, 0),
    });
    if (results.chain_ns && results.cockatiel_ns) results.cockatiel_over_chain = round(results.cockatiel_ns / results.chain_ns, 2);
    if (results.client_ns && results.dispatch_floor_ns) results.client_over_floor_ns = results.client_ns - results.dispatch_floor_ns;
    if (results.chain_ns && results.opossum_ns) results.opossum_over_chain = round(results.opossum_ns / results.chain_ns, 2);
  }

  if (runs('e2e')) {
    const up = await startUpstream('e2e');
    try {
      log(`e2e: concurrency ${E2E.concurrency}, ${E2E.connections} connections, ${E2E.warmupMs / 1000} s warm-up each, then ${E2E.rounds} rounds × (sdk, undici request, undici dispatch) × ${E2E.durationMs / 1000} s…`);
      const m = await measuringOthers([up.pid], () => endToEnd({ address: up.address, ...E2E }));
      const { sdk, undici, undiciDispatch, sdkOverUndici, sdkOverDispatch, runs: rr } = m.out;
      busyNote('the e2e run', m.otherPct);
      for (const side of Object.keys(rr)) {
        log(`  ${side}: ${rr[side].map((r) => `${round(r.rps, 0)} rps (${round(r.cpuUsPerCall, 1)} µs CPU/call, ${r.failed} failed)`).join(' | ')}`);
      }
      log(`  CPU: bench process ${round(m.selfPct, 0)} %, upstream ${round(m.upstreamPct, 0)} %, rest ${round(m.otherPct, 0)} %`);
      Object.assign(results, {
        sdk_rps: round(sdk.rps, 0),
        undici_rps: round(undici.rps, 0),
        sdk_over_undici: round(sdkOverUndici, 3),
        undici_dispatch_rps: round(undiciDispatch.rps, 0),
        sdk_over_undici_dispatch: round(sdkOverDispatch, 3),
        undici_dispatch_cpu_us_per_call: round(undiciDispatch.cpuUsPerCall, 1),
        sdk_cpu_us_per_call: round(sdk.cpuUsPerCall, 1),
        undici_cpu_us_per_call: round(undici.cpuUsPerCall, 1),
        e2e_rounds_rps: Object.fromEntries(Object.entries(rr).map(([k, v]) => [k, v.map((r) => round(r.rps, 0))])),
        e2e_rounds_cpu_us_per_call: Object.fromEntries(Object.entries(rr).map(([k, v]) => [k, v.map((r) => round(r.cpuUsPerCall, 1))])),
        e2e_failed: Object.fromEntries(Object.entries(rr).map(([k, v]) => [k, v.reduce((a, r) => a + r.failed, 0)])),
        e2e_errors: Object.fromEntries(Object.entries(rr).map(([k, v]) => [k, Object.assign({}, ...v.map((r) => r.errors))])),
        e2e_cpu_pct: { bench: round(m.selfPct, 0), upstream: round(m.upstreamPct, 0), other: round(m.otherPct, 0) },
      });
    } finally {
      await stopChild(up.child);
    }
  }

  if (runs('fault')) {
    const ups = await Promise.all(['a', 'b', 'c'].map(startUpstream));
    try {
      log(`fault: 3 instances, concurrency ${FAULT.concurrency}, SIGKILL of one after ${FAULT.beforeMs / 1000} s, ${FAULT.afterMs / 1000} s more…`);
      const m = await measuringOthers(ups.map((u) => u.pid), () => killOne({ upstreams: ups, ...FAULT }));
      const f = m.out;
      busyNote('the fault run', m.otherPct);
      const pct = (100 * f.afterErrors) / Math.max(1, f.afterCalls);
      const totalPct = (100 * f.load.failed) / Math.max(1, f.load.calls);
      log(`  ${f.load.calls} calls (${round(f.load.rps, 0)}/s), ${f.load.failed} failed ${JSON.stringify(f.load.errors)}; after the kill ${f.afterErrors} of ${f.afterCalls} failed (${round(pct, 3)} %)`);
      log(`  tries to the dead instance after the kill: ${f.deadTriesAfterKill}; first burst ended ${round(f.ejectionMs, 1)} ms after the kill (${f.burstTries} tries), last at ${round(f.lastDeadTryMs, 0)} ms; later tries at ${f.laterTryOffsetsMs.map((x) => round(x, 0)).join(', ') || '–'} ms`);
      log(`  calls retried ${f.retried}, fallbacks ${f.fallbacks}; tries per instance ${JSON.stringify(f.triesPerInstance)}`);
      Object.assign(results, {
        kill_error_pct: round(pct, 3),
        kill_error_pct_whole_run: round(totalPct, 3),
        ejection_ms: round(f.ejectionMs, 1),
        last_dead_try_ms: round(f.lastDeadTryMs, 0),
        fault_calls: f.load.calls,
        fault_calls_after_kill: f.afterCalls,
        fault_errors: f.load.failed,
        fault_errors_after_kill: f.afterErrors,
        fault_errors_by_code: f.load.errors,
        fault_error_offsets_ms: f.errorOffsetsMs.map((x) => round(x, 1)),
        fault_retried_calls: f.retried,
        fault_fallbacks: f.fallbacks,
        fault_rps: round(f.load.rps, 0),
        dead_tries_after_kill: f.deadTriesAfterKill,
        dead_tries_first_burst: f.burstTries,
        dead_tries_later: f.laterTries,
        dead_tries_later_offsets_ms: f.laterTryOffsetsMs.map((x) => round(x, 0)),
        tries_per_instance: f.triesPerInstance,
        fault_cpu_pct: { bench: round(m.selfPct, 0), upstreams: round(m.upstreamPct, 0), other: round(m.otherPct, 0) },
      });
    } finally {
      await Promise.all(ups.map((u) => stopChild(u.child)));
    }
  }

  Object.assign(results, {
    sizes: {
      micro: { ...MICRO },
      e2e: { ...E2E },
      fault: { ...FAULT, instances: 3, burstGapMs: BURST_GAP_MS },
      chain: { ...CHAIN },
    },
    machine: machineInfo(),
    notes,
  });
  const KEYS = ['chain_ns', 'client_ns', 'dispatch_floor_ns', 'cockatiel_ns', 'opossum_ns', 'cockatiel_over_chain', 'opossum_over_chain', 'sdk_rps', 'undici_rps', 'sdk_over_undici', 'kill_error_pct', 'ejection_ms'];
  for (const k of KEYS) results[k] ??= null;
  results.targets = verdicts(results);

  const out = only || QUICK ? join(root, 'bench', '.work', `sdk.${QUICK ? 'quick' : 'partial'}.json`) : join(root, 'bench', 'results', 'sdk.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  log(`\nwrote ${out}`);
  if (!only && !QUICK) writeDoc(results);
  for (const [k, v] of Object.entries(results.targets)) log(`  target ${k}: ${v.met === null ? 'not measured' : v.met ? 'met' : 'MISSED'} (${v.detail})`);
  for (const n of notes) log(`  note: ${n}`);
}

function verdicts(r) {
  const v = {};
  const unmeasured = (what) => ({ met: null, detail: `${what} not measured` });
  v.chain_ns = r.chain_ns == null ? unmeasured('chain') : { met: r.chain_ns <= TARGET.chainNs, detail: `${r.chain_ns} ns ≤ ${TARGET.chainNs} ns per call` };
  v.chain_vs_cockatiel = r.cockatiel_over_chain == null
    ? unmeasured('cockatiel or chain')
    : { met: r.cockatiel_over_chain >= TARGET.vsCockatiel, detail: `cockatiel / chain = ${r.cockatiel_over_chain} ≥ ${TARGET.vsCockatiel}` };
  v.e2e = r.sdk_over_undici == null
    ? unmeasured('end to end')
    : { met: r.sdk_over_undici >= TARGET.e2eRatio && r.e2e_failed.sdk === 0, detail: `sdk / undici = ${r.sdk_over_undici} ≥ ${TARGET.e2eRatio}, ${r.e2e_failed.sdk} failed` };
  v.kill = r.kill_error_pct == null
    ? unmeasured('fault')
    : { met: r.kill_error_pct < TARGET.killErrorPct, detail: `${r.fault_errors_after_kill} of ${r.fault_calls_after_kill} calls after the kill failed = ${r.kill_error_pct} % < ${TARGET.killErrorPct} %` };
  return v;
}

/** Rewrites the generated block of docs/benchmarks.md; the prose around it is kept as written. */
function writeDoc(r) {
  const yes = verdict;
  const m = r.machine;
  const s = r.sizes;
  const rows = [
    '| figure | plinth | peer | target | |',
    '|---|---|---|---|---|',
    `| micro, policy chain: CPU ns per call of breaker + retry under budget + per-try timeout + bulkhead around a transport that only answers 200 (plinth: \`OutboundEngine\`, which also routes and picks one of ${r.sizes.micro.instances ?? 3} instances by p2c; peer: cockatiel 3 around a no-op async function) | ${r.chain_ns} | ${r.cockatiel_ns} | ≤ ${TARGET.chainNs} | ${yes(r.targets.chain_ns)} |`,
    `| micro, policy chain: cockatiel / plinth | ${r.cockatiel_over_chain} | 1 | ≥ ${TARGET.vsCockatiel} | ${yes(r.targets.chain_vs_cockatiel)} |`,
    `| micro, policy chain: CPU ns per call, peer opossum 9 (breaker, timeout, capacity; + a retry loop) | ${r.chain_ns} | ${r.opossum_ns} | | |`,
    `| micro, policy chain: opossum / plinth | ${r.opossum_over_chain ?? '–'} | 1 | | |`,
    `| micro, whole client: CPU ns per call of \`client.request()\` (the policy chain plus headers, trace context, the HTTP transport and undici's \`dispatch()\` into an in-process fake dispatcher that answers 200 a microtask later, body buffered) | ${r.client_ns ?? '–'} | | | |`,
    `| micro, whole client: of which undici alone, one bare \`dispatch()\` into the same fake dispatcher with no policy and no headers (CPU ns) | | ${r.dispatch_floor_ns ?? '–'} | | |`,
    `| end to end: requests/s at concurrency ${s.e2e.concurrency}, median round (bare undici Pool, \`request()\`) | ${r.sdk_rps} | ${r.undici_rps} | | |`,
    `| end to end: plinth / undici, median of per-round ratios | ${r.sdk_over_undici} | 1 | ≥ ${TARGET.e2eRatio} | ${yes(r.targets.e2e)} |`,
    `| end to end: caller CPU per call (µs) | ${r.sdk_cpu_us_per_call ?? '–'} | ${r.undici_cpu_us_per_call ?? '–'} | | |`,
    `| end to end: requests/s, bare undici \`dispatch()\` (caller CPU µs per call) | ${r.sdk_rps} (${r.sdk_cpu_us_per_call}) | ${r.undici_dispatch_rps ?? '–'} (${r.undici_dispatch_cpu_us_per_call ?? '–'}) | | |`,
    `| end to end: plinth / undici \`dispatch()\` | ${r.sdk_over_undici_dispatch ?? '–'} | 1 | | |`,
    `| fault: calls failed after the kill (%) | ${r.kill_error_pct} (${r.fault_errors_after_kill} of ${r.fault_calls_after_kill}) | | < ${TARGET.killErrorPct} | ${yes(r.targets.kill)} |`,
    `| fault: calls failed over the whole run (%) | ${r.kill_error_pct_whole_run ?? '–'} (${r.fault_errors ?? '–'} of ${r.fault_calls ?? '–'}) | | | |`,
    `| fault: kill → end of the first burst of tries to the dead instance (ms) | ${r.ejection_ms} (${r.dead_tries_first_burst ?? '–'} tries) | | | |`,
    `| fault: later tries to the dead instance (ms after the kill) | ${r.dead_tries_later ?? '–'}${r.dead_tries_later ? ` (${r.dead_tries_later_offsets_ms.join(', ')})` : ''} | | | |`,
  ];
  log(
    replaceDocBlock(join(root, 'docs', 'benchmarks.md'), 'sdk', [
      `Last run: ${m.date.slice(0, 10)}, ${m.nproc} cores (${m.cpu}), Node ${m.node}; micro ${s.micro.rounds} × ${s.micro.calls} calls; ` +
        `end to end ${s.e2e.rounds} rounds × ${s.e2e.durationMs / 1000} s per side, ${s.e2e.connections} connections; fault ${s.fault.beforeMs / 1000} s + ${s.fault.afterMs / 1000} s.`,
      '',
      ...rows,
      ...(r.notes.length ? ['', ...r.notes.map((n) => `Note: ${n}.`)] : []),
    ]),
  );
}

const start = env.BENCH_DOC_ONLY === '1'
  ? async () => writeDoc(JSON.parse(readFileSync(join(root, 'bench', 'results', 'sdk.json'), 'utf8')))
  : main;
runMain(start);
