/**
 * Cost of the hooks per request (informative; `node packages/sdk/dist/tracing/tracing.bench.js`).
 * The sink discards, so this is the request-path cost; `encode` is the export cost per span, paid off the
 * request path but on the same thread. Each case runs in its own process: a service runs one configuration,
 * and sharing a process would make every call site polymorphic in a way no service sees.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { context } from '@opentelemetry/api';
import { parseTraceparent, type TraceContext } from '../balancing/traceparent.js';
import { createTracing, startClientSpan, startServerSpan, type Tracing, type TracingOptions } from './hooks.js';
import { tracesJson } from './otlp-json.js';
import type { PlinthSpan } from './span.js';

const N = 200_000;
const ROUNDS = 5;
const results = new Map<string, number>();
const incoming = parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') as TraceContext;
const unsampled: TraceContext = { ...incoming, flags: 0 };

function tracing(o: Partial<TracingOptions>, keep?: PlinthSpan[]): Tracing {
  const t = createTracing({ service: 'bench', namespace: 'bench', useGlobalProvider: 'never', ...o });
  t.provider.sink = { enqueue: (s) => void (keep && keep.length < 512 && keep.push(s)) };
  return t;
}

/** The best of ROUNDS runs: the machine is shared, and the minimum is the least disturbed. */
function bench(name: string, fn: () => void): void {
  for (let i = 0; i < 20_000; i++) fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) fn();
  const ns = Number(process.hrtime.bigint() - t0) / N;
  results.set(name, Math.min(results.get(name) ?? Number.POSITIVE_INFINITY, ns));
}

const noop = () => 0;
const cases: [string, Tracing, TraceContext | undefined][] = [
  ['ratio 1', tracing({ sampleRatio: 1 }), undefined],
  ['ratio 0.01 (deferred, errors kept)', tracing({ sampleRatio: 0.01 }), undefined],
  ['ratio 0.01, nothing kept on demand', tracing({ sampleRatio: 0.01, keepErrors: false }), undefined],
  ['unsampled parent, nothing kept', tracing({ keepErrors: false }), unsampled],
  ['propagation mode', tracing({ mode: 'propagation' }), incoming],
];
const only = process.argv[2];
if (only === undefined) {
  for (let i = 0; i <= cases.length; i++) process.stdout.write(execFileSync(process.execPath, [fileURLToPath(import.meta.url), String(i)]));
  process.exit(0);
}
for (let round = 0; round < ROUNDS; round++) {
  for (const [label, t, parent] of cases.filter((_, i) => String(i) === only)) {
    bench(`server start+end, ${label}`, () => {
      startServerSpan(t, { method: 'GET', route: '/orders/:id', traceparent: parent, lane: 'canary', caller: 'web' }).end(200);
    });
    bench(`server start+run+end, ${label}`, () => {
      const h = startServerSpan(t, { method: 'GET', route: '/orders/:id', traceparent: parent, lane: 'canary', caller: 'web' });
      h.run(noop);
      h.end(200);
    });
    bench(`server+run + 1 client with header, ${label}`, () => {
      const h = startServerSpan(t, { method: 'GET', route: '/orders/:id', traceparent: parent });
      h.run(() => {
        const c = startClientSpan(t, { callee: 'payments', address: 'payments:80', method: 'POST', parent: h.traceContext });
        void c.traceparent;
        c.end(200);
      });
      h.end(200);
    });
  }
}
for (const [name, ns] of results) console.log(`${name.padEnd(64)} ${ns.toFixed(0).padStart(6)} ns/op`);

if (only !== String(cases.length)) process.exit(0);
const batch: PlinthSpan[] = [];
const t = tracing({}, batch);
for (let i = 0; i < 512; i++) startServerSpan(t, { method: 'GET', route: '/orders/:id', traceparent: undefined, lane: 'canary', caller: 'web' }).end(200);
let best = Number.POSITIVE_INFINITY;
for (let round = 0; round < ROUNDS; round++) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 50; i++) tracesJson(batch);
  best = Math.min(best, Number(process.hrtime.bigint() - t0) / 50 / batch.length);
}
console.log(`${'encode OTLP JSON, per span'.padEnd(64)} ${best.toFixed(0).padStart(6)} ns/op`);
context.disable();
