/**
 * End to end: a real server in this process, the built CLI in child processes, exactly as a user runs it.
 * Children are spawned asynchronously: a synchronous spawn would block this event loop, and with it the server.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServer, type RunningServer } from '@plinth/server';
import { parse as parseYaml } from 'yaml';
import { MAIN, runCli, type Run } from './cli.test.helpers.js';


let tmp: string;
let server: RunningServer;
let token: string;
let tokenFile: string;
let baseEnv: NodeJS.ProcessEnv;

const cli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> => runCli(args, { ...baseEnv, ...env });

function manifest(name: string): string {
  return join(tmp, name);
}

const configDoc = (name: string, content: string, extra = ''): string =>
  `apiVersion: plinth.dev/v1\nkind: Config\nmetadata:\n  namespace: e2e\n  name: ${name}\n  labels: {team: orders}\nspec:\n  format: text\n  content: ${JSON.stringify(content)}\n${extra}`;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'plinth-cli-e2e-'));
  server = await startServer({ dataDir: join(tmp, 'data'), listen: '127.0.0.1:0', logLevel: 'silent' });
  assert.ok(server.adminTokenFile, 'a first start creates the admin credential');
  tokenFile = server.adminTokenFile;
  token = (await readFile(tokenFile, 'utf8')).trim();
  baseEnv = { PATH: process.env['PATH'], HOME: tmp, XDG_CONFIG_HOME: join(tmp, 'xdg'), PLINTH_URL: server.url, PLINTH_TOKEN: token };
});

after(async () => {
  await server?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

void describe('plinth CLI against a real server', () => {
  let rev1 = 0;
  let rev2 = 0;

  void it('apply prints created, then unchanged on re-apply, then updated after a change', async () => {
    const f = manifest('app.yaml');
    await writeFile(f, `${configDoc('app', 'v1')}---\n${configDoc('other', 'x')}`);
    const first = await cli(['apply', '-f', f]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, 'Config/e2e/app created\nConfig/e2e/other created\n');

    const again = await cli(['apply', '-f', f]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, 'Config/e2e/app unchanged\nConfig/e2e/other unchanged\n');

    await writeFile(f, `${configDoc('app', 'v2')}---\n${configDoc('other', 'x')}`);
    const dry = await cli(['apply', '--dry-run', '-f', f]);
    assert.equal(dry.stdout, 'Config/e2e/app updated (dry run)\nConfig/e2e/other unchanged (dry run)\n');
    const changed = await cli(['apply', '-f', f]);
    assert.equal(changed.code, 0, changed.stderr);
    assert.equal(changed.stdout, 'Config/e2e/app updated\nConfig/e2e/other unchanged\n');
  });

  void it('get prints a table, json and yaml', async () => {
    const table = await cli(['get', 'configs', '-n', 'e2e']);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split('\n');
    assert.match(lines[0]!, /^NAMESPACE\s+NAME\s+REVISION\s+AGE\s+FORMAT$/);
    assert.match(lines[1]!, /^e2e\s+app\s+\d+\s+\d+s\s+text$/);

    const j = await cli(['get', 'config', 'app', '-n', 'e2e', '-o', 'json']);
    assert.equal(j.code, 0, j.stderr);
    const r = JSON.parse(j.stdout) as { kind: string; metadata: { revision: number; labels: Record<string, string> }; spec: { content: string } };
    assert.equal(r.kind, 'Config');
    assert.equal(r.spec.content, 'v2');
    assert.equal(r.metadata.labels['team'], 'orders');

    const y = await cli(['get', 'Config', 'app', '-n', 'e2e', '-o', 'yaml']);
    assert.equal((parseYaml(y.stdout) as { spec: { content: string } }).spec.content, 'v2');

    const all = await cli(['get', 'config', '-A', '-l', 'team=orders', '-o', 'json']);
    const list = JSON.parse(all.stdout) as { kind: string; items: { metadata: { name: string } }[] };
    assert.equal(list.kind, 'List');
    assert.deepEqual(list.items.map((i) => i.metadata.name).sort(), ['app', 'other']);
  });

  void it('history, diff and rollback', async () => {
    const h = await cli(['history', 'config', 'app', '-n', 'e2e', '-o', 'json']);
    assert.equal(h.code, 0, h.stderr);
    const items = (JSON.parse(h.stdout) as { items: { type: string; revision: number }[] }).items;
    assert.deepEqual(items.map((i) => i.type), ['MODIFIED', 'ADDED']);
    rev2 = items[0]!.revision;
    rev1 = items[1]!.revision;
    const table = await cli(['history', 'config', 'app', '-n', 'e2e']);
    assert.match(table.stdout.split('\n')[0]!, /^REVISION\s+TYPE\s+TIME$/);

    const d = await cli(['diff', 'config', 'app', '-n', 'e2e', '--from', String(rev1), '--to', String(rev2)]);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /spec\.content/);
    assert.match(d.stdout, /^-\s+content: v1$/m);
    assert.match(d.stdout, /^\+\s+content: v2$/m);

    const rb = await cli(['rollback', 'config', 'app', '-n', 'e2e', '--to', String(rev1)]);
    assert.equal(rb.code, 0, rb.stderr);
    assert.match(rb.stdout, new RegExp(`^Config/e2e/app rolled back to revision ${rev1} \\(new revision \\d+\\)`));
    const now = JSON.parse((await cli(['get', 'config', 'app', '-n', 'e2e', '-o', 'json'])).stdout) as { spec: { content: string } };
    assert.equal(now.spec.content, 'v1');
    const h2 = JSON.parse((await cli(['history', 'config', 'app', '-n', 'e2e', '-o', 'json'])).stdout) as { items: unknown[] };
    assert.equal(h2.items.length, 3);
  });

  void it('a validation error names the file, document and field, exits 1, and the other documents still apply', async () => {
    const f = manifest('bad.yaml');
    await writeFile(f, `${configDoc('fine', 'ok')}---\n${configDoc('broken', 'x').replace('format: text', 'format: xml')}`);
    const r = await cli(['apply', '-f', f]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, 'Config/e2e/fine created\n');
    assert.match(r.stderr, /bad\.yaml \(document 2\): Config\/e2e\/broken: .*\(validation_failed\)/);
    assert.match(r.stderr, /^ {2}spec\.format: /m);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  void it('secrets show key names, and values only with --reveal', async () => {
    const f = manifest('secret.yaml');
    await writeFile(f, 'kind: Secret\nmetadata: {namespace: e2e, name: db}\nspec: {data: {password: hunter2}}\n');
    assert.equal((await cli(['apply', '-f', f])).stdout, 'Secret/e2e/db created\n');
    const t = await cli(['get', 'secret', 'db', '-n', 'e2e']);
    assert.match(t.stdout, /KEYS/);
    assert.match(t.stdout, /password/);
    assert.doesNotMatch(t.stdout, /hunter2/);
    const shown = JSON.parse((await cli(['get', 'secret', 'db', '-n', 'e2e', '--reveal', '-o', 'json'])).stdout) as { spec: { data?: Record<string, string> } };
    assert.equal(shown.spec.data?.['password'], 'hunter2');
  });

  void it('watch prints an event as it happens and exits cleanly on SIGINT', async () => {
    const list = JSON.parse((await cli(['get', 'config', '-n', 'e2e', '-o', 'json'])).stdout) as { revision: number };
    // Watching from the list's revision, so the change below is seen however fast the watch connects.
    const child = spawn(process.execPath, [MAIN, 'watch', 'config', '-n', 'e2e', '--since', String(list.revision)], { env: baseEnv });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const firstLine = new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (c: Buffer) => {
        buf += c.toString();
        const nl = buf.indexOf('\n');
        if (nl >= 0) resolve(buf.slice(0, nl));
      });
      child.on('exit', (code) => reject(new Error(`watch exited early (${code}): ${stderr}`)));
      setTimeout(() => reject(new Error(`no watch event within 20s: ${stderr}`)), 20_000).unref();
    });
    const f = manifest('watched.yaml');
    await writeFile(f, configDoc('app', 'v3'));
    assert.equal((await cli(['apply', '-f', f])).stdout, 'Config/e2e/app updated\n');
    try {
      assert.match(await firstLine, /^MODIFIED Config\/e2e\/app rev \d+$/);
    } finally {
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      child.kill('SIGINT');
      assert.equal(await exited, 0, stderr);
    }
  });

  void it('login saves the token (mode 0600) and later commands use it', async () => {
    const env = { PLINTH_TOKEN: '' };
    const r = await cli(['login', '--url', server.url, '--token', `@${tokenFile}`], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^logged in to .* as ServiceAccount:/);
    const creds = join(tmp, 'xdg', 'plinth', 'credentials.json');
    assert.equal((await stat(creds)).mode & 0o777, 0o600);
    const g = await cli(['get', 'config', 'app', '-n', 'e2e'], { PLINTH_TOKEN: '', PLINTH_URL: '' });
    assert.equal(g.code, 0, g.stderr);
  });

  void it('auth token prints a JWT that works as a token', async () => {
    const t = await cli(['auth', 'token']);
    assert.equal(t.code, 0, t.stderr);
    const jwt = t.stdout.trim();
    assert.equal(jwt.split('.').length, 3);
    const g = await cli(['get', 'config', 'app', '-n', 'e2e'], { PLINTH_TOKEN: jwt });
    assert.equal(g.code, 0, g.stderr);
  });

  void it('delete, then get says not found with exit 1', async () => {
    const d = await cli(['delete', 'config', 'other', '-n', 'e2e']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /^Config\/e2e\/other deleted \(revision \d+\)$/m);
    const g = await cli(['get', 'config', 'other', '-n', 'e2e']);
    assert.equal(g.code, 1);
    assert.match(g.stderr, /^error: .*\(not_found\)$/m);
    const u = await cli(['get', 'nosuchkind', 'x', '-n', 'e2e']);
    assert.equal(u.code, 1);
    assert.match(u.stderr, /\(unknown_kind\)/);
  });

  void it('a bad token exits 4; an unreachable server exits 3; bad usage exits 2', async () => {
    const bad = await cli(['get', 'config', '-n', 'e2e'], { PLINTH_TOKEN: 'plinth_not-a-real-token' });
    assert.equal(bad.code, 4);
    assert.match(bad.stderr, /^error: .*\(unauthenticated\)$/m);

    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const down = await cli(['get', 'config', '-n', 'e2e'], { PLINTH_URL: `http://127.0.0.1:${port}` });
    assert.equal(down.code, 3);
    assert.match(down.stderr, /^error: cannot reach plinth server at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)$/m);

    assert.equal((await cli(['apply', '-f', manifest('missing.yaml')])).code, 2);
    assert.equal((await cli(['get', 'config', '-o', 'xml'])).code, 2);
    assert.equal((await cli(['diff', 'config', 'app', '--from', 'zero'])).code, 2);
  });

  void it('audit verify checks the whole chain', async () => {
    const r = await cli(['audit', 'verify']);
    assert.equal(r.code, 0, r.stderr);
    const m = /^audit log OK: (\d+) entries$/.exec(r.stdout.trim());
    assert.ok(m, r.stdout);
    assert.ok(Number(m[1]) > 0);
    const viaData = await cli(['audit', 'verify', '--data', join(tmp, 'data')], { PLINTH_TOKEN: '' });
    assert.equal(viaData.code, 0, viaData.stderr);
  });

  void it('plinth server prints its URL and how to use the admin token, and stops cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [MAIN, 'server', '--data', join(tmp, 'srv'), '--listen', '127.0.0.1:0', '--log-level', 'silent'], { env: baseEnv });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (c: Buffer) => {
          stdout += c.toString();
          if (/export PLINTH_TOKEN=\$\(cat .*\)\n/.test(stdout)) resolve();
        });
        child.on('exit', (code) => reject(new Error(`server exited early (${code}): ${stderr}`)));
        setTimeout(() => reject(new Error(`server did not start within 20s: ${stdout} ${stderr}`)), 20_000).unref();
      });
      const url = /listening on (http:\/\/\S+)/.exec(stdout)?.[1];
      const file = /export PLINTH_TOKEN=\$\(cat (.*)\)/.exec(stdout)?.[1];
      assert.ok(url && file, stdout);
      const g = await cli(['get', 'config', '-n', 'e2e'], { PLINTH_URL: url, PLINTH_TOKEN: `@${file}` });
      assert.equal(g.code, 0, g.stderr);
    } finally {
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
    }
  });
});
