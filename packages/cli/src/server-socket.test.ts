/**
 * `plinth server --listen systemd`: the control plane on a socket its service manager holds, restarted (a new
 * version, a new configuration) without refusing a client: what arrives while no server runs waits in the
 * socket's backlog, and what is in flight when it stops finishes.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MAIN, runCli } from './cli.test.helpers.js';
import { heldLoad, printed, socketHolder, terminated, type SocketHolder } from './socket-holder.test.helpers.js';

describe('plinth server on a held socket', () => {
  let tmp: string;
  let holder: SocketHolder;
  const env = (): NodeJS.ProcessEnv => ({ PATH: process.env['PATH'], HOME: tmp, XDG_CONFIG_HOME: join(tmp, 'xdg') });

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'plinth-cli-server-socket-'));
    holder = await socketHolder(tmp);
  });

  after(async () => {
    await holder?.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('restarts across a gap with no request refused or cut, and says so when no socket was passed', async () => {
    const argv = [process.execPath, MAIN, 'server', '--listen', 'systemd', '--data', join(tmp, 'data'), '--log-level', 'silent'];
    const base = `http://127.0.0.1:${holder.port}`;
    const first = await holder.start(argv, env());
    await printed(first, new RegExp(`^plinth server listening on ${base} `, 'm'));
    const token = (await readFile(join(tmp, 'data', 'admin.token'), 'utf8')).trim();
    // Authenticated reads, each on a new connection: a store read and the identity check on every one.
    const load = heldLoad(() => `${base}/v1/whoami`, { authorization: `Bearer ${token}` });
    try {
      await load.more(20);
      await load.acrossGap(
        () => terminated(first),
        async () => printed(await holder.start(argv, env()), /plinth server listening on /),
      );
      assert.deepEqual(await load.stop(), [], 'no request failed across the restart');
    } finally {
      await load.stop();
    }
    const none = await runCli(['server', '--listen', 'systemd', '--data', join(tmp, 'other')], env());
    assert.equal(none.code, 2, none.stderr);
    assert.match(none.stderr, /^error: --listen "systemd": no socket was passed \(LISTEN_FDS is not set\)/m);
  });
});
