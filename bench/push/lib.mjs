// Shared helpers for the push/lease benchmark: child-process lifetime, /proc readings, statistics.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// ---- children: every process we start is tracked so that any way out of the run kills it ----
const children = new Set();

/** Spawns a tracked child; resolves with the first stdout line parsed as JSON (its "ready" report). */
export function spawnReady(cmd, args, { name, timeoutMs = 30_000 }) {
  // stdin stays a pipe: the plinth launcher and the etcd wrapper exit when it closes, so even a
  // SIGKILLed run leaves no server running (only its temp dir).
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${name} did not start within ${timeoutMs} ms\n${stderr}`)), timeoutMs);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      fail(new Error(`${name} exited early (${code ?? sig})\n${stderr}`));
    });
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        ok({ child, info: JSON.parse(line) });
      } catch {
        fail(new Error(`${name} printed ${JSON.stringify(line)} instead of a JSON line\n${stderr}`));
      }
    });
  });
}

/**
 * Asks a child to stop by closing its stdin (an orderly exit, so a --cpu-prof child writes its profile
 * and the etcd wrapper stops etcd), and kills it if it is still there after the grace period.
 */
export async function stopChild(child, graceMs = 6000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((ok) => child.once('exit', ok));
  child.stdin.end();
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** Pids that are not our direct children (etcd under its wrapper) but must die with us too. */
const grandchildren = new Set();
export function killPidOnExit(pid) {
  grandchildren.add(pid);
  return () => grandchildren.delete(pid);
}

/** Temp data dirs (plinth, etcd) made here, so that they go even when their process was killed. */
const tempDirs = new Set();
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}
export function removeTempDir(dir) {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Last resort on any exit path: synchronous, so it also runs from process.on('exit'). */
export function cleanUp() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  children.clear();
  for (const pid of grandchildren) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  grandchildren.clear();
  for (const dir of tempDirs) removeTempDir(dir);
}

// ---- /proc readings of a child ----
/** VmRSS and VmHWM (peak) in MiB. */
export function memoryMiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime and stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat; the name may hold spaces). */
export function cpuTimes(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK };
}

/**
 * CPU seconds the whole machine spent busy (first line of /proc/stat). Minus the processes we measure,
 * it shows how much else ran meanwhile: other work on a 2-core machine inflates every latency here.
 */
export function machineBusySeconds() {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq + steal) / CLK_TCK;
}

export function cpuSeconds(pid) {
  const t = cpuTimes(pid);
  return t.user + t.system;
}

// ---- statistics ----
/** Nearest-rank percentile over a sorted Float64Array. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function summarize(values) {
  const sorted = Float64Array.from(values).sort();
  return { n: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? NaN };
}

export const round = (x, digits = 2) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : null);
