/**
 * `plinth audit verify` against a real server whose audit log was edited on disk behind its back:
 * the tamper-evidence a security reviewer relies on, end to end.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { startServer } from '@plinth/server';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

function verify(url: string, token: string): Promise<{ code: number; out: string }> {
  return new Promise((ok) => {
    execFile(process.execPath, [MAIN, 'audit', 'verify'], { env: { PATH: process.env['PATH'], PLINTH_URL: url, PLINTH_TOKEN: token, HOME: tmpdir() } }, (err, stdout, stderr) => {
      ok({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: stdout + stderr });
    });
  });
}

async function withServer(dataDir: string, fn: (url: string, token: string) => Promise<void>): Promise<void> {
  const s = await startServer({ dataDir, listen: '127.0.0.1:0', logLevel: 'silent' });
  try {
    const token = (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim();
    await fn(s.url, token);
  } finally {
    await s.close();
  }
}

function tamper(dataDir: string, sql: string): void {
  const db = new Database(join(dataDir, 'plinth.db'));
  try {
    db.exec(sql);
  } finally {
    db.close();
  }
}

void describe('plinth audit verify on a tampered log', () => {
  for (const [what, sql, pattern] of [
    ['an edited entry', "UPDATE audit SET actor = 'ServiceAccount:x/nobody' WHERE seq = 2", /altered/],
    ['a removed entry', 'DELETE FROM audit WHERE seq = 2', /missing/],
    ['removed newest entries', 'DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)', /removed/],
  ] as const) {
    void it(`detects ${what}`, async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'plinth-tamper-'));
      try {
        await withServer(dataDir, async (url, token) => {
          for (let i = 0; i < 4; i++) {
            const res = await fetch(`${url}/v1/resources/Config/audit/c${i}`, {
              method: 'PUT',
              headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
              body: JSON.stringify({ spec: { content: String(i) } }),
            });
            assert.equal(res.status, 201);
          }
          const clean = await verify(url, token);
          assert.equal(clean.code, 0, clean.out);
          assert.match(clean.out, /audit log OK/);
        });
        tamper(dataDir, sql);
        await withServer(dataDir, async (url, token) => {
          const r = await verify(url, token);
          assert.equal(r.code, 1, r.out);
          assert.match(r.out, pattern);
        });
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  }
});
