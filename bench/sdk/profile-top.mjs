// Prints the functions with the most self time in a V8 .cpuprofile (from `node --cpu-prof`), e.g.:
//   BENCH_ONLY=micro BENCH_MICRO_IMPLS=chain node --cpu-prof --cpu-prof-dir=bench/.work/profiles bench/sdk/run.mjs
//   node bench/sdk/profile-top.mjs bench/.work/profiles/<file>.cpuprofile [count] [path filter]
import { readFileSync } from 'node:fs';

const [file, count = '25', filter] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/sdk/profile-top.mjs <file.cpuprofile> [count] [url filter]');
  process.exit(1);
}
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const hits = new Map();
const dt = prof.timeDeltas;
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  hits.set(id, (hits.get(id) ?? 0) + (dt[i] ?? 0));
}
const total = [...hits.values()].reduce((a, b) => a + b, 0);
const self = new Map();
for (const [id, us] of hits) {
  const { callFrame: f } = byId.get(id);
  const where = f.url ? `${f.url.replace(/^file:\/\/.*?\/(node_modules|packages|bench)\//, '$1/')}:${f.lineNumber + 1}` : '';
  const key = `${f.functionName || '(anonymous)'} ${where}`;
  self.set(key, (self.get(key) ?? 0) + us);
}
const rows = [...self].filter(([k]) => !filter || k.includes(filter)).sort((a, b) => b[1] - a[1]).slice(0, Number(count));
console.log(`total sampled ${(total / 1000).toFixed(0)} ms`);
for (const [k, us] of rows) console.log(`${((100 * us) / total).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(1).padStart(8)} ms  ${k}`);
