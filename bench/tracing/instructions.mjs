// User-space instructions per request of each service variant on its main thread, counted by valgrind's
// callgrind: a figure that other work on a shared machine does not move (the timed rounds of overhead.mjs
// drift by 1.5–2× within an hour on a small VM). Only the main thread: V8's background compiler and GC
// helper threads, counted in, made windows of the same variant differ by up to 2.5×. Each variant runs under callgrind;
// after `warm` requests (V8 has tiered the hot code up by then: counts still fall until about 8,000) the
// counters are zeroed and `measure` requests are counted, in three windows (see WINDOWS).
//
// What it leaves out: the kernel's work (socket reads and writes, the same for every variant, so losses
// computed from instructions are larger than from time), and cache misses and branch mispredictions,
// which time sees and instruction counts do not. It is the third view of the same target, not a
// replacement for the timed one.
import { execFile, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'undici';
import { spawnReady, stopChild } from '../push/lib.mjs';

/** Whether valgrind's callgrind and its control tool are installed. */
export function callgrindAvailable() {
  const v = spawnSync('valgrind', ['--version'], { stdio: 'ignore' });
  const c = spawnSync('callgrind_control', ['--version'], { stdio: 'ignore' });
  return v.status === 0 && c.status === 0;
}

const control = (pid, flag) =>
  new Promise((ok, fail) => execFile('callgrind_control', [flag, String(pid)], (e) => (e ? fail(e) : ok())));

async function closedLoop(pool, n, concurrency) {
  let sent = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (sent < n) {
        sent++;
        const res = await pool.request({ method: 'GET', path: '/hello' });
        await res.body.dump({ limit: 1 << 20 });
        if (res.statusCode !== 200) failed++;
      }
    }),
  );
  if (failed > 0) throw new Error(`${failed} of ${n} requests failed`);
}

/**
 * The counted requests are split in windows, and the median window is the figure: V8 does some work on
 * timers (the memory reducer's full GC, code flushing), and under callgrind a run lasts minutes, so one such
 * event can land in a window and add a few hundred million instructions to it.
 */
const WINDOWS = 3;

/** Instructions per request of one variant (a service-child.mjs variant exporting to `sinkUrl`). */
async function countOne(script, variant, sinkUrl, { warm, measure, concurrency, dir }) {
  const prefix = join(dir, `callgrind.${variant}`);
  const { child, info } = await spawnReady(
    'valgrind',
    ['--tool=callgrind', '--separate-threads=yes', `--callgrind-out-file=${prefix}.%p`, '--dump-instr=no', '--compress-strings=no', process.execPath, script, variant, sinkUrl],
    { name: `service ${variant} under callgrind`, timeoutMs: 120_000 },
  );
  const pool = new Pool(`http://127.0.0.1:${info.port}`, { connections: concurrency, keepAliveTimeout: 600_000 });
  const each = Math.ceil(measure / WINDOWS);
  try {
    await closedLoop(pool, warm, concurrency);
    await control(child.pid, '-z');
    // Each dump zeroes the counters: one part per window.
    for (let w = 0; w < WINDOWS; w++) {
      await closedLoop(pool, each, concurrency);
      await control(child.pid, '-d');
    }
  } finally {
    await pool.close();
    await stopChild(child, 60_000);
  }
  const perRequest = [];
  for (let part = 1; part <= WINDOWS; part++) {
    // The main thread's (-01): V8's compiler and GC helper threads run when they run, not per request.
    const file = readdirSync(dir).find((f) => f.startsWith(`callgrind.${variant}.`) && f.endsWith(`.${part}-01`));
    if (file === undefined) throw new Error(`callgrind wrote no dump ${part} for ${variant}`);
    const m = /^summary: (\d+)/m.exec(readFileSync(join(dir, file), 'utf8'));
    if (m === null) throw new Error(`no summary line in ${file}`);
    perRequest.push(Number(m[1]) / each);
  }
  return { median: perRequest.sort((a, b) => a - b)[WINDOWS >> 1], windows: perRequest };
}

/**
 * Instructions per request for each of `variants`, `parallel` at a time (one per core: callgrind runs a
 * process on one thread). Returns { variant: instructions per request }.
 */
export async function instructionCounts(script, variants, sinkUrl, o) {
  const out = {};
  const queue = [...variants];
  await Promise.all(
    Array.from({ length: Math.max(1, o.parallel) }, async () => {
      for (let v = queue.shift(); v !== undefined; v = queue.shift()) {
        const t0 = Date.now();
        const r = await countOne(script, v, sinkUrl, o);
        out[v] = r.median;
        o.log?.(`    ${v.padEnd(8)} ${Math.round(r.median)} instructions/req (windows ${r.windows.map(Math.round).join(', ')}; ${Math.round((Date.now() - t0) / 1000)} s)`);
      }
    }),
  );
  return out;
}
