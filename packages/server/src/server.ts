import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { inheritedSocket, inheritedSocketError } from '@plinth/core';
import { registerRegistryRoutes } from './api/registry.js';
import { registerResourceRoutes } from './api/resources.js';
import { registerSecretKeyRoutes } from './api/secret-keys.js';
import { registerWatchRoutes } from './api/watch.js';
import { AuthCache, createRequestHandler } from './app.js';
import { sendJson } from './http/problem.js';
import { Router } from './http/router.js';
import { Auditor } from './identity/audit.js';
import { bootstrap } from './identity/bootstrap.js';
import { IdentityService } from './identity/identity-service.js';
import { registerIdentityRoutes } from './identity/routes.js';
import { createMetrics } from './metrics.js';
import { Leases } from './registry/leases.js';
import { Keyring } from './secrets/keyring.js';
import { openStore } from './store/index.js';
import type { Store } from './store/types.js';
import { WatchHub } from './watch/hub.js';
import { startApm, type ApmOptions } from './apm/server.js';

export interface ServerOptions {
  /** Data directory (created when missing): SQLite file, secret keys, admin token. */
  dataDir: string;
  /**
   * host:port; port 0 picks a free one. Default 127.0.0.1:7070. Or a listening socket the process was started
   * with (`fd:N`, `systemd`, `systemd:NAME`; core's `inheritedSocket`).
   */
  listen?: string;
  /** 'sqlite' (default: DATA/plinth.db) or a postgres:// URL. */
  store?: string;
  /** Value in the PLINTH_SECRET_KEYS format; default: the key file DATA/secret.keys (created on first start). */
  secretKeys?: string;
  /** Path of the secret key file, when not DATA/secret.keys. */
  secretKeyFile?: string;
  /** Token issuer (JWT iss). Default 'plinth'. */
  issuer?: string;
  /** Lifetime of issued JWTs. Default 900. */
  tokenTtlSeconds?: number;
  /** Watch heartbeat period. Default 15000. */
  heartbeatMs?: number;
  /** How many revisions of change log to keep before compacting. Default 100000. */
  retainRevisions?: number;
  /** How often the lease sweeper runs. Default 1000. */
  leaseSweepMs?: number;
  /** pino level, or 'silent'. Default 'info'. */
  logLevel?: string;
  /** A logger to use instead of a new one. */
  logger?: Logger;
  /** Traces, RED figures, SLO and alert evaluation (span store beside the resource store). */
  apm?: ApmOptions;
  /** How long `close()` lets requests in flight finish before cutting their connections. Default 10000. */
  drainTimeoutMs?: number;
}

export interface RunningServer {
  url: string;
  port: number;
  /** Set when this start created the admin credential. */
  adminTokenFile: string | undefined;
  store: Store;
  close(): Promise<void>;
}

export const DEFAULT_LISTEN = '127.0.0.1:7070';
const DEFAULT_DRAIN_MS = 10_000;

/**
 * Stops accepting, lets the requests in flight finish (kept-alive connections are closed as they fall idle),
 * and cuts what is still open after `ms`. Watch streams are ended before (the hub's stop); their clients
 * resume from their last revision on the next server.
 */
