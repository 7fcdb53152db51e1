import type { Server } from 'node:net';
import { inheritedSocketError, type InheritedSocket } from '@plinth/core';

/** An address to bind, or a listening socket the process was started with (core's `inheritedSocket`). */
export type ListenTarget = { host: string; port: number; fd?: undefined } | (InheritedSocket & { host?: undefined; port?: undefined });

/** Listens on `target`; resolves with the address listened on (for an inherited socket, the socket's own). */
export function listenOn(server: Server, target: ListenTarget): Promise<{ host: string; port: number }> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => reject(target.fd === undefined ? e : inheritedSocketError(target, e));
    server.once('error', onError);
    server.listen(target.fd !== undefined ? { fd: target.fd } : { port: target.port, host: target.host }, () => {
      server.off('error', onError);
      const a = server.address();
      if (typeof a === 'object' && a !== null) return resolve({ host: a.address, port: a.port });
      if (target.fd === undefined) return resolve({ host: target.host, port: target.port });
      server.close();
      reject(inheritedSocketError(target));
    });
  });
}
