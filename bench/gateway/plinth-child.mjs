// The plinth gateway under test, in its own process (pinned by the parent), against a real control plane:
// Routes with JWT auth, FaultTolerance and TrafficPolicy arrive by its watch, spans (1 % sampled) go to the
// server's OTLP ingest, JSON access-log lines to a file. $BENCH_GATEWAY_CONFIG: JSON {cpUrl, token, namespace,
// accessLog} (in the environment, so the token is not on a command line).
// Prints {url, adminUrl, pid} once serving; on stdin close it drains and exits (so --cpu-prof writes).
import { Registry } from 'prom-client';
import { startGateway } from '../../packages/gateway/dist/index.js';
import { createTracing } from '../../packages/sdk/dist/tracing/index.js';

const cfg = JSON.parse(process.env.BENCH_GATEWAY_CONFIG ?? '{}');
const registry = new Registry();
// accessLog null or tracing false turn that feature off, for measuring what each costs (not in the benchmark).
const tracing = cfg.tracing === false ? undefined : createTracing({
  service: 'gateway',
  namespace: cfg.namespace,
  sampleRatio: 0.01,
  exporter: { url: cfg.cpUrl, token: cfg.token, registry },
});
const warnings = [];
const gw = await startGateway({
  namespace: cfg.namespace,
  controlPlane: { url: cfg.cpUrl, token: cfg.token },
  listen: '127.0.0.1:0',
  adminListen: '127.0.0.1:0',
  accessLog: cfg.accessLog === null ? false : { destination: cfg.accessLog },
  metrics: registry,
  ...(tracing ? { tracing } : {}),
  logger: { warn: (m, f) => warnings.push(`${m}${f ? ` ${JSON.stringify(f)}` : ''}`), debug: () => {} },
});
process.stdout.write(`${JSON.stringify({ url: gw.url, adminUrl: gw.adminUrl, pid: process.pid })}\n`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(0), 8000).unref();
  await gw.close().catch(() => {});
  await tracing?.shutdown(2000).catch(() => {});
  if (warnings.length > 0) process.stderr.write(`gateway warnings:\n${warnings.slice(0, 20).join('\n')}\n`);
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop).resume();
