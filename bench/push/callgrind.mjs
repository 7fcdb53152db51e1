// User-space instructions per request of a Node.js server's main thread, counted by valgrind's callgrind:
// a figure that other work on a shared machine does not move (timed rounds drift by 1.5–2× within an hour
// on a small VM). Only the main thread: V8's background compiler and GC helper threads, counted in, made
// windows of the same server differ by up to 2.5×. After `warm` requests (V8 has tiered the hot code up by
// then) the counters are zeroed and `measure` requests are counted, in WINDOWS windows.
//
// What it leaves out: the kernel's work (socket reads and writes), and cache misses and branch
// mispredictions, which time sees and instruction counts do not. It is another view of a timed target, not
// a replacement for it.
import { execFile, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'undici';
import { spawnReady, stopChild } from './lib.mjs';

/** Whether valgrind's callgrind and its control tool are installed. */
export function callgrindAvailable() {
  const v = spawnSync('valgrind', ['--version'], { stdio: 'ignore' });
  const c = spawnSync('callgrind_control', ['--version'], { stdio: 'ignore' });
  return v.status === 0 && c.status === 0;
}

const control = (pid, flag) =>
  new Promise((ok, fail) => execFile('callgrind_control', [flag, String(pid)], (e) => (e ? fail(e) : ok())));

async function closedLoop(pool, n, concurrency, request, { warmUp = false } = {}) {
  let sent = 0;
  let failed = 0;
  let lastStatus = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (sent < n) {
        sent++;
        const res = await pool.request(request);
        await res.body.dump({ limit: 1 << 20 });
        if (res.statusCode !== 200) {
          failed++;
          lastStatus = res.statusCode;
        }
      }
    }),
  );
  // Under callgrind a cold process runs some 50× slower: a warm-up request may outlast a proxy's deadline.
  if (failed > (warmUp ? n / 100 : 0)) throw new Error(`${failed} of ${n} requests failed (last status ${lastStatus})`);
}

/**
 * The counted requests are split in windows, and the median window is the figure: V8 does some work on
 * timers (the memory reducer's full GC, code flushing), and under callgrind a run lasts minutes, so one such
 * event can land in a window and add a few hundred million instructions to it.
 */
const WINDOWS = 3;

/**
 * Instructions per request of one server: `nodeArgs` (a script and its arguments) run under callgrind; it
 * prints a JSON line with its `port` or `url` once serving. `request` is undici's request options
 * (method, path, headers). Returns { median, windows }.
 */
export async function countUnderCallgrind({ label, nodeArgs, request, warm, measure, concurrency, dir, env }) {
  const prefix = join(dir, `callgrind.${label}`);
  const saved = {};
  for (const [k, v] of Object.entries(env ?? {})) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  let started;
  try {
    started = await spawnReady(
      'valgrind',
      ['--tool=callgrind', '--separate-threads=yes', `--callgrind-out-file=${prefix}.%p`, '--dump-instr=no', '--compress-strings=no', process.execPath, ...nodeArgs],
      { name: `${label} under callgrind`, timeoutMs: 180_000 },
    );
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  const { child, info } = started;
  const pool = new Pool(info.url ?? `http://127.0.0.1:${info.port}`, { connections: concurrency, keepAliveTimeout: 600_000 });
  const each = Math.ceil(measure / WINDOWS);
  try {
    await closedLoop(pool, warm, concurrency, request, { warmUp: true });
    await control(child.pid, '-z');
    // Each dump zeroes the counters: one part per window.
    for (let w = 0; w < WINDOWS; w++) {
      await closedLoop(pool, each, concurrency, request);
      await control(child.pid, '-d');
    }
  } finally {
    await pool.close();
    await stopChild(child, 60_000);
  }
  const perRequest = [];
  for (let part = 1; part <= WINDOWS; part++) {
    // The main thread's (-01): V8's compiler and GC helper threads run when they run, not per request.
    const file = readdirSync(dir).find((f) => f.startsWith(`callgrind.${label}.`) && f.endsWith(`.${part}-01`));
    if (file === undefined) throw new Error(`callgrind wrote no dump ${part} for ${label}`);
    const m = /^summary: (\d+)/m.exec(readFileSync(join(dir, file), 'utf8'));
    if (m === null) throw new Error(`no summary line in ${file}`);
    perRequest.push(Number(m[1]) / each);
  }
  return { median: [...perRequest].sort((a, b) => a - b)[WINDOWS >> 1], windows: perRequest };
}
