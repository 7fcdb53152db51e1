import cluster from 'node:cluster';
import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https';
import type { Http2SecureServer } from 'node:http2';
import type { Socket } from 'node:net';
import { inheritedSocket } from '@plinth/core';
import type { ListenTarget } from '@plinth/sdk/runtime';
import { GatewayCodes, rawProblem } from './errors.js';
import { http2Server, type Http1Settings, type Http2Limits } from './http2.js';
import type { TlsContext } from './tls.js';

export interface ServerLimits {
  /** Time to receive the request headers; slower clients get 408. Default 20 s. */
  headersTimeoutMs?: number;
  /** Time to receive a whole request (headers and body). Default 300 s: uploads stream through. */
  requestTimeoutMs?: number;
  /** Idle kept-alive connections are closed after this. Default 65 s (longer than common LB idle timeouts). */
  keepAliveTimeoutMs?: number;
  /** How often node checks the two timeouts above. Default 1 s. */
  connectionsCheckingIntervalMs?: number;
  /** Larger request headers get 431 (over HTTP/2, the header list; once the client has the setting, node resets such a stream instead). Default 16 KiB. */
  maxHeaderSize?: number;
  /** HTTP/2 (with TLS, or h2c): streams one client connection may have open at once. Default 100. */
  http2?: Http2Limits;
}

/** `host:port`, `:port` or `port`; port 0 picks a free one. */
export function parseHostPort(s: string, defaultHost = '127.0.0.1'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s) ?? (/^\d+$/.test(s) ? [s, undefined, '', s] : null);
  if (m === null) throw new TypeError(`expected host:port, not ${JSON.stringify(s)}`);
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`port out of range in ${JSON.stringify(s)}`);
  return { host: m[1] ?? (m[2] || defaultHost), port };
}

/**
 * Where a listener listens: an address to bind, or a listening socket the process was started with (socket
 * activation). A service manager that holds the socket (systemd's `.socket` units, or any supervisor that
 * passes one) keeps it open across restarts: connections that arrive while no gateway runs wait in its
 * backlog instead of being refused, and an old and a new gateway on the same socket share its connections.
 */
export { listenOn, type ListenTarget } from '@plinth/sdk/runtime';

/**
 * `host:port`, `:port` or `port` (port 0 picks a free one), or an inherited listening socket: `fd:N`, `systemd`
 * or `systemd:NAME` (core's `inheritedSocket`; a worker of `--workers` takes its primary's).
 */
export function parseListen(s: string, defaultHost = '127.0.0.1', env: NodeJS.ProcessEnv = process.env, pid = process.pid, parentPid = cluster.isWorker ? process.ppid : undefined): ListenTarget {
  return inheritedSocket(s, env, pid, parentPid) ?? parseHostPort(s, defaultHost);
}

/** An HTTP, HTTPS or HTTPS-with-HTTP/2 server: what the gateway's listeners share. */
export type AnyServer = Server | TlsServer | Http2SecureServer;

/**
 * A node:http server (node:https with `tls`) that never crashes on what clients send: headers over the limit
 * get 431, a stalled client 408, garbage 400, each as problem+json on a closing connection; a reset socket is
 * just dropped. With TLS, a failed handshake (garbage, a plain-HTTP client, an unsupported version, or no
 * handshake within the headers timeout) closes the socket and is reported to `onTlsError`. A TLS context
 * whose ALPN offers `h2` gets node:http2's server, serving HTTP/1.1 on the same port (http2.ts).
 */
export function hardenedServer(listener: RequestListener, limits: ServerLimits | undefined, tls: TlsContext, onTlsError?: (err: Error, socket: Socket) => void): TlsServer | Http2SecureServer;
export function hardenedServer(listener: RequestListener, limits?: ServerLimits): Server;
export function hardenedServer(listener: RequestListener, limits: ServerLimits = {}, tls?: TlsContext, onTlsError?: (err: Error, socket: Socket) => void): AnyServer {
  const options = http1Settings(limits);
  let server: AnyServer;
  if (tls === undefined) server = createServer(options, listener);
  else {
    // The http timeouts start once the handshake is done; until then a silent client is held this long.
    const s = tls.ALPNProtocols.includes('h2') ? http2Server(listener, options, tls, limits.http2) : createTlsServer({ ...options, ...tls, handshakeTimeout: options.headersTimeout }, listener);
    // http2's own listener would pass handshake failures on as clientError, answered below in plain HTTP.
    s.removeAllListeners('tlsClientError');
    s.on('tlsClientError', (err: Error, socket: Socket) => {
      socket.destroy();
      onTlsError?.(err, socket);
    });
    server = s;
  }
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const answer =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? rawProblem(431, GatewayCodes.headersTooLarge)
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? rawProblem(408, 'request_timeout')
          : rawProblem(400, GatewayCodes.badRequest);
    socket.end(answer);
  });
  return server;
}

/** The node:http server settings of these limits, with their defaults. */
export function http1Settings(limits: ServerLimits = {}): Http1Settings {
  return {
    maxHeaderSize: limits.maxHeaderSize ?? 16 * 1024,
    headersTimeout: limits.headersTimeoutMs ?? 20_000,
    requestTimeout: limits.requestTimeoutMs ?? 300_000,
    keepAliveTimeout: limits.keepAliveTimeoutMs ?? 65_000,
    connectionsCheckingInterval: limits.connectionsCheckingIntervalMs ?? 1000,
  };
}

export function urlOf(host: string, port: number, scheme: 'http' | 'https' = 'http'): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return `${scheme}://${h}:${port}`;
}
