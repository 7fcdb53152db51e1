/**
 * A stand-in for a systemd `.socket` unit in tests: a python3 process that binds a listening socket, never
 * accepts on it, and starts gateways with it on descriptor 3 as systemd does (`LISTEN_FDS`, `LISTEN_FDNAMES`,
 * and `LISTEN_PID` set to the started process's own pid). Connections that arrive while no gateway runs wait
 * in its backlog, as under systemd. Each started process's stdout and stderr go to files in `dir`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { request } from 'undici';

const HOLDER = String.raw`
import json, os, select, socket, subprocess, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(511)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
out = lambda m: (sys.stdout.write(json.dumps(m) + "\n"), sys.stdout.flush())
out({"port": s.getsockname()[1]})
children = {}
while True:
    ready, _, _ = select.select([sys.stdin], [], [], 0.05)
    if ready:
        line = sys.stdin.readline()
        if not line:
            break
        m = json.loads(line)
        env = dict(m["env"], LISTEN_FDS="1", LISTEN_FDNAMES="http")
        o = open(os.path.join(m["dir"], "%s.out" % m["id"]), "w")
        e = open(os.path.join(m["dir"], "%s.err" % m["id"]), "w")
        p = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"] + m["argv"], pass_fds=(3,), env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        children[m["id"]] = p
        out({"id": m["id"], "pid": p.pid})
    for k, p in list(children.items()):
        code = p.poll()
        if code is not None:
            del children[k]
            out({"id": k, "exit": code})
for p in children.values():
    p.kill()
`;

export interface HeldProcess {
  readonly pid: number;
  /** What it wrote so far. */
  output(): { stdout: string; stderr: string };
  /** Its exit code (negative: killed by that signal, as python reports it). */
  readonly exited: Promise<number>;
}

export interface SocketHolder {
  /** The port of the held socket, on 127.0.0.1. */
  readonly port: number;
  /** Starts `argv` with the socket on descriptor 3. */
  start(argv: string[], env: NodeJS.ProcessEnv): Promise<HeldProcess>;
  /** Kills what still runs and closes the socket. */
  close(): Promise<void>;
}

export async function socketHolder(dir: string): Promise<SocketHolder> {
  const py: ChildProcessWithoutNullStreams = spawn('python3', ['-c', HOLDER], { stdio: ['pipe', 'pipe', 'pipe'] });
  let errors = '';
  py.stderr.on('data', (c: Buffer) => (errors += c.toString()));
  const lines = createInterface({ input: py.stdout });
  const waiting = new Map<string, (m: Record<string, unknown>) => void>();
  const exits = new Map<string, (code: number) => void>();
  let portOf: (p: number) => void = () => {};
  const port = new Promise<number>((resolve, reject) => {
    portOf = resolve;
    py.once('exit', (code) => reject(new Error(`the socket holder exited (${code}): ${errors}`)));
  });
  lines.on('line', (line) => {
    const m = JSON.parse(line) as { port?: number; id?: string; pid?: number; exit?: number };
    if (m.port !== undefined) return portOf(m.port);
    if (m.id === undefined) return;
    if (m.exit !== undefined) exits.get(m.id)?.(m.exit);
    else waiting.get(m.id)?.(m);
  });
  let next = 0;
  return {
    port: await port,
    start(argv, env) {
      const id = `p${++next}`;
      const exited = new Promise<number>((r) => exits.set(id, r));
      return new Promise((resolve) => {
        waiting.set(id, (m) => {
          const read = (ext: string): string => {
            try {
              return readFileSync(join(dir, `${id}.${ext}`), 'utf8');
            } catch {
              return '';
            }
          };
          resolve({ pid: m['pid'] as number, output: () => ({ stdout: read('out'), stderr: read('err') }), exited });
        });
        py.stdin.write(JSON.stringify({ id, argv, env, dir }) + '\n');
      });
    },
    close() {
      return new Promise<void>((resolve) => {
        if (py.exitCode !== null || py.signalCode !== null) return resolve();
        py.once('exit', () => resolve());
        py.stdin.end();
      });
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, and the clean exit a drained stop ends with. */
export async function terminated(p: HeldProcess): Promise<void> {
  process.kill(p.pid, 'SIGTERM');
  assert.equal(await p.exited, 0, p.output().stderr);
}

/** Waits until a process the holder started prints `what` on its stdout. */
export async function printed(p: HeldProcess, what: RegExp): Promise<void> {
  for (let i = 0; i < 800 && !what.test(p.output().stdout); i++) await sleep(25);
  assert.match(p.output().stdout, what, p.output().stderr);
}

export interface HeldLoad {
  /** Resolves once `n` more requests were answered 2xx. */
  more(n: number): Promise<void>;
  /** `stop`s what serves, checks that nothing answers for half a second, `start`s the next, and waits for answers. */
  acrossGap(stop: () => Promise<void>, start: () => Promise<void>): Promise<void>;
  /** Ends the load; the failures seen. */
  stop(): Promise<string[]>;
}

/**
 * Four clients sending requests (`url(client, i)`, with `headers`) until stopped, each on a new connection, so
 * that every one is accepted by whichever process serves the held socket then; 2xx answers are counted, anything
 * else is a failure.
 */
export function heldLoad(url: (client: number, i: number) => string, headers: Record<string, string> = {}): HeldLoad {
  const failures: string[] = [];
  let served = 0;
  let loading = true;
  const clients = Promise.all(
    Array.from({ length: 4 }, async (_, k) => {
      for (let i = 0; loading; i++) {
        try {
          const r = await request(url(k, i), { reset: true, headers });
          const text = await r.body.text();
          if (r.statusCode >= 200 && r.statusCode < 300) served++;
          else failures.push(`${r.statusCode} ${text}`);
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    }),
  );
  const more = async (n: number): Promise<void> => {
    const from = served;
    for (let i = 0; i < 1000 && served < from + n; i++) await sleep(10);
    assert.ok(served >= from + n, `only ${served - from} requests served`);
  };
  return {
    more,
    async acrossGap(stop, start) {
      await stop();
      const atGap = served;
      await sleep(500);
      assert.equal(served, atGap, 'nothing answers while nothing serves');
      await start();
      await more(20);
    },
    async stop() {
      loading = false;
      await clients;
      return failures;
    },
  };
}
