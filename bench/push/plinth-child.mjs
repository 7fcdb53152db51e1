// Runs one plinth server (SQLite in the data dir given as argv[2], which the parent makes and removes)
// in its own process, so its CPU and memory can be read from /proc apart from the load generator.
// Prints one JSON line {url, token, pid}, then serves until SIGTERM/SIGINT or until the parent closes
// our stdin (so a killed benchmark leaves no server). To profile, run.mjs starts this file under
// `node --cpu-prof` (BENCH_CPU_PROF=1); the profile is written on the orderly exit below.
import { readFileSync } from 'node:fs';
import { startServer } from '../../packages/server/dist/index.js';

// argv[3], optional: the lifetime of issued tokens in seconds (the gateway benchmark's JWT must not expire
// in the middle of a measurement).
const [dataDir, tokenTtl] = process.argv.slice(2);
if (!dataDir) throw new Error('usage: node plinth-child.mjs DATA_DIR [TOKEN_TTL_SECONDS]');
const server = await startServer({ dataDir, listen: '127.0.0.1:0', logLevel: 'silent', ...(tokenTtl ? { tokenTtlSeconds: Number(tokenTtl) } : {}) });
const token = readFileSync(server.adminTokenFile, 'utf8').trim();
process.stdout.write(`${JSON.stringify({ url: server.url, token, pid: process.pid })}\n`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(0), 5000).unref(); // a close that hangs must not keep the run waiting
  await server.close().catch(() => {});
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop).resume();
