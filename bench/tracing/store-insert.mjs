// Direct loop on the embedded store's insert, without HTTP or decoding: batches of realistic spans (decoded
// from the ingest benchmark's own OTLP bodies) with fresh random trace and span ids, into a file that grows
// as it goes. Prints spans per CPU second per slice, so that the cost of a growing index shows.
// Run: npx tsc -b packages/server && node bench/tracing/store-insert.mjs [totalSpans] [batchSize]
// BENCH_STORE_TIMES=fixed: every batch keeps the template's start times, as bench/tracing/ingest.mjs sends them.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeProtobufTraces } from '../../packages/server/dist/apm/otlp/decode.js';
import { SqliteSpanStore } from '../../packages/server/dist/apm/store/sqlite.js';
import { buildBatch } from './ingest.mjs';

const total = Number(process.argv[2] ?? 300_000);
const size = Number(process.argv[3] ?? 2000);
const slice = Math.max(size, Math.floor(total / 6));
const template = decodeProtobufTraces(buildBatch(size).body).spans;

// Time moves on as it does under a steady 30k spans/s: a batch of 2000 starts ~70 ms after the previous one.
let batchNo = 0;
function fresh() {
  const shift = process.env.BENCH_STORE_TIMES === 'fixed' ? 0 : (batchNo++ * size) / 30;
  const ids = randomBytes(size * 8 + (size / 10) * 16);
  let o = 0;
  const traces = new Map();
  return template.map((s) => {
    let t = traces.get(s.traceId);
    if (!t) traces.set(s.traceId, (t = ids.toString('hex', o, (o += 16))));
    return { ...s, startMs: s.startMs + shift, traceId: t, spanId: ids.toString('hex', o, (o += 8)) };
  });
}

const dir = mkdtempSync(join(tmpdir(), 'plinth-store-bench-'));
const store = new SqliteSpanStore(join(dir, 'apm.db'));
await store.init();
try {
  let done = 0;
  let cpuS = 0;
  const started = performance.now();
  while (done < total) {
    const batches = Array.from({ length: Math.ceil(slice / size) }, fresh);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (const b of batches) await store.insert(b);
    const c = process.cpuUsage(c0);
    const wall = (performance.now() - t0) / 1000;
    const n = batches.length * size;
    done += n;
    cpuS += (c.user + c.system) / 1e6;
    console.log(`${String(done).padStart(8)} rows: ${Math.round(n / ((c.user + c.system) / 1e6)).toLocaleString('en').padStart(7)} spans/CPU-s, ${Math.round(n / wall).toLocaleString('en').padStart(7)} spans/s wall`);
  }
  console.log(`all: ${Math.round(done / cpuS).toLocaleString('en')} spans/CPU-s; ${Math.round(done / ((performance.now() - started) / 1000)).toLocaleString('en')} spans/s wall incl. id generation`);
  console.log(`file ${(statSync(join(dir, 'apm.db')).size / 2 ** 20).toFixed(0)} MiB for ${done} spans`);
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
