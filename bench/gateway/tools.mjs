// What the benchmark needs from the system: wrk, nginx and taskset. As root, a missing wrk or nginx is
// installed with apt-get (nginx-light, else nginx); otherwise that peer is skipped with the reason.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const which = (cmd) => {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
};

function aptInstall(packages, log) {
  if (process.getuid?.() !== 0) return 'not root, so not installed with apt-get';
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const pkg of packages) {
    log(`installing ${pkg} with apt-get…`);
    let r = spawnSync('apt-get', ['install', '-y', pkg], { stdio: 'inherit', env });
    if (r.status !== 0) {
      spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
      r = spawnSync('apt-get', ['install', '-y', pkg], { stdio: 'inherit', env });
    }
    if (r.status === 0) return undefined;
  }
  return `apt-get install -y ${packages.join(' (or ')}${packages.length > 1 ? ')' : ''} failed`;
}

/** Paths of the tools, or for each missing one why. */
export function findTools(log) {
  const out = { wrk: undefined, nginx: undefined, taskset: which('taskset'), missing: {} };
  out.wrk = which('wrk') ?? (existsSync('/usr/bin/wrk') ? '/usr/bin/wrk' : undefined);
  if (!out.wrk) {
    const why = aptInstall(['wrk'], log);
    out.wrk = which('wrk');
    if (!out.wrk) out.missing.wrk = `wrk not found (${why ?? 'not on PATH after install'})`;
  }
  out.nginx = which('nginx') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : undefined);
  if (!out.nginx) {
    const why = aptInstall(['nginx-light', 'nginx'], log);
    out.nginx = which('nginx') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : undefined);
    if (!out.nginx) out.missing.nginx = `nginx not found (${why ?? 'not on PATH after install'})`;
  }
  return out;
}

export function nginxVersion(nginx) {
  const r = spawnSync(nginx, ['-v'], { encoding: 'utf8' });
  return /nginx\/(\S+)/.exec(`${r.stderr}${r.stdout}`)?.[1];
}

export function wrkVersion(wrk) {
  const r = spawnSync(wrk, ['--version'], { encoding: 'utf8' });
  return /wrk (\S+)/.exec(`${r.stderr}${r.stdout}`)?.[1];
}

/** The command line that runs `argv` on `core` (or unpinned without taskset). */
export function pinned(taskset, core, argv) {
  return taskset ? [taskset, ['-c', String(core), ...argv]] : [argv[0], argv.slice(1)];
}

/** Pins the calling process (all its threads) to `core`; false without taskset. */
export function pinSelf(taskset, core) {
  if (!taskset) return false;
  execFileSync(taskset, ['-a', '-p', '-c', String(core), String(process.pid)], { stdio: 'ignore' });
  return true;
}
