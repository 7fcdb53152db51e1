// Instructions per request on each proxy's main thread, under valgrind's callgrind: the view of the gateway's
// cost that other work on the machine does not move, for comparing builds and finding where a change helps
// (the timed rounds of run.mjs spread 1.5–2× within an hour here). Each proxy forwards the benchmark's
// request (GET /api/items/42 with the JWT) to the same upstream, 16 in flight.
//   node bench/gateway/instructions.mjs [plinth] [fastify] [node_floor]
// BENCH_QUICK=1 counts fewer requests. Prints the figures and writes bench/.work/gateway.instructions.json.
// BENCH_PLINTH_OFF=access_log,tracing turns those gateway features off, as in run.mjs.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callgrindAvailable, countUnderCallgrind } from '../push/callgrind.mjs';
import { cleanUp, removeTempDir, round, spawnReady, stopChild, tempDir } from '../push/lib.mjs';
import { applyPolicy, NAMESPACE, PATH } from './policy.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const env = process.env;
const QUICK = env.BENCH_QUICK === '1';
const COUNT = { warm: QUICK ? 3000 : 12_000, measure: QUICK ? 1200 : 3000, concurrency: 16 };
const ALL = ['plinth', 'fastify', 'node_floor'];
const targets = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ALL;
for (const t of targets) if (!ALL.includes(t)) throw new Error(`unknown target ${t}; one of ${ALL.join(', ')}`);
if (!callgrindAvailable()) throw new Error('valgrind (callgrind) is not installed: apt-get install valgrind');

process.on('exit', cleanUp);
const log = (...a) => console.log(...a);
const work = tempDir('plinth-bench-gateway-ir-');
const stops = [];
try {
  const up = await spawnReady(process.execPath, [join(here, 'upstream-child.mjs')], { name: 'upstream' });
  stops.push(() => stopChild(up.child));
  const upstreamUrl = `http://127.0.0.1:${up.info.port}`;
  const jobs = [];
  let headers = {};
  if (targets.includes('plinth')) {
    const cp = await spawnReady(process.execPath, [join(here, '..', 'push', 'plinth-child.mjs'), join(work, 'cp'), '3600'], { name: 'plinth server' });
    stops.push(() => stopChild(cp.child));
    const { jwt } = await applyPolicy(cp.info, { upstreamAddress: `127.0.0.1:${up.info.port}`, grayAddress: `127.0.0.1:${up.info.grayPort}` });
    headers = { authorization: `Bearer ${jwt}` };
    const off = new Set((env.BENCH_PLINTH_OFF ?? '').split(',').filter(Boolean));
    const cfg = { cpUrl: cp.info.url, token: cp.info.token, namespace: NAMESPACE, accessLog: off.has('access_log') ? null : join(work, 'access.log'), ...(off.has('tracing') ? { tracing: false } : {}) };
    jobs.push({ label: 'plinth', nodeArgs: [join(here, 'plinth-child.mjs')], env: { BENCH_GATEWAY_CONFIG: JSON.stringify(cfg) } });
  }
  if (targets.includes('fastify')) jobs.push({ label: 'fastify', nodeArgs: [join(here, 'fastify-child.mjs'), upstreamUrl] });
  if (targets.includes('node_floor')) jobs.push({ label: 'node_floor', nodeArgs: [join(here, 'floor-child.mjs'), upstreamUrl] });

  log(`instructions: ${jobs.map((j) => j.label).join(', ')} under callgrind, ${COUNT.warm} requests of warm-up, then ${COUNT.measure} counted…`);
  const out = {};
  // Two at a time: callgrind runs a process on one thread, and the machine has two cores.
  const queue = [...jobs];
  await Promise.all(
    [0, 1].map(async () => {
      for (let j = queue.shift(); j !== undefined; j = queue.shift()) {
        const t0 = Date.now();
        const r = await countUnderCallgrind({ ...COUNT, ...j, dir: work, request: { method: 'GET', path: PATH, headers } });
        out[j.label] = { per_request: Math.round(r.median), windows: r.windows.map(Math.round) };
        log(`  ${j.label.padEnd(10)} ${Math.round(r.median)} instructions/req (windows ${r.windows.map(Math.round).join(', ')}; ${Math.round((Date.now() - t0) / 1000)} s)`);
      }
    }),
  );
  const ratios = {};
  if (out.plinth && out.fastify) ratios.plinth_vs_fastify = round(out.plinth.per_request / out.fastify.per_request, 3);
  if (out.plinth && out.node_floor) ratios.plinth_vs_node_floor = round(out.plinth.per_request / out.node_floor.per_request, 3);
  if (out.fastify && out.node_floor) ratios.fastify_vs_node_floor = round(out.fastify.per_request / out.node_floor.per_request, 3);
  for (const [k, v] of Object.entries(ratios)) log(`  ${k} ${v}`);
  const file = join(root, 'bench', '.work', 'gateway.instructions.json');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, ...COUNT, plinth_off: env.BENCH_PLINTH_OFF ?? '', targets: out, ratios }, null, 2)}\n`);
  log(`wrote ${file}`);
} finally {
  for (const s of stops.reverse()) await s();
  removeTempDir(work);
}
