// A separate OS process spending from a ClusterQuota, spawned by cluster.test.ts (two at once on one key).
// Prints `ready` once connected, waits for a line on stdin, hammers for DURATION_MS (or MAX_CALLS calls),
// then prints its counts as one JSON line.
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { ClusterQuota } from './cluster.js';

const env = (name: string): string => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

const redis = new Redis(env('REDIS_URL'), { maxRetriesPerRequest: 1 });
redis.on('error', () => {});
const quota = new ClusterQuota({
  redis,
  key: env('KEY'),
  rate: Number(env('RATE')),
  burst: Number(env('BURST')),
  // Generous, and refusing on trouble: a fallback must never admit here, or the count proves nothing.
  redisTimeoutMs: 2_000,
  fallback: 'reject',
});
await redis.ping();
process.stdout.write('ready\n');

const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once('line', resolve));
lines.close();

const counts = { allowed: 0, refused: 0, fallback: 0 };
const end = performance.now() + Number(env('DURATION_MS'));
let calls = Number(env('MAX_CALLS'));
async function worker(): Promise<void> {
  while (performance.now() < end && calls-- > 0) {
    const d = await quota.acquire();
    if (d.source !== 'redis') counts.fallback++;
    else if (d.allowed) counts.allowed++;
    else counts.refused++;
  }
}
await Promise.all([worker(), worker(), worker(), worker()]);
process.stdout.write(`${JSON.stringify(counts)}\n`);
await redis.quit();
