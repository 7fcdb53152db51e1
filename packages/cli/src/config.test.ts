import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { credentialsPath, loadCredentials, normalizeUrl, readTokenValue, resolveConnection, saveCredentials } from './config.js';
import { UsageError } from './errors.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'plinth-config-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

void describe('config', () => {
  void it('puts credentials under XDG_CONFIG_HOME, else ~/.config', () => {
    assert.equal(credentialsPath({ XDG_CONFIG_HOME: '/x' }), '/x/plinth/credentials.json');
    assert.equal(credentialsPath({ HOME: '/home/u' }), '/home/u/.config/plinth/credentials.json');
  });

  void it('normalizes URLs and rejects what is not http(s)', () => {
    assert.equal(normalizeUrl('http://127.0.0.1:7070/'), 'http://127.0.0.1:7070');
    assert.equal(normalizeUrl('https://h.example/plinth/'), 'https://h.example/plinth');
    assert.throws(() => normalizeUrl('localhost:7070'), UsageError);
    assert.throws(() => normalizeUrl('not a url'), UsageError);
  });

  void it('reads @file tokens, trimmed; a missing file is a usage error', async () => {
    const f = join(dir, 'tok');
    await writeFile(f, 'plinth_abc\n');
    assert.equal(await readTokenValue(`@${f}`), 'plinth_abc');
    assert.equal(await readTokenValue(' raw '), 'raw');
    await assert.rejects(readTokenValue(`@${join(dir, 'nope')}`), UsageError);
  });

  void it('saves logins privately and uses a saved token only for its own URL', async () => {
    const env = { XDG_CONFIG_HOME: join(dir, 'xdg') };
    const path = await saveCredentials('http://a:1', 'tok-a', env);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, 'xdg', 'plinth'))).mode & 0o777, 0o700);
    await saveCredentials('http://b:2', 'tok-b', env);
    const creds = await loadCredentials(env);
    assert.equal(creds.current, 'http://b:2');
    assert.equal(creds.servers['http://a:1']?.token, 'tok-a');

    // Nothing given: the current login.
    assert.deepEqual(await resolveConnection({}, env), { url: 'http://b:2', token: 'tok-b' });
    // Another URL: its own saved token, or none at all (never another server's).
    assert.deepEqual(await resolveConnection({ url: 'http://a:1/' }, env), { url: 'http://a:1', token: 'tok-a' });
    assert.deepEqual(await resolveConnection({}, { ...env, PLINTH_URL: 'http://c:3' }), { url: 'http://c:3', token: undefined });
    // Flags win over the environment, which wins over the saved login.
    assert.deepEqual(await resolveConnection({}, { ...env, PLINTH_TOKEN: 'env' }), { url: 'http://b:2', token: 'env' });
    assert.deepEqual(await resolveConnection({ token: 'flag', url: 'http://d:4' }, { ...env, PLINTH_TOKEN: 'env', PLINTH_URL: 'http://c:3' }), {
      url: 'http://d:4',
      token: 'flag',
    });
  });

  void it('defaults to 127.0.0.1:7070 and says so when the credentials file is corrupt', async () => {
    const env = { XDG_CONFIG_HOME: join(dir, 'empty') };
    assert.deepEqual(await resolveConnection({}, env), { url: 'http://127.0.0.1:7070', token: undefined });
    const bad = { XDG_CONFIG_HOME: join(dir, 'bad') };
    await saveCredentials('http://x:1', 't', bad);
    await writeFile(credentialsPath(bad), '{nope');
    await assert.rejects(resolveConnection({}, bad), UsageError);
    assert.match(await readFile(credentialsPath(bad), 'utf8'), /nope/);
  });
});
