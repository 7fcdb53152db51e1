// The functions with the most self time in a V8 .cpuprofile (`node --cpu-prof`), for the report.
import { readFileSync } from 'node:fs';

export function topSelfTime(file, count = 25) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const us = prof.timeDeltas[i] ?? 0;
    total += us;
    const f = byId.get(prof.samples[i]).callFrame;
    const where = f.url ? `${f.url.replace(/^file:\/\/.*?\/(node_modules|packages|bench)\//, '$1/')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + us);
  }
  const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, count);
  return { totalMs: total / 1000, rows: rows.map(([fn, us]) => ({ fn, ms: us / 1000, pct: (100 * us) / total })) };
}
