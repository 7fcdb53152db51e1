// `npm run bench:gateway`: the plinth gateway with its policies on against @fastify/http-proxy, nginx and no
// proxy at all, to the same upstream, in one run on this machine. Writes bench/results/gateway.json and the
// figures in docs/benchmarks.md.
//
// BENCH_QUICK=1: 3 s runs (writes bench/.work/gateway.quick.json, leaves the doc alone).
// BENCH_ONLY=plinth,fastify,node_floor,nginx,direct: a partial run (bench/.work/gateway.partial.json, doc left alone).
// BENCH_CPU_PROF=1: the gateway child runs under `node --cpu-prof` (profile in bench/.work/profiles/, its top
// self-time functions printed); profiling slows it, so such a run writes bench/.work/gateway.prof.json only.
// BENCH_PLINTH_OFF=access_log,tracing: the gateway without those features, to see what each costs (use with
// BENCH_ONLY; such a run is not the benchmark's figure).
// Sizes: BENCH_DURATION_S, BENCH_CONNECTIONS, BENCH_ROUNDS, BENCH_UNLOADED_REQUESTS.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { cpuSeconds, guardRun, machineBusySeconds, machineInfo, removeTempDir, replaceDocBlock, round, runMain, sleep, spawnReady, stopChild, tempDir, verdict } from '../push/lib.mjs';
import { unloaded, wrk } from './load.mjs';
import { startNginx } from './nginx.mjs';
import { applyPolicy, NAMESPACE, PATH } from './policy.mjs';
import { topSelfTime } from './profile.mjs';
import { findTools, nginxVersion, pinned, pinSelf, wrkVersion } from './tools.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const env = process.env;
const QUICK = env.BENCH_QUICK === '1';
const PROFILE = env.BENCH_CPU_PROF === '1';
const LOAD = {
  connections: Number(env.BENCH_CONNECTIONS ?? 64),
  durationS: Number(env.BENCH_DURATION_S ?? (QUICK ? 3 : 10)),
  warmupS: QUICK ? 1 : 2,
  rounds: Number(env.BENCH_ROUNDS ?? 2),
};
const UNLOADED = { warmup: 500, rounds: 8, perRound: Math.round(Number(env.BENCH_UNLOADED_REQUESTS ?? 2000) / 8) };
// Two cores: the proxy under test gets one, the upstream and the load generator share the other.
const CORE = { proxy: 0, rest: 1 };
const TARGET = { rpsVsFastify: 1.25, addedP50Ms: 0.2 };
const ALL = ['plinth', 'fastify', 'node_floor', 'nginx', 'direct'];
const only = env.BENCH_ONLY ? new Set(env.BENCH_ONLY.split(',')) : undefined;
const runs = (t) => !only || only.has(t);
const TIME_LIMIT_MS = 400_000;

guardRun(TIME_LIMIT_MS);

const log = (...a) => console.log(...a);
const ms = (x) => round(x, 3);
const BUSY_MACHINE_PCT = 15;

async function get(url, headers = {}) {
  const r = await request(url, { headers });
  return { status: r.statusCode, text: await r.body.text() };
}

/** Polls until `check` holds (the gateway's watch delivers Routes, rules and instances asynchronously). */
async function until(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await check().catch((e) => ({ ok: false, detail: e.message }));
    if (last.ok) return last;
    if (Date.now() > deadline) throw new Error(`${what}: ${last.detail}`);
    await sleep(50);
  }
}

