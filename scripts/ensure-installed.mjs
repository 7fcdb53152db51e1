#!/usr/bin/env node
// Lets `npm start` and `npm test` work as the first commands on a fresh clone: installs from the lockfile
// (which also builds) when node_modules is missing or older than the lockfile.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';

const marker = 'node_modules/.package-lock.json';
const stale = !existsSync(marker) || statSync(marker).mtimeMs < statSync('package-lock.json').mtimeMs;
if (stale) {
  console.error('plinth: installing dependencies from package-lock.json (first run only)...');
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
} else if (!existsSync('packages/cli/dist/main.js')) {
  const r = spawnSync('npx', ['tsc', '-b'], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
