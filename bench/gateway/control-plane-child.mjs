// A real plinth server for the gateway to watch (Routes, rules, instances), verify JWTs against and send
// its sampled spans to. SQLite in the data dir given as argv[2]. Prints {url, token, pid}; exits when its
// stdin closes or on SIGTERM/SIGINT.
import { readFileSync } from 'node:fs';
import { startServer } from '../../packages/server/dist/index.js';

const dataDir = process.argv[2];
if (!dataDir) throw new Error('usage: node control-plane-child.mjs DATA_DIR');
// Tokens outlive the run, so no JWT expires in the middle of a measurement.
const server = await startServer({ dataDir, listen: '127.0.0.1:0', logLevel: 'silent', tokenTtlSeconds: 3600 });
const token = readFileSync(server.adminTokenFile, 'utf8').trim();
process.stdout.write(`${JSON.stringify({ url: server.url, token, pid: process.pid })}\n`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(0), 5000).unref();
  await server.close().catch(() => {});
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop).resume();
