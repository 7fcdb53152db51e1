// Peer (c): nginx from the Debian package, one worker, plain pass-through to the upstream over 64 kept-alive
// connections, access log off, in a temp prefix dir on a free port. Its master and worker are both
// tracked so that any way out of the run kills them.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { killPidOnExit, sleep, tempDir } from '../push/lib.mjs';
import { pinned } from './tools.mjs';

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Pids whose parent is `ppid` (nginx's worker under its master). */
function childPids(ppid) {
  const out = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) out.push(Number(d));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

export function nginxConfig(prefix, port, upstreamPort) {
  const p = (name) => join(prefix, name);
  return `daemon off;
master_process on;
worker_processes 1;
pid ${p('nginx.pid')};
error_log ${p('error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${p('client_body')};
  proxy_temp_path ${p('proxy')};
  fastcgi_temp_path ${p('fastcgi')};
  uwsgi_temp_path ${p('uwsgi')};
  scgi_temp_path ${p('scgi')};
  # nginx closes a client connection after 1000 requests by default; the node servers never do.
  keepalive_requests 1000000;
  keepalive_timeout 65s;
  upstream backend {
    server 127.0.0.1:${upstreamPort};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

export async function startNginx({ nginx, taskset, core, upstreamPort }) {
  const prefix = tempDir('plinth-bench-nginx-');
  // Workers run as nobody when started as root; they must be able to reach their temp dirs.
  chmodSync(prefix, 0o755);
  const port = await freePort();
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(conf, nginxConfig(prefix, port, upstreamPort));
  const [cmd, args] = pinned(taskset, core, [nginx, '-p', prefix, '-e', join(prefix, 'error.log'), '-c', conf]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const forget = killPidOnExit(child.pid);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  let exited = false;
  child.once('exit', () => (exited = true));
  const errorLog = () => (existsSync(join(prefix, 'error.log')) ? readFileSync(join(prefix, 'error.log'), 'utf8').slice(-2000) : '');
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) throw new Error(`nginx exited at start: ${stderr}${errorLog()}`);
    try {
      const r = await request(`${url}/`, { reset: true });
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`nginx did not answer within 10 s: ${stderr}${errorLog()}`);
    await sleep(50);
  }
  const workers = childPids(child.pid);
  const forgetWorkers = workers.map((pid) => killPidOnExit(pid));
  return {
    url,
    pids: [child.pid, ...workers],
    async stop() {
      if (!exited) {
        const gone = new Promise((ok) => child.once('exit', ok));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await gone;
        clearTimeout(t);
      }
      // The worker normally exits with its master; a straggler is killed only if the pid is still nginx's.
      for (const pid of workers) {
        try {
          if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'nginx') process.kill(pid, 'SIGKILL');
        } catch {
          /* exited with its master */
        }
      }
      forget();
      for (const f of forgetWorkers) f();
    },
  };
}