function drain(server: Server, ms: number): Promise<void> {
  return new Promise<void>((ok) => {
    const cut = setTimeout(() => server.closeAllConnections(), ms);
    const idle = setInterval(() => server.closeIdleConnections(), 50);
    server.close(() => {
      clearTimeout(cut);
      clearInterval(idle);
      ok();
    });
    server.closeIdleConnections();
  });
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`--listen expects HOST:PORT (e.g. 127.0.0.1:7070), not ${JSON.stringify(listen)}`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const log = options.logger ?? pino({ level: options.logLevel ?? 'info', base: { component: 'plinth-server' } });
  const dataDir = resolve(options.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const listen = options.listen ?? DEFAULT_LISTEN;
  // A socket its service manager holds (socket activation): a restart keeps clients waiting, never refused.
  const inherited = inheritedSocket(listen);
  const { host, port } = inherited === undefined ? parseListen(listen) : { host: '', port: 0 };

  const secretKeys = options.secretKeys ?? process.env.PLINTH_SECRET_KEYS;
  const keyring = secretKeys ? Keyring.fromEnv(secretKeys) : Keyring.fromFile(options.secretKeyFile ?? join(dataDir, 'secret.keys'), true);

  const store = openStore(options.store ?? 'sqlite', dataDir, { onError: (msg, err) => log.warn({ err }, msg) });
  await store.init();
  if (store.backend === 'sqlite') {
    // The data dir may pre-exist with looser modes; the database (audit log, sealed secrets) stays owner-only.
    for (const f of ['plinth.db', 'plinth.db-wal', 'plinth.db-shm']) {
      const p = join(dataDir, f);
      if (existsSync(p)) chmodSync(p, 0o600);
    }
  }
  const cleanups: (() => Promise<void> | void)[] = [() => store.close()];
  try {
    const metrics = createMetrics();
    const hub = new WatchHub(store, log, options.heartbeatMs ?? 15_000);
    await hub.start();
    cleanups.unshift(() => hub.stop());

    const identity = await IdentityService.start({
      store,
      keyring,
      issuer: options.issuer ?? 'plinth',
      tokenTtlSeconds: options.tokenTtlSeconds ?? 900,
      log,
      changes: hub,
    });
    cleanups.unshift(() => identity.close());
    const audit = new Auditor(store, log);
    const authCache = new AuthCache();
    const leases = new Leases(store, audit, log, options.leaseSweepMs ?? 1000, () => metrics.leaseExpiries.inc());
    const AUTH_KINDS = new Set(['ServiceAccount', 'Credential', 'SigningKey', 'Role', 'RoleBinding']);
    hub.onChange((ch) => {
      leases.onChange(ch);
      if (AUTH_KINDS.has(ch.resource.kind)) authCache.clear();
      metrics.revision.set(ch.revision);
    });
    const { adminTokenFile } = await bootstrap({ store, dataDir, log });
    // Bootstrap wrote through the store; make sure identity holds it before the first request.
    await hub.caughtUp(await store.currentRevision());

    // Instance TTLs for renewals come from the change stream; seed them from the current fleet.
    let after: { namespace: string; name: string } | undefined;
    for (;;) {
      const page = await store.list('Instance', { limit: 1000, after });
      for (const r of page.items) leases.onChange({ type: 'ADDED', revision: r.metadata.revision, resource: r });
      const last = page.items[page.items.length - 1];
      if (!page.more || !last) break;
      after = { namespace: last.metadata.namespace, name: last.metadata.name };
    }
    leases.start();
    cleanups.unshift(() => leases.stop());

    const retain = options.retainRevisions ?? 100_000;
    const compact = async () => {
      try {
        const current = await store.currentRevision();
        if (current - (await store.compactedRevision()) > retain) await store.compact(current - retain);
      } catch (e) {
        log.warn({ err: e }, 'compaction failed; retrying later');
      }
    };
    await compact();
    const compactTimer = setInterval(() => void compact(), Math.min(60_000, Math.max(1000, retain * 10)));
    compactTimer.unref();
    cleanups.unshift(() => clearInterval(compactTimer));

    const router = new Router();
    const settle = async (kind: string, revision: number): Promise<void> => {
      if (AUTH_KINDS.has(kind) && !(await hub.reached(revision))) {
        log.warn({ kind, revision }, 'a committed identity change is not yet enforced here: the change log could not be read');
      }
    };
    const guard = { identity, audit, settle };
    registerResourceRoutes(router, { ...guard, store, keyring });
    registerWatchRoutes(router, {
      ...guard,
      hub,
      onOpen: () => metrics.watchers.inc(),
      onClosed: (reason) => {
        metrics.watchers.dec();
        metrics.watchDrops.inc({ reason });
      },
    });
    registerRegistryRoutes(router, { ...guard, store, leases });
    registerSecretKeyRoutes(router, { ...guard, store, keyring, log });
    registerIdentityRoutes(router, { identity, audit, store, settle });
    const apm = await startApm({ router, guard, store, hub, keyring, log, metrics, dataDir, storeSpec: options.store, options: options.apm ?? {} });
    cleanups.unshift(() => apm.close());
    router.add('GET', '/healthz', (ctx) => sendJson(ctx.res, 200, { status: 'ok' }), { public: true });
    router.add(
      'GET',
      '/readyz',
      async (ctx) => {
        const revision = await store.currentRevision();
        sendJson(ctx.res, 200, { status: 'ready', revision, backend: store.backend });
      },
      { public: true },
    );
    router.add('GET', '/metrics', async (ctx) => {
      const body = await metrics.registry.metrics();
      ctx.res.writeHead(200, { 'content-type': metrics.registry.contentType });
      ctx.res.end(body);
    });

    const server: Server = createServer(
      {
        // Bounded headers and request time: slow or oversized requests from outside cannot pin the server.
        maxHeaderSize: 16 * 1024,
        headersTimeout: 20_000,
        requestTimeout: 60_000,
        keepAliveTimeout: 65_000,
      },
      createRequestHandler({ router, identity, authCache, metrics, log }),
    );
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (!socket.writable) return socket.destroy();
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
      const body = JSON.stringify({ type: 'about:blank', title: status.slice(4), status: Number(status.slice(0, 3)), code: status.startsWith('431') ? 'headers_too_large' : 'bad_request' });
      socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    });
    await new Promise<void>((ok, fail) => {
      const onError = (e: NodeJS.ErrnoException): void => fail(inherited === undefined ? e : inheritedSocketError(inherited, e));
      server.once('error', onError);
      const done = (): void => {
        server.off('error', onError);
        ok();
      };
      if (inherited === undefined) server.listen(port, host, done);
      else server.listen({ fd: inherited.fd }, done);
    });
    const addr = server.address() as AddressInfo;
    const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const url = `http://${shownHost === '0.0.0.0' ? '127.0.0.1' : shownHost}:${addr.port}`;
    log.info({ url, store: store.backend, dataDir }, 'plinth server listening');

    let closing: Promise<void> | undefined;
    return {
      url,
      port: addr.port,
      adminTokenFile,
      store,
      close: () =>
        (closing ??= (async () => {
          await hub.stop();
          await drain(server, options.drainTimeoutMs ?? DEFAULT_DRAIN_MS);
          for (const c of cleanups) await c();
        })()),
    };
  } catch (e) {
    for (const c of cleanups) await c();
    throw e;
  }
}
