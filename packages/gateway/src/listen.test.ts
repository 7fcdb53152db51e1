import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import { listenOn, parseListen } from './listen.js';

describe('listen targets', () => {
  it('takes host:port, an inherited descriptor, or a socket systemd passed to this process', () => {
    assert.deepEqual(parseListen('0.0.0.0:8080'), { host: '0.0.0.0', port: 8080 });
    assert.deepEqual(parseListen(':9901'), { host: '127.0.0.1', port: 9901 });
    assert.deepEqual(parseListen('fd:7'), { fd: 7, what: 'fd:7' });
    assert.throws(() => parseListen('fd:1'), /descriptors 0 to 2 are stdin, stdout and stderr/);
    const pid = 4242;
    const one = { LISTEN_FDS: '1', LISTEN_PID: String(pid), LISTEN_FDNAMES: 'http' };
    assert.deepEqual(parseListen('systemd', undefined, one, pid), { fd: 3, what: 'systemd' });
    assert.deepEqual(parseListen('systemd:http', undefined, one, pid), { fd: 3, what: 'systemd:http' });
    const two = { LISTEN_FDS: '2', LISTEN_PID: String(pid), LISTEN_FDNAMES: 'http:admin' };
    assert.deepEqual(parseListen('systemd:admin', undefined, two, pid), { fd: 4, what: 'systemd:admin' });
    assert.throws(() => parseListen('systemd', undefined, two, pid), /2 sockets were passed \(http, admin\): name one, systemd:NAME/);
    assert.throws(() => parseListen('systemd:metrics', undefined, two, pid), /no socket named "metrics" was passed \(LISTEN_FDNAMES: http, admin\)/);
    assert.throws(() => parseListen('systemd', undefined, {}, pid), /no socket was passed \(LISTEN_FDS is not set\)/);
    // Passed to a wrapper (npx, a shell) rather than to the gateway: the descriptors are not this process's to take.
    assert.throws(() => parseListen('systemd', undefined, { ...one, LISTEN_PID: '17' }, pid), /passed to process 17, not to this one \(4242\): run node directly/);
    assert.throws(() => parseListen('systemd:', undefined, one, pid), /expected host:port/);
    assert.throws(() => parseListen('somewhere'), /expected host:port/);
  });

  it('refuses a descriptor that is not a listening socket, saying which', async () => {
    const fd = openSync(process.execPath, 'r');
    try {
      await assert.rejects(listenOn(createServer(), { fd, what: `fd:${fd}` }), new RegExp(`^Error: fd:${fd}: descriptor ${fd} is not a listening socket this process holds`));
    } finally {
      closeSync(fd);
    }
  });
});