/** That every feature the scenario asks for is on in the gateway under test, seen from outside. */
async function checkGateway(gwUrl, jwt) {
  const auth = { authorization: `Bearer ${jwt}` };
  const base = await until('the gateway never routed the benchmark path', async () => {
    const r = await get(gwUrl + PATH, auth);
    return { ok: r.status === 200 && JSON.parse(r.text).lane === 'base', detail: `${r.status} ${r.text}` };
  });
  const gray = await until('lane routing never sent x-lane: gray to the gray instance', async () => {
    const r = await get(gwUrl + PATH, { ...auth, 'x-lane': 'gray' });
    return { ok: r.status === 200 && JSON.parse(r.text).lane === 'gray', detail: `${r.status} ${r.text}` };
  });
  const noToken = await get(gwUrl + PATH);
  const badToken = await get(gwUrl + PATH, { authorization: `Bearer ${jwt.slice(0, -6)}AAAAAA` });
  const noRoute = await get(`${gwUrl}/nowhere`, auth);
  const checks = {
    jwt_required: noToken.status === 401 && badToken.status === 401,
    base_lane: base.ok,
    gray_lane_entry: gray.ok,
    route_not_found: noRoute.status === 404,
  };
  for (const [k, v] of Object.entries(checks)) if (!v) throw new Error(`gateway check ${k} failed (no token ${noToken.status}, bad token ${badToken.status}, no route ${noRoute.status})`);
  return checks;
}

