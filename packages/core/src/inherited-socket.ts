/**
 * A listening socket a process was started with (socket activation), named on the command line as `fd:N`
 * (descriptor N, from any supervisor) or `systemd` / `systemd:NAME` (one passed by systemd: `LISTEN_FDS`, the
 * name from `LISTEN_FDNAMES`, i.e. the unit's `FileDescriptorName=`). A service manager that holds the socket
 * keeps it open across restarts, so connections that arrive while no process serves wait in its backlog
 * instead of being refused. The server and the gateway listen on one the same way.
 */
export interface InheritedSocket {
  fd: number;
  /** As written, for messages. */
  what: string;
}

/** The first file descriptor systemd passes (SD_LISTEN_FDS_START). */
const SD_LISTEN_FDS_START = 3;

/**
 * The inherited socket `s` names, or undefined when `s` names none (an address). Throws a TypeError saying why
 * when it names one this process was not given: no `LISTEN_FDS`, sockets passed to another process
 * (`LISTEN_PID`, which may be `parentPid`'s: a gateway's worker listens through its primary), no socket of
 * that name, several and none named.
 */
export function inheritedSocket(s: string, env: Readonly<Record<string, string | undefined>> = process.env, pid = process.pid, parentPid?: number): InheritedSocket | undefined {
  const fd = /^fd:(\d{1,9})$/.exec(s);
  if (fd !== null) {
    const n = Number(fd[1]);
    if (n < 3) throw new TypeError(`${JSON.stringify(s)}: descriptors 0 to 2 are stdin, stdout and stderr, not a listening socket`);
    return { fd: n, what: s };
  }
  const sd = /^systemd(?::(.+))?$/.exec(s);
  if (sd === null) return undefined;
  const count = Number(env['LISTEN_FDS']);
  if (!Number.isInteger(count) || count < 1) throw new TypeError(`${JSON.stringify(s)}: no socket was passed (LISTEN_FDS is not set): start it from a systemd socket unit`);
  const forPid = env['LISTEN_PID'];
  if (forPid !== undefined && forPid !== '' && Number(forPid) !== pid && Number(forPid) !== parentPid) {
    throw new TypeError(`${JSON.stringify(s)}: the sockets were passed to process ${forPid}, not to this one (${pid}): run node directly as the service's command, not through a wrapper such as npx`);
  }
  const names = (env['LISTEN_FDNAMES'] ?? '').split(':');
  const name = sd[1];
  if (name === undefined) {
    if (count > 1) throw new TypeError(`${JSON.stringify(s)}: ${count} sockets were passed (${names.join(', ')}): name one, systemd:NAME`);
    return { fd: SD_LISTEN_FDS_START, what: s };
  }
  const i = names.indexOf(name);
  if (i < 0 || i >= count) throw new TypeError(`${JSON.stringify(s)}: no socket named ${JSON.stringify(name)} was passed (LISTEN_FDNAMES: ${names.join(', ') || 'none'})`);
  return { fd: SD_LISTEN_FDS_START + i, what: s };
}

/**
 * Why listening on `s` failed: `cause` from the listen (no such descriptor, not a socket), or none when what
 * the descriptor holds listens but is no TCP socket. Names the descriptor; keeps `cause`'s code.
 */
export function inheritedSocketError(s: InheritedSocket, cause?: NodeJS.ErrnoException): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(
    cause === undefined ? `${s.what}: descriptor ${s.fd} is not a TCP socket` : `${s.what}: descriptor ${s.fd} is not a listening socket this process holds (${cause.code ?? cause.message})`,
  );
  if (cause?.code !== undefined) e.code = cause.code;
  return e;
}
