#!/usr/bin/env node
// Runs every compiled *.test.js under packages/*/dist with node's test runner.
// Tests that need PostgreSQL/Redis/NATS read PLINTH_TEST_*_URL; under CI=true a missing one is a failure, not a skip.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const roots = ['packages'];
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules') continue;
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) walk(p);
    else if (name.endsWith('.test.js') && p.includes(`${'/'}dist${'/'}`)) files.push(p);
  }
}
for (const r of roots) walk(r);
const only = process.argv.slice(2);
const selected = only.length ? files.filter((f) => only.some((o) => f.includes(o))) : files;
if (selected.length === 0) {
  console.error('no test files found (did the build run?)');
  process.exit(1);
}
const r = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=2', '--test-timeout=120000', '--test-reporter=spec', ...selected.sort()],
  { stdio: 'inherit' },
);
process.exit(r.status ?? 1);
