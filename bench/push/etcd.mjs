// Starts a single-member etcd on loopback for the comparison, or says why it can't.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { killPidOnExit, removeTempDir, sleep, spawnReady, stopChild, tempDir } from './lib.mjs';

const ETCD = '/usr/bin/etcd';
const CLIENT = 'http://127.0.0.1:23790';
const PEER = 'http://127.0.0.1:23800';

const portInUse = (port) =>
  new Promise((ok) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), ok(true)));
    s.once('error', () => ok(false));
  });

/** Resolves to { endpoint, pid, version, stop } or { skipped: reason }. */
export async function startEtcd() {
  if (!existsSync(ETCD)) {
    if (process.getuid?.() !== 0) return { skipped: `${ETCD} is missing and this is not root (apt-get install etcd-server)` };
    console.log('installing etcd-server (apt-get)…');
    try {
      execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore', timeout: 120_000 });
      execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'etcd-server'], { stdio: 'ignore', timeout: 120_000 });
    } catch (e) {
      return { skipped: `apt-get install etcd-server failed: ${e.message}` };
    }
  }
  for (const port of [23790, 23800]) {
    if (await portInUse(port)) return { skipped: `127.0.0.1:${port} is already in use (a leftover etcd?)` };
  }
  const version = /etcd Version: (\S+)/.exec(execFileSync(ETCD, ['--version'], { encoding: 'utf8' }))?.[1] ?? '?';
  const dataDir = tempDir('etcd-bench-');
  const args = [
    '--name', 'bench', '--data-dir', dataDir,
    '--listen-client-urls', CLIENT, '--advertise-client-urls', CLIENT,
    '--listen-peer-urls', PEER, '--initial-advertise-peer-urls', PEER,
    '--initial-cluster', `bench=${PEER}`, '--initial-cluster-state', 'new',
    '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'error',
  ];
  // etcd has no "die with parent": this wrapper kills it as soon as our end of its stdin closes,
  // which also happens when the benchmark itself is killed.
  const wrapper = 'etcd="$1"; shift; "$etcd" "$@" & p=$!; echo "{\\"pid\\":$p}"; read _; kill $p 2>/dev/null; wait $p';
  const { child, info } = await spawnReady('/bin/sh', ['-c', wrapper, 'sh', ETCD, ...args], { name: 'etcd' });
  const untrack = killPidOnExit(info.pid);
  const stop = async () => {
    await stopChild(child);
    try {
      process.kill(info.pid, 'SIGKILL'); // only if the wrapper had to be killed before it could stop etcd
    } catch {
      /* already gone, as expected */
    }
    untrack();
    removeTempDir(dataDir);
  };
  for (const deadline = Date.now() + 20_000; ; await sleep(100)) {
    try {
      const res = await fetch(`${CLIENT}/health`);
      if (res.ok && (await res.json()).health === 'true') break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error('etcd did not become healthy within 20 s');
    }
  }
  return { endpoint: CLIENT, pid: info.pid, version, stop };
}