function metricValue(text, name) {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

function lineCount(file) {
  try {
    return Number(execFileSync('wc', ['-l', file], { encoding: 'utf8' }).trim().split(/\s+/)[0]);
  } catch {
    return null;
  }
}

function accessLogSample(file) {
  try {
    const head = readFileSync(file, 'utf8').slice(0, 4000).split('\n')[0];
    return head ? JSON.parse(head) : null;
  } catch {
    return null;
  }
}

async function main() {
  const notes = [];
  const tools = findTools(log);
  if (!tools.taskset) notes.push('taskset not found: nothing is pinned to a core');
  if (!tools.wrk) throw new Error(`${tools.missing.wrk}: wrk drives every loaded run, nothing to measure`);
  const nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());
  if (nproc < 2) notes.push(`only ${nproc} core: the proxy, the upstream and wrk share it`);
  pinSelf(tools.taskset, CORE.rest);
  const node = (core, args) => pinned(tools.taskset, core, [process.execPath, ...args]);

  const work = tempDir('plinth-bench-gateway-');
  const stops = [];
  try {
    const [uCmd, uArgs] = node(CORE.rest, [join(here, 'upstream-child.mjs')]);
    const up = await spawnReady(uCmd, uArgs, { name: 'upstream' });
    stops.push(() => stopChild(up.child));
    const upstreamUrl = `http://127.0.0.1:${up.info.port}`;
    const targets = {};
    const watchPids = { upstream: up.info.pid };

    let gateway;
    if (runs('plinth')) {
      const [cCmd, cArgs] = node(CORE.rest, [join(here, '..', 'push', 'plinth-child.mjs'), join(work, 'cp'), '3600']);
      const cp = await spawnReady(cCmd, cArgs, { name: 'plinth server' });
      stops.push(() => stopChild(cp.child));
      const { jwt } = await applyPolicy(cp.info, { upstreamAddress: `127.0.0.1:${up.info.port}`, grayAddress: `127.0.0.1:${up.info.grayPort}` });
      const profDir = join(root, 'bench', '.work', 'profiles');
      const profName = `gateway-${Date.now()}.cpuprofile`;
      const profArgs = PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${profName}`] : [];
      const accessLog = join(work, 'access.log');
      const off = new Set((env.BENCH_PLINTH_OFF ?? '').split(',').filter(Boolean));
      const cfg = { cpUrl: cp.info.url, token: cp.info.token, namespace: NAMESPACE, accessLog: off.has('access_log') ? null : accessLog, ...(off.has('tracing') ? { tracing: false } : {}) };
      const [gCmd, gArgs] = node(CORE.proxy, [...profArgs, join(here, 'plinth-child.mjs')]);
      process.env.BENCH_GATEWAY_CONFIG = JSON.stringify(cfg);
      const gw = await spawnReady(gCmd, gArgs, { name: 'plinth gateway' }).finally(() => delete process.env.BENCH_GATEWAY_CONFIG);
      const gwStop = () => stopChild(gw.child, 10_000);
      stops.push(gwStop);
      const checks = await checkGateway(gw.info.url, jwt);
      log(`plinth gateway ${gw.info.url}: ${Object.keys(checks).join(', ')} checked`);
      gateway = { ...gw.info, jwt, checks, accessLog, cpPid: cp.info.pid, stop: gwStop, profile: PROFILE ? join(profDir, profName) : undefined };
      targets.plinth = { url: gw.info.url + PATH, base: gw.info.url, pids: [gw.info.pid] };
      watchPids.controlPlane = cp.info.pid;
    }
    if (runs('fastify')) {
      const [fCmd, fArgs] = node(CORE.proxy, [join(here, 'fastify-child.mjs'), upstreamUrl]);
      const f = await spawnReady(fCmd, fArgs, { name: 'fastify proxy' });
      stops.push(() => stopChild(f.child));
      targets.fastify = { url: f.info.url + PATH, base: f.info.url, pids: [f.info.pid] };
    }
    if (runs('node_floor')) {
      const [fCmd, fArgs] = node(CORE.proxy, [join(here, 'floor-child.mjs'), upstreamUrl]);
      const f = await spawnReady(fCmd, fArgs, { name: 'bare node proxy' });
      stops.push(() => stopChild(f.child));
      targets.node_floor = { url: f.info.url + PATH, base: f.info.url, pids: [f.info.pid] };
    }
    let nginxVer;
    if (runs('nginx')) {
      if (!tools.nginx) {
        notes.push(`nginx skipped: ${tools.missing.nginx}`);
        log(`nginx skipped: ${tools.missing.nginx}`);
      } else {
        nginxVer = nginxVersion(tools.nginx);
        const n = await startNginx({ nginx: tools.nginx, taskset: tools.taskset, core: CORE.proxy, upstreamPort: up.info.port });
        stops.push(() => n.stop());
        targets.nginx = { url: n.url + PATH, base: n.url, pids: n.pids };
      }
    }
    if (runs('direct')) targets.direct = { url: upstreamUrl + PATH, base: upstreamUrl, pids: [] };

    // Every target gets the same request, bearer token included; only the plinth gateway checks it.
    const headers = gateway ? { authorization: `Bearer ${gateway.jwt}` } : {};
    const order = ALL.filter((t) => targets[t]);
    const rounds = Object.fromEntries(order.map((t) => [t, []]));
    for (let r = 0; r < LOAD.rounds; r++) {
      // Interleaved, the order reversed every other round, so a burst of other work does not hit one target only.
      for (const t of r % 2 === 0 ? order : [...order].reverse()) {
        const common = { wrkPath: tools.wrk, taskset: tools.taskset, core: CORE.rest, proxyCore: CORE.proxy, url: targets[t].url, connections: LOAD.connections, headers, proxyPids: targets[t].pids, watchPids };
        await wrk({ ...common, durationS: LOAD.warmupS });
        const w = await wrk({ ...common, durationS: LOAD.durationS });
        rounds[t].push(w);
        log(`  ${t.padEnd(8)} round ${r + 1}: ${round(w.rps, 0)} req/s  p50 ${ms(w.p50Ms)} ms  p99 ${ms(w.p99Ms)} ms  ` +
          `proxy ${w.proxyCpuUsPerReq === null ? '–' : `${round(w.proxyCpuUsPerReq, 1)} µs/req (${round(w.proxyCpuPct, 0)} % of a core)`}  ` +
          `upstream ${round(w.cpuUsPerReq.upstream, 1)} µs/req  wrk ${round(w.wrkCpuPct, 0)} %  other ${round(w.otherCpuPct, 0)} % (${round(w.otherOnProxyCorePct, 0)} % on core ${CORE.proxy})` +
          `${w.errors.status ? `  NON-2xx ${w.errors.status}` : ''}${w.errors.connect + w.errors.read + w.errors.write + w.errors.timeout ? `  socket errors ${JSON.stringify(w.errors)}` : ''}`);
      }
    }
    // The better round per target: on a shared machine other work only ever slows a round down.
    const best = Object.fromEntries(order.map((t) => [t, rounds[t].reduce((a, b) => (b.rps > a.rps ? b : a))]));

    log(`unloaded: ${UNLOADED.warmup} warm-up, then ${UNLOADED.rounds} × ${UNLOADED.perRound} sequential requests per target on one connection…`);
    const ours = [...order.flatMap((t) => targets[t].pids), ...Object.values(watchPids)];
    const oursCpu = () => ours.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
    const busy0 = machineBusySeconds();
    const ours0 = oursCpu();
    const self0 = process.cpuUsage();
    const u0 = performance.now();
    const lat = await unloaded(Object.fromEntries(order.map((t) => [t, targets[t].base])), { headers, path: PATH, ...UNLOADED });
    const selfUsage = process.cpuUsage(self0);
    const unloadedOtherPct = (100 * (machineBusySeconds() - busy0 - (oursCpu() - ours0) - (selfUsage.user + selfUsage.system) / 1e6)) / ((performance.now() - u0) / 1000);
    log(`  other work on the machine meanwhile: ${round(unloadedOtherPct, 0)} % of a core`);
    if (unloadedOtherPct > BUSY_MACHINE_PCT) notes.push(`other work used ${round(unloadedOtherPct, 0)} % of a core during the unloaded latency runs; those latencies are inflated`);
    for (const t of order) log(`  ${t.padEnd(8)} p50 ${ms(lat[t].p50Ms)} ms  p90 ${ms(lat[t].p90Ms)} ms  p99 ${ms(lat[t].p99Ms)} ms  ${JSON.stringify(lat[t].statuses)}`);

    // What the gateway did with its access log and its sampled spans.
    let features;
    if (gateway) {
      const metrics = (await get(`${gateway.adminUrl}/metrics`)).text;
      const exported = metricValue(metrics, 'plinth_tracing_spans_exported_total');
      const dropped = metricValue(metrics, 'plinth_tracing_spans_dropped_total');
      await gateway.stop();
      const lines = lineCount(gateway.accessLog);
      const sample = accessLogSample(gateway.accessLog);
      const served = order.includes('plinth') ? rounds.plinth.reduce((s, w) => s + w.requests, 0) : 0;
      features = {
        ...gateway.checks,
        access_log_lines: lines,
        access_log_bytes: statSync(gateway.accessLog, { throwIfNoEntry: false })?.size ?? null,
        access_log_sample: sample,
        spans_exported: exported,
        spans_dropped: dropped,
        measured_requests: served,
      };
      log(`plinth gateway: ${lines} access-log lines, ${exported} spans exported (${dropped ?? 0} dropped) for about ${served} measured requests plus warm-ups`);
    }

    const results = buildResults({ best, rounds, lat, unloadedOtherPct, features, notes, tools, nginxVer, nproc });
    const out = PROFILE
      ? join(root, 'bench', '.work', 'gateway.prof.json')
      : QUICK
        ? join(root, 'bench', '.work', 'gateway.quick.json')
        : only
          ? join(root, 'bench', '.work', 'gateway.partial.json')
          : join(root, 'bench', 'results', 'gateway.json');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
    log(`\nwrote ${out}`);
    if (!PROFILE && !QUICK && !only) writeDoc(results);
    for (const [k, v] of Object.entries(results.targets)) log(`  target ${k}: ${v.met === null ? 'not measured' : v.met ? 'met' : 'MISSED'} (${v.detail})`);
    for (const n of results.notes) log(`  note: ${n}`);

    if (gateway?.profile) {
      const file = readdirSync(dirname(gateway.profile)).includes(gateway.profile.split('/').pop()) ? gateway.profile : undefined;
      if (!file) log('no gateway profile was written');
      else {
        const top = topSelfTime(file, 30);
        log(`\ngateway profile ${file} (${round(top.totalMs, 0)} ms sampled), top self time:`);
        for (const r of top.rows) log(`${round(r.pct, 1).toFixed(1).padStart(5)} %  ${round(r.ms, 0).toString().padStart(7)} ms  ${r.fn}`);
      }
    }
  } finally {
    for (const s of stops.reverse()) await s().catch(() => {});
    removeTempDir(work);
  }
}

function buildResults({ best, rounds, lat, unloadedOtherPct, features, notes, tools, nginxVer, nproc }) {
  const pick = (t, f) => (best[t] ? f(best[t]) : null);
  const r = {
    plinth_rps: pick('plinth', (w) => round(w.rps, 0)),
    fastify_proxy_rps: pick('fastify', (w) => round(w.rps, 0)),
    node_floor_rps: pick('node_floor', (w) => round(w.rps, 0)),
    nginx_rps: pick('nginx', (w) => round(w.rps, 0)),
    direct_rps: pick('direct', (w) => round(w.rps, 0)),
    plinth_added_p50_ms: lat.plinth && lat.direct ? ms(lat.plinth.p50Ms - lat.direct.p50Ms) : null,
  };
  for (const [t, key] of [['plinth', 'plinth'], ['fastify', 'fastify_proxy'], ['node_floor', 'node_floor'], ['nginx', 'nginx'], ['direct', 'direct']]) {
    Object.assign(r, {
      [`${key}_p50_ms`]: pick(t, (w) => ms(w.p50Ms)),
      [`${key}_p99_ms`]: pick(t, (w) => ms(w.p99Ms)),
      [`${key}_cpu_us_per_req`]: pick(t, (w) => (w.proxyCpuUsPerReq === null ? null : round(w.proxyCpuUsPerReq, 1))),
      [`${key}_upstream_cpu_us_per_req`]: pick(t, (w) => round(w.cpuUsPerReq.upstream, 1)),
      [`${key}_proxy_cpu_pct`]: pick(t, (w) => (w.proxyCpuUsPerReq === null ? null : round(w.proxyCpuPct, 0))),
      [`${key}_non_2xx`]: pick(t, (w) => w.errors.status),
      [`${key}_unloaded_p50_ms`]: lat[t] ? ms(lat[t].p50Ms) : null,
      [`${key}_unloaded_p99_ms`]: lat[t] ? ms(lat[t].p99Ms) : null,
    });
  }
  const ratio = (a, b) => (a != null && b != null && b > 0 ? round(a / b, 3) : null);
  Object.assign(r, {
    plinth_vs_fastify_rps: ratio(r.plinth_rps, r.fastify_proxy_rps),
    plinth_vs_nginx_rps: ratio(r.plinth_rps, r.nginx_rps),
    plinth_vs_direct_rps: ratio(r.plinth_rps, r.direct_rps),
    fastify_vs_direct_rps: ratio(r.fastify_proxy_rps, r.direct_rps),
    // What any proxy on node:http + undici could reach against @fastify/http-proxy here, features or not.
    node_floor_vs_fastify_rps: ratio(r.node_floor_rps, r.fastify_proxy_rps),
    plinth_vs_node_floor_rps: ratio(r.plinth_rps, r.node_floor_rps),
    plinth_vs_node_floor_cpu_per_req: ratio(r.plinth_cpu_us_per_req, r.node_floor_cpu_us_per_req),
    nginx_vs_direct_rps: ratio(r.nginx_rps, r.direct_rps),
    plinth_vs_fastify_cpu_per_req: ratio(r.plinth_cpu_us_per_req, r.fastify_proxy_cpu_us_per_req),
    plinth_vs_nginx_cpu_per_req: ratio(r.plinth_cpu_us_per_req, r.nginx_cpu_us_per_req),
    fastify_added_p50_ms: lat.fastify && lat.direct ? ms(lat.fastify.p50Ms - lat.direct.p50Ms) : null,
    nginx_added_p50_ms: lat.nginx && lat.direct ? ms(lat.nginx.p50Ms - lat.direct.p50Ms) : null,
  });
  for (const [t, w] of Object.entries(best)) {
    if (w.errors.status > 0) notes.push(`${t} answered ${w.errors.status} requests with a status other than 2xx/3xx in its best round`);
    const sock = w.errors.connect + w.errors.read + w.errors.write + w.errors.timeout;
    if (sock > 0) notes.push(`${t} had socket errors in its best round: ${JSON.stringify(w.errors)}`);
    if (w.otherCpuPct > BUSY_MACHINE_PCT) {
      notes.push(`other work used ${round(w.otherCpuPct, 0)} % of a core (${round(w.otherOnProxyCorePct, 0)} % on the proxy's core) during ${t}'s best round; its figures are worse than on an idle machine`);
    }
  }
  if (features && features.access_log_lines !== null && features.access_log_lines < features.measured_requests) {
    notes.push(`the access log holds ${features.access_log_lines} lines for at least ${features.measured_requests} requests`);
  }
  if (PROFILE) notes.push('the gateway ran under node --cpu-prof: its figures are lower than without');
  r.targets = {
    rps_vs_fastify:
      r.plinth_vs_fastify_rps === null
        ? { met: null, detail: 'plinth or fastify not measured' }
        : { met: r.plinth_vs_fastify_rps >= TARGET.rpsVsFastify && r.plinth_non_2xx === 0, detail: `plinth / @fastify/http-proxy req/s = ${r.plinth_vs_fastify_rps} ≥ ${TARGET.rpsVsFastify}, ${r.plinth_non_2xx} non-2xx` },
    added_p50:
      r.plinth_added_p50_ms === null
        ? { met: null, detail: 'plinth or direct not measured' }
        : { met: r.plinth_added_p50_ms <= TARGET.addedP50Ms, detail: `unloaded p50 through plinth − direct = ${r.plinth_added_p50_ms} ms ≤ ${TARGET.addedP50Ms} ms` },
  };
  r.features = features ?? null;
  r.rounds = Object.fromEntries(
    Object.entries(rounds).map(([t, ws]) => [
      t,
      ws.map((w) => ({
        rps: round(w.rps, 0), p50_ms: ms(w.p50Ms), p90_ms: ms(w.p90Ms), p99_ms: ms(w.p99Ms), max_ms: ms(w.maxMs), requests: w.requests,
        proxy_cpu_us_per_req: w.proxyCpuUsPerReq === null ? null : round(w.proxyCpuUsPerReq, 1), proxy_cpu_pct: round(w.proxyCpuPct, 0),
        cpu_us_per_req: Object.fromEntries(Object.entries(w.cpuUsPerReq).map(([k, v]) => [k, round(v, 1)])),
        wrk_cpu_pct: round(w.wrkCpuPct, 0), other_cpu_pct: round(w.otherCpuPct, 0), other_on_proxy_core_pct: round(w.otherOnProxyCorePct, 0), errors: w.errors,
      })),
    ]),
  );
  r.unloaded = Object.fromEntries(Object.entries(lat).map(([t, l]) => [t, { n: l.n, p50_ms: ms(l.p50Ms), p90_ms: ms(l.p90Ms), p99_ms: ms(l.p99Ms), statuses: l.statuses }]));
  r.load = { tool: `wrk ${wrkVersion(tools.wrk) ?? ''}`.trim(), threads: 1, connections: LOAD.connections, duration_s: LOAD.durationS, warmup_s: LOAD.warmupS, rounds: LOAD.rounds, path: PATH };
  r.unloaded_other_cpu_pct = round(unloadedOtherPct, 0);
  r.unloaded_method = { connections: 1, warmup: UNLOADED.warmup, rounds: UNLOADED.rounds, per_round: UNLOADED.perRound };
  r.pinning = tools.taskset ? { proxy_core: CORE.proxy, upstream_core: CORE.rest, wrk_core: CORE.rest, control_plane_core: CORE.rest } : null;
  r.machine = machineInfo({ nproc, nginx: nginxVer ?? null });
  r.notes = notes;
  return r;
}

/** Rewrites the generated block of docs/benchmarks.md; the prose around it is kept as written. */
function writeDoc(r) {
  const yes = verdict;
  const v = (x) => (x === null || x === undefined ? '–' : String(x));
  const m = r.machine;
  const row = (label, key, rpsKey) =>
    `| ${label} | ${v(r[rpsKey])} | ${v(r[`${key}_p50_ms`])} | ${v(r[`${key}_p99_ms`])} | ${v(r[`${key}_cpu_us_per_req`])} | ${v(r[`${key}_unloaded_p50_ms`])} | ${v(r[`${key}_unloaded_p99_ms`])} |`;
  const rows = [
    '| target | req/s | p50 (ms) | p99 (ms) | proxy CPU (µs/req) | unloaded p50 (ms) | unloaded p99 (ms) |',
    '|---|---|---|---|---|---|---|',
    row('(a) plinth gateway, all policies on', 'plinth', 'plinth_rps'),
    row('(b) @fastify/http-proxy, pass-through', 'fastify_proxy', 'fastify_proxy_rps'),
    row('(e) bare node:http + undici proxy, nothing else (the Node ceiling)', 'node_floor', 'node_floor_rps'),
    row(`(c) nginx ${m.nginx ?? ''}, 1 worker, pass-through`.replace('  ', ' '), 'nginx', 'nginx_rps'),
    row('(d) direct to the upstream', 'direct', 'direct_rps'),
  ];
  const targets = [
    '| figure | value | target | |',
    '|---|---|---|---|',
    `| req/s plinth / @fastify/http-proxy | ${v(r.plinth_vs_fastify_rps)} | ≥ ${TARGET.rpsVsFastify} | ${yes(r.targets.rps_vs_fastify)} |`,
    `| added unloaded p50 through plinth (ms) | ${v(r.plinth_added_p50_ms)} | ≤ ${TARGET.addedP50Ms} | ${yes(r.targets.added_p50)} |`,
    `| req/s bare node:http + undici proxy / @fastify/http-proxy (the most any Node proxy gains here) | ${v(r.node_floor_vs_fastify_rps)} | | |`,
    `| req/s plinth / bare node:http + undici proxy | ${v(r.plinth_vs_node_floor_rps)} | | |`,
    `| proxy CPU per request plinth / bare node:http + undici proxy | ${v(r.plinth_vs_node_floor_cpu_per_req)} | | |`,
    `| req/s plinth / nginx | ${v(r.plinth_vs_nginx_rps)} | | |`,
    `| req/s plinth / direct | ${v(r.plinth_vs_direct_rps)} | | |`,
    `| proxy CPU per request plinth / @fastify/http-proxy | ${v(r.plinth_vs_fastify_cpu_per_req)} | | |`,
    `| proxy CPU per request plinth / nginx | ${v(r.plinth_vs_nginx_cpu_per_req)} | | |`,
    `| added unloaded p50, @fastify/http-proxy / nginx (ms) | ${v(r.fastify_added_p50_ms)} / ${v(r.nginx_added_p50_ms)} | | |`,
  ];
  const f = r.features;
  log(
    replaceDocBlock(join(root, 'docs', 'benchmarks.md'), 'gateway', [
      `Last run: ${m.date.slice(0, 10)}, ${m.nproc} cores (${m.cpu}), Node ${m.node}, ${r.load.tool}, nginx ${m.nginx ?? 'not run'}; ` +
        `wrk -t1 -c${r.load.connections} -d${r.load.duration_s}s, best of ${r.load.rounds} interleaved rounds; unloaded: ${r.unloaded_method.rounds * r.unloaded_method.per_round} sequential requests on one connection.`,
      '',
      ...rows,
      '',
      ...targets,
      ...(f
        ? ['', `Plinth's features during the run: JWT required (401 without or with a forged token), base lane for the load and gray lane on \`x-lane: gray\` checked before it; ` +
            `${v(f.access_log_lines)} access-log lines written, ${v(f.spans_exported)} sampled spans exported to the server (${v(f.spans_dropped ?? 0)} dropped).`]
        : []),
      ...(r.notes.length ? ['', ...r.notes.map((n) => `Note: ${n}.`)] : []),
    ]),
  );
}

runMain(main);
