import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, type ServerOptions as TlsServerOptions } from 'node:https';
import type { Duplex } from 'node:stream';
import { listenOn } from './listen.js';

export type NotReadyReason = 'registering' | 'no_snapshot' | 'draining' | 'unhealthy';

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

/** node:http's `upgrade` listener: the socket is the handler's once called. */
export type UpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/**
 * Connections served on the server's sockets that node's http server does not track (HTTP/2 sessions a
 * caller set up on it): asked to finish when the server stops accepting, closed when it closes.
 */
export interface UntrackedSessions {
  stopAccepting(): void;
  closeAll(): void;
}

export const HEALTH_PATH = '/healthz';
export const READY_PATH = '/readyz';

// Answers built once: probes arrive every few seconds from every kubelet and load balancer.
const JSON_TYPE = 'application/json';
const HEALTHY = Buffer.from('{"ok":true}');
const READY = Buffer.from('{"ready":true}');
const NOT_READY: Record<NotReadyReason, Buffer> = {
  registering: Buffer.from('{"ready":false,"reason":"registering"}'),
  no_snapshot: Buffer.from('{"ready":false,"reason":"no_snapshot"}'),
  draining: Buffer.from('{"ready":false,"reason":"draining"}'),
  unhealthy: Buffer.from('{"ready":false,"reason":"unhealthy"}'),
};
const SHUTTING_DOWN = Buffer.from(
  JSON.stringify({
    type: 'https://plinth.dev/problems/unavailable',
    title: 'The instance is shutting down',
    status: 503,
    code: 'unavailable',
    detail: 'this instance no longer accepts requests; retry on another instance',
  }),
);

/** A response on an HTTP/2 stream (node's compatibility API), which must not carry connection headers. */
function isHttp2(res: ServerResponse): boolean {
  return (res as { stream?: unknown }).stream !== undefined;
}

function isPath(url: string | undefined, path: string): boolean {
  return url !== undefined && url.startsWith(path) && (url.length === path.length || url.charCodeAt(path.length) === 63 /* ? */);
}

/**
 * A node:http server around the application's listener that answers the probes itself, counts requests in
 * flight and can stop accepting and drain. Per request it costs one Set insert and one 'close' listener,
 * a function shared by every request; no timer.
 */
export class DrainableServer {
  readonly server: Server;
  private readonly inFlight = new Set<ServerResponse>();
  private accepting = true;
  private onIdle: (() => void) | undefined;
  private readonly closed: Promise<void>;
  private markClosed!: () => void;

  /** Upgraded connections (WebSockets): long-lived, not requests in flight; closed with the server. */
  private readonly upgraded = new Set<Duplex>();

  constructor(
    handler: RequestListener,
    private readonly notReady: () => NotReadyReason | undefined,
    upgrade?: UpgradeListener,
    tls?: TlsServerOptions,
    private readonly sessions?: UntrackedSessions,
    serverFactory?: (listener: RequestListener) => Server,
  ) {
    const inFlight = this.inFlight;
    const released = (res: ServerResponse) => {
      inFlight.delete(res);
      if (!this.accepting) this.afterDrainingRequest();
    };
    const onClose = function (this: ServerResponse) {
      released(this);
    };
    const listener = (req: IncomingMessage, res: ServerResponse): void => {
      const url = req.url;
      if (isPath(url, HEALTH_PATH)) return this.probe(res, 200, HEALTHY);
      if (isPath(url, READY_PATH)) {
        const reason = this.notReady();
        return reason === undefined ? this.probe(res, 200, READY) : this.probe(res, 503, NOT_READY[reason]);
      }
      if (!this.accepting) {
        // Arrived on a kept-alive connection after we stopped accepting: refuse it in a way a client retries
        // elsewhere, and close the connection so it goes elsewhere.
        res.writeHead(503, { 'content-type': 'application/problem+json', 'content-length': SHUTTING_DOWN.length, ...(isHttp2(res) ? {} : { connection: 'close' }), 'retry-after': '0' });
        res.end(SHUTTING_DOWN);
        return;
      }
      inFlight.add(res);
      // 'close' fires once per response; `on` spares the wrapper `once` would allocate.
      res.on('close', onClose);
      handler(req, res);
    };
    // node:https's Server is a node:http Server with a TLS handshake in front: the same events and timeouts.
    this.server = serverFactory !== undefined ? serverFactory(listener) : tls === undefined ? createServer(listener) : (createTlsServer(tls, listener) as unknown as Server);
    if (upgrade !== undefined) {
      const upgraded = this.upgraded;
      this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        if (!this.accepting) {
          socket.on('error', () => {});
          socket.end(
            `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: ${SHUTTING_DOWN.length}\r\nconnection: close\r\nretry-after: 0\r\n\r\n${SHUTTING_DOWN.toString()}`,
          );
          return;
        }
        upgraded.add(socket);
        socket.once('close', () => upgraded.delete(socket));
        upgrade(req, socket, head);
      });
    }
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Binds `host:port`, or listens on the inherited listening socket `fd`; resolves with the address listened on. */
  listen(port: number, host: string, fd?: number): Promise<{ host: string; port: number }> {
    return listenOn(this.server, fd !== undefined ? { fd, what: `fd:${fd}` } : { host, port });
  }

  /**
   * Closes the listening socket (new connections are refused) and the idle kept-alive ones; requests in
   * flight go on, and their connections close once they answer.
   */
  stopAccepting(): void {
    if (!this.accepting) return;
    this.accepting = false;
    if (this.server.listening) this.server.close(() => this.markClosed());
    else this.markClosed();
    // HTTP/2 has no `connection` header (its sessions are told with a GOAWAY instead).
    for (const res of this.inFlight) if (!res.headersSent && !isHttp2(res)) res.setHeader('connection', 'close');
    this.server.closeIdleConnections();
    this.sessions?.stopAccepting();
  }

  /** Resolves true once no request is in flight, or false after `timeoutMs` with some still running. */
  drained(timeoutMs: number): Promise<boolean> {
    if (this.inFlight.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.onIdle = undefined;
        resolve(false);
      }, timeoutMs);
      this.onIdle = () => {
        clearTimeout(timer);
        this.onIdle = undefined;
        resolve(true);
      };
    });
  }

  /** Destroys whatever connection is left (requests past the drain timeout) and waits for the server to close. */
  async close(): Promise<void> {
    this.stopAccepting();
    // A server from `serverFactory` may be node:http2's, which leaves this to `sessions`.
    if (typeof this.server.closeAllConnections === 'function') this.server.closeAllConnections();
    this.sessions?.closeAll();
    // The server's close waits for every socket it accepted, upgraded ones included.
    for (const s of this.upgraded) s.destroy();
    this.upgraded.clear();
    await this.closed;
  }

  private afterDrainingRequest(): void {
    // A response whose headers went out before stopAccepting leaves its connection kept-alive; it is idle
    // only once node has finished with it, hence the next turn.
    setImmediate(() => this.server.closeIdleConnections());
    if (this.inFlight.size === 0) this.onIdle?.();
  }

  private probe(res: ServerResponse, status: number, body: Buffer): void {
    const headers: Record<string, string | number> = { 'content-type': JSON_TYPE, 'content-length': body.length, 'cache-control': 'no-store' };
    if (!this.accepting && !isHttp2(res)) headers.connection = 'close';
    res.writeHead(status, headers);
    res.end(body);
  }
}
