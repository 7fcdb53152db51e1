/**
 * `startGateway`: the edge (or sidecar) HTTP proxy on the SDK's governance engine.
 *
 * Deploying without failed requests. Node 20's http has no SO_REUSEPORT, so two processes cannot share one
 * port on their own. Either run two gateways behind whatever spreads connections over them (a load balancer
 * or a Kubernetes Service, with readiness on the admin `/readyz`), start the new one, wait until it is ready,
 * then `close()` (SIGTERM in the CLI) the old one; or, on one host, serve from workers (workers.ts): their
 * primary holds the listening socket and replaces them one by one. A drain reports not ready, stops
 * accepting, closes idle kept-alive connections, serves what still arrives with `connection: close` and lets
 * requests in flight finish, so clients reconnect elsewhere.
 */
import type { IncomingMessage, ServerResponse, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RoleBindingSpec } from '@plinth/core';
import { controlPlaneGovernance, createControlPlaneClient, GOVERNANCE_KINDS, isControlPlaneError, type ControlPlaneClient, type GovernanceSource, type Logger } from '@plinth/sdk';
import { sharedWheel, type TimerWheel } from '@plinth/sdk/resilience';
import type { Tracing } from '@plinth/sdk/tracing';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import { createAccessLog, NO_ACCESS_LOG, type AccessLog, type AccessLogOptions } from './access-log.js';
import { Authenticator, RoleIndex, type AuthOptions } from './auth.js';
import { handshakeRefusal } from './client-cert.js';
import { GatewayCodes, problemBody } from './errors.js';
import { clientFeed, type ResourceFeed } from './feed.js';
import { compileRequestId, type RequestIdOptions } from './request-id.js';
import { hardenedServer, http1Settings, listenOn, parseListen, urlOf, type AnyServer, type ServerLimits } from './listen.js';
import { ExternalAuthorizer } from './external-auth.js';
import { closeAllConnections, closeIdleConnections, enableH2c, goAway, openConnections, webSocketStreams } from './http2.js';
import { GatewayMetrics } from './metrics.js';
import { MIRROR_MAX_IN_FLIGHT } from './mirror.js';
import { OidcVerifier, type OidcOptions } from './oidc.js';
import { EdgeProxy, Forwarder } from './proxy.js';
import { closeAdmin, jsonAnswer, listenAdmin, matchAnswer, problemAnswer, routesAnswer, type AdminAnswer } from './admin-routes.js';
import { LiveRoutes } from './routes.js';
import { checkSidecarOptions, startSidecar, type RunningSidecar, type SidecarOptions } from './sidecar.js';
import { loadTls, watchTls, type TlsOptions, type TlsWatcher } from './tls.js';
import { UpstreamTls, type UpstreamTlsOptions } from './upstream-tls.js';
import { edgeWebSocketResolver, WebSocketProxy } from './websocket.js';

/** The kinds the gateway's control-plane client holds. */
export const GATEWAY_KINDS = [...GOVERNANCE_KINDS, 'Route', 'RoleBinding'] as const;

export interface GatewayControlPlane {
  url: string;
  /** A JWT or a `plinth_…` credential; the identity needs list/watch on GATEWAY_KINDS in the namespace. */
  token: string;
  /** Where the snapshot is persisted: the gateway starts and routes from it while the control plane is down. */
  cacheFile?: string;
}

export interface GatewayOptions {
  /** The namespace whose Routes, rules and instances the gateway serves. */
  namespace: string;
  /** Either a control plane (the normal case) … */
  controlPlane?: GatewayControlPlane;
  /** … or sources set by hand (tests, static setups): governance, Routes and RoleBindings. */
  governance?: GovernanceSource;
  routes?: ResourceFeed;
  roleBindings?: ResourceFeed<RoleBindingSpec>;
  /** JWT and API-key verification; `serverUrl` defaults to the control plane's URL. */
  identity?: Partial<AuthOptions>;
  /**
   * `host:port` of the proxy (edge) or of the sidecar ingress. Default 127.0.0.1:8080. Or a listening socket the
   * process was started with: `fd:N`, `systemd` or `systemd:NAME` (socket activation, see `parseListen`).
   */
  listen?: string;
  /** `host:port` (or an inherited socket, as `listen`) of `/metrics`, `/healthz`, `/readyz`. None when absent. */
  adminListen?: string;
  /**
   * Terminate TLS on the proxy listener or the sidecar ingress: PEM files, reloaded when they change. `url` is
   * then https://, and upstreams see `X-Forwarded-Proto: https`. At the edge, HTTP/2 is offered beside
   * HTTP/1.1 unless `tls.http2` is false (upstreams are reached over HTTP/1.1 unless `upstreamTls.http2`);
   * the sidecar ingress serves HTTP/1.1 (and HTTP/2 for an app of `appProtocol` h2c) and registers its https://
   * address. With `tls.clientCa`, client certificates are verified
   * (mutual TLS): routes of auth mode mtls take them as the caller's identity, a sidecar believes identity
   * headers only from a verified peer, and a verified one is passed on in `x-forwarded-client-cert`. Plain
   * HTTP when absent.
   */
  tls?: TlsOptions;
  /**
   * Cleartext HTTP/2 with prior knowledge (h2c) on the plain proxy listener, beside HTTP/1.1: for gRPC and
   * HTTP/2 clients behind a TLS-terminating load balancer. Each connection is told apart by its first bytes.
   * Edge mode without `tls` only. Default false.
   */
  h2c?: boolean;
  /**
   * TLS to instances registered with an `https://` address: the CA bundle they are verified against, the
   * client certificate presented to them (mutual TLS between sidecars), and whether their certificate must
   * name their host or a SPIFFE ID. Files reloaded when they change. Without it, https upstreams are
   * verified against the system's roots by hostname.
   */
  upstreamTls?: UpstreamTlsOptions;
  /** The gateway's name: `plinth-caller` upstream, matched by rules' `callers`. Default `gateway` (sidecar: its service). */
  name?: string;
  /** Proxies in front whose X-Forwarded-For / Forwarded are believed: true = 1 hop. Default none. */
  trustProxy?: boolean | number;
  /**
   * A request ID (`x-request-id`, or `header`) per request: sent upstream, on every answer, in the access log.
   * One that came with the request is kept behind `trustProxy` at the edge and always in sidecar mode; else a
   * new UUID. Default off.
   */
  requestId?: boolean | RequestIdOptions;
  /** pino JSON lines; default to stdout. false: none. */
  accessLog?: false | AccessLogOptions;
  /** Registry for the gateway's metrics; default a new one, served on the admin listener. */
  metrics?: Registry;
  /** Hop spans: a SERVER span per request (not at the sidecar egress) and a CLIENT span per upstream try, the upstream's parent. */
  tracing?: Tracing;
  /**
   * How many worker processes serve as this one gateway (`plinth gateway --workers`, workers.ts): each counts
   * 1/n of every local rate limit and inbound concurrency limit, so the gateway as a whole keeps the rules'
   * figures. Default 1.
   */
  processes?: number;
  /** For FaultTolerance rate limits with limitMode global. */
  redis?: Redis;
  zone?: string;
  /** Budget of a call with no route timeout, timeout rule or incoming deadline. Default 30 s. */
  defaultTimeoutMs?: number;
  /**
   * A Route's `streamIdleTimeoutMs` for routes without one, and for a sidecar's traffic (which has no
   * routes): the deadline then bounds each exchange up to its answer's head, and the answer's body is cut
   * only after this long without a byte either way. Default none: the deadline bounds the whole exchange.
   */
  streamIdleTimeoutMs?: number;
  /** How the keys of OpenID providers (routes of auth mode oidc) are fetched and cached. */
  oidc?: OidcOptions;
  /** Shadow copies (Route `mirror`) in flight at once; past it copies are skipped and counted. Default 1024. */
  mirrorMaxInFlight?: number;
  /** undici connections per upstream instance. Default 64. */
  connectionsPerEndpoint?: number;
  /** How long close() waits for requests in flight. Default 10 s. */
  drainTimeoutMs?: number;
  /**
   * A proxied WebSocket with no traffic either way for this long is closed (clients keep theirs alive with
   * pings). Default 300 s, as Envoy's stream idle timeout; 0 keeps idle connections forever.
   */
  websocketIdleTimeoutMs?: number;
  /** How long startup waits for a first snapshot (server or cache file). Default 30 s. */
  startTimeoutMs?: number;
  server?: ServerLimits;
  /** Sidecar mode: in front of one app instead of routing by Route. */
  sidecar?: SidecarOptions;
  wheel?: TimerWheel;
  logger?: Logger;
}

export interface Gateway {
  /** The proxy (edge) or the sidecar ingress. */
  readonly url: string;
  readonly adminUrl: string | undefined;
  /** Sidecar mode with an egress port. */
  readonly egressUrl: string | undefined;
  readonly governance: GovernanceSource;
  readonly controlPlane: ControlPlaneClient | undefined;
  /** Requests being served. */
  inFlight(): number;
  /** The gateway's metrics, served on the admin listener (and gathered by a supervising primary, workers.ts). */
  readonly registry: Registry;
  /** The admin listener's answer to a path and query (`/readyz`, `/routes/match?path=/x`), listener or not. */
  admin(target: string): Promise<AdminAnswer>;
  /** Graceful: not ready, stop accepting, finish requests in flight (up to drainTimeoutMs), then close everything. Idempotent. */
  close(): Promise<void>;
}

const noopLogger: Logger = { warn: () => {}, debug: () => {} };
const EMPTY_FEED: ResourceFeed = { version: 0, list: () => [], onChange: () => () => {} };

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(what)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Option combinations no gateway can run with. */
function checkCombinations(o: GatewayOptions): void {
  // A socket activation that did not happen (no LISTEN_FDS, another process's LISTEN_PID) is said before anything starts.
  for (const l of [o.listen, o.adminListen, o.sidecar?.egress]) if (l !== undefined) parseListen(l);
  compileRequestId(o.requestId, false);
  if (o.sidecar?.appProtocol === 'h2c' && o.tls?.http2 === false) throw new TypeError('startGateway: sidecar appProtocol h2c needs HTTP/2 on the ingress: tls.http2 must not be false');
  if (o.h2c === true && o.sidecar !== undefined) throw new TypeError('startGateway: h2c is for the edge listener; a sidecar takes cleartext HTTP/2 on its ingress with sidecar.appProtocol h2c');
  if (o.h2c === true && o.tls !== undefined) throw new TypeError('startGateway: h2c is cleartext HTTP/2; with tls, HTTP/2 is offered through ALPN (tls.http2)');
  if (o.sidecar !== undefined) checkSidecarOptions(o.sidecar);
}

/** A control-plane client holding its first snapshot (from the server, or the cache file while it is down). */
async function firstSnapshot(cp: GatewayControlPlane, namespace: string, startTimeoutMs: number | undefined, log: Logger, refusalEnds = false): Promise<ControlPlaneClient> {
  const c = createControlPlaneClient({ url: cp.url, token: cp.token, kinds: GATEWAY_KINDS, namespace, ...(cp.cacheFile !== undefined ? { cacheFile: cp.cacheFile } : {}), logger: log });
  const ms = startTimeoutMs ?? 30_000;
  // A start waits out a refusal (the credential may be on its way); a check reports it at once.
  let off = (): void => {};
  const refused = new Promise<never>((_, reject) => {
    if (!refusalEnds) return;
    off = c.on('syncFailed', ({ error }) => {
      if (isTokenRefusal(error)) reject(error);
    });
  });
  try {
    await withTimeout(Promise.race([c.started, refused]), ms, `no snapshot from ${cp.url} within ${ms} ms (and no cache file to start from)`);
  } catch (e) {
    await c.close();
    throw e;
  } finally {
    off();
  }
  return c;
}

/** The control plane refused the gateway's token (401) or its rights (403). */
export function isTokenRefusal(e: unknown): boolean {
  return isControlPlaneError(e) && (e.status === 401 || e.status === 403);
}

/** What `checkGateway` found. */
export interface GatewayCheck {
  /** The Routes of the namespace the edge would serve; none for a sidecar, which routes by service name. */
  readonly routes: number;
  /** Routes that cannot be compiled, with why: a running gateway ignores them (and warns). */
  readonly routeErrors: readonly string[];
}

/**
 * `plinth gateway --check`, as `nginx -t`: reads every option and file a start would (option combinations,
 * TLS pairs and CA bundles, the sidecar's app options) and takes a first snapshot with the token given (the
 * cache file when the control plane is down), then compiles the Routes, without listening, registering or
 * serving. Throws what a start would throw.
 */
export async function checkGateway(o: GatewayOptions): Promise<GatewayCheck> {
  if ((o.controlPlane === undefined) === (o.governance === undefined)) throw new TypeError('checkGateway: give either controlPlane or governance');
  checkCombinations(o);
  if (o.tls !== undefined) loadTls(o.tls);
  if (o.upstreamTls !== undefined) UpstreamTls.load(o.upstreamTls).close();
  const client = o.controlPlane !== undefined ? await firstSnapshot(o.controlPlane, o.namespace, o.startTimeoutMs, o.logger ?? noopLogger, true) : undefined;
  try {
    if (o.sidecar !== undefined) return { routes: 0, routeErrors: [] };
    const feed = client !== undefined ? clientFeed(client, 'Route', o.namespace) : undefined;
    const table = new LiveRoutes(feed ?? o.routes ?? EMPTY_FEED).table;
    feed?.close();
    return { routes: table.routes.length, routeErrors: table.errors };
  } finally {
    await client?.close();
  }
}

export async function startGateway(o: GatewayOptions): Promise<Gateway> {
  if ((o.controlPlane === undefined) === (o.governance === undefined)) throw new TypeError('startGateway: give either controlPlane or governance');
  const log = o.logger ?? noopLogger;
  checkCombinations(o);
  // Before the control plane: a bad certificate should fail at once, not after the first snapshot.
  const tlsContext = o.tls !== undefined ? loadTls(o.tls) : undefined;
  const clientCerts = tlsContext?.requestCert === true;
  const upstreamTls = o.upstreamTls !== undefined ? UpstreamTls.load(o.upstreamTls) : undefined;
  const closers: (() => Promise<void> | void)[] = [];

  let client: ControlPlaneClient | undefined;
  let governance: GovernanceSource;
  let routesFeed: ResourceFeed;
  let bindings: ResourceFeed<RoleBindingSpec> | undefined;
  if (o.controlPlane !== undefined) {
    const c = (client = await firstSnapshot(o.controlPlane, o.namespace, o.startTimeoutMs, log));
    closers.push(() => c.close());
    const g = controlPlaneGovernance(c, o.namespace);
    const rf = clientFeed(c, 'Route', o.namespace);
    const bf = clientFeed<RoleBindingSpec>(c, 'RoleBinding', o.namespace);
    closers.push(() => g.close(), () => rf.close(), () => bf.close());
    governance = g;
    routesFeed = rf;
    bindings = bf;
  } else {
    governance = o.governance!;
    routesFeed = o.routes ?? EMPTY_FEED;
    bindings = o.roleBindings;
  }

  const sidecar = o.sidecar;
  const self = o.name ?? sidecar?.service ?? 'gateway';
  const routes = new LiveRoutes(routesFeed, (errors) => log.warn('some Routes cannot be compiled and are ignored', { errors: errors.join('; ') }));
  const metrics = new GatewayMetrics({ ...(o.metrics ? { registry: o.metrics } : {}), governance, services: () => routes.table.services() });
  const accessLog: AccessLog = o.accessLog === false ? NO_ACCESS_LOG : createAccessLog(o.accessLog ?? {});
  metrics.accessLogDropped(() => accessLog.dropped);
  const wheel = o.wheel ?? sharedWheel;
  const trustProxy = o.trustProxy === true ? 1 : o.trustProxy === false || o.trustProxy === undefined ? 0 : o.trustProxy;
  const forwarder = new Forwarder({
    self,
    governance,
    wheel,
    metrics,
    accessLog,
    trust: sidecar ? 'mesh' : 'edge',
    trustIdentityHeaders: sidecar !== undefined,
    injectFaults: sidecar !== undefined,
    trustProxy,
    clientCerts,
    connectionsPerEndpoint: o.connectionsPerEndpoint ?? 64,
    upstreamTls,
    defaultTimeoutMs: o.defaultTimeoutMs ?? 30_000,
    streamIdleMs: o.streamIdleTimeoutMs ?? 0,
    mirrorMaxInFlight: o.mirrorMaxInFlight ?? MIRROR_MAX_IN_FLIGHT,
    websocketIdleTimeoutMs: o.websocketIdleTimeoutMs ?? 300_000,
    tracing: o.tracing,
    redis: o.redis,
    zone: o.zone,
    processes: o.processes ?? 1,
    requestId: compileRequestId(o.requestId, sidecar !== undefined || trustProxy > 0),
  });

  const listen = o.listen ?? '127.0.0.1:8080';
  let edgeServer: AnyServer | undefined;
  let tlsWatcher: TlsWatcher | undefined;
  let websockets: WebSocketProxy | undefined;
  let running: RunningSidecar | undefined;
  let url: string;
  let stopping = false;
  /** The drain is over: what still arrives would be cut by the connections' close, so it is refused. */
  let drained = false;
  try {
    if (clientCerts) metrics.mtlsRefusals();
    if (sidecar !== undefined) {
      if (client === undefined || o.controlPlane === undefined) throw new TypeError('startGateway: sidecar mode needs a controlPlane (it registers the app)');
      const sidecarTls = tlsContext !== undefined ? { context: tlsContext, onTlsError: tlsFailureHandler(metrics, log, clientCerts) } : undefined;
      running = await startSidecar(forwarder, sidecar, client, { url: o.controlPlane.url, token: o.controlPlane.token }, o.namespace, listen, o.server ?? {}, log, sidecarTls);
      url = running.ingressUrl;
    } else {
      const serverUrl = o.identity?.serverUrl ?? o.controlPlane?.url;
      const roles = bindings ? new RoleIndex(bindings) : undefined;
      const auth = serverUrl !== undefined ? new Authenticator({ ...o.identity, serverUrl }, roles) : undefined;
      const external = new ExternalAuthorizer(forwarder.engine, forwarder.pools, forwarder, wheel);
      const edgeOptions = { routes, auth, oidc: new OidcVerifier(o.oidc), roles, clientCerts, external };
      const edge = new EdgeProxy(forwarder, edgeOptions);
      const listener = edge.listener;
      const serve = (req: IncomingMessage, res: ServerResponse): void => {
        // Draining, a request still arriving (on a connection accepted just before the listener closed, or one
        // kept alive) is served with `connection: close`: refusing it would fail a client that did nothing wrong.
        if (drained) return shuttingDown(res);
        listener(req, res);
      };
      if (tlsContext === undefined) {
        const plain = hardenedServer(serve, o.server);
        if (o.h2c === true) enableH2c(plain, serve, http1Settings(o.server), o.server?.http2, wheel);
        edgeServer = plain;
      } else {
        edgeServer = hardenedServer(serve, o.server, tlsContext, tlsFailureHandler(metrics, log, clientCerts));
      }
      const ws = (websockets = new WebSocketProxy(forwarder, edgeWebSocketResolver(routes, edgeOptions, metrics, (req) => forwarder.clientIp(req))));
      metrics.websockets(() => ws.size);
      edgeServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        if (stopping) return void socket.end(SHUTTING_DOWN_RAW);
        ws.listener(req, socket, head);
      });
      webSocketStreams(edgeServer, (req, res) => {
        if (stopping) return shuttingDown(res as unknown as ServerResponse);
        ws.streamListener(req, res);
      });
      const { host, port } = await listenOn(edgeServer, parseListen(listen));
      url = urlOf(host, port, tlsContext !== undefined ? 'https' : 'http');
    }
    const tlsServer = running !== undefined ? running.tlsServer : edgeServer;
    if (o.tls !== undefined && tlsContext !== undefined && tlsServer !== undefined && 'setSecureContext' in tlsServer) {
      const s = tlsServer;
      const t = o.tls;
      // A renewed pair applies to new connections; those open keep the certificate they shook hands with.
      tlsWatcher = watchTls(
        t,
        tlsContext,
        (ctx) => {
          s.setSecureContext(ctx);
          log.debug('TLS certificate reloaded', { cert: t.cert, ...(t.clientCa !== undefined ? { clientCa: t.clientCa } : {}) });
        },
        (e) =>
          log.warn(t.clientCa === undefined ? 'the changed TLS certificate or key cannot be used; still serving the previous pair' : 'the changed TLS certificate, key or client CA bundle cannot be used; still serving the previous ones', {
            error: e.message,
          }),
      );
    }
  } catch (e) {
    await forwarder.close();
    for (const c of closers.reverse()) await c();
    throw e;
  }

  let adminServer: Server | undefined;
  let adminUrl: string | undefined;
  let snapshotCurrent = client === undefined;
  client?.ready.then(
    () => (snapshotCurrent = true),
    () => {},
  );
  const admin = async (target: string): Promise<AdminAnswer> => {
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    if (path === '/metrics') return { status: 200, contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
    if (path === '/healthz') return jsonAnswer(200, '{"ok":true}');
    if (path === '/readyz') {
      const reason = stopping ? 'draining' : !snapshotCurrent ? 'no_snapshot' : running !== undefined && !running.service.ready ? 'registering' : undefined;
      return reason === undefined ? jsonAnswer(200, '{"ready":true}') : jsonAnswer(503, `{"ready":false,"reason":"${reason}"}`);
    }
    // The edge's route table; a sidecar routes by service name and has none.
    if (!sidecar && path === '/routes') return routesAnswer(routes);
    if (!sidecar && path === '/routes/match') return matchAnswer(routes, new URLSearchParams(q < 0 ? '' : target.slice(q + 1)));
    return problemAnswer(GatewayCodes.routeNotFound, 404, `admin paths: /metrics, /healthz, /readyz${sidecar ? '' : ', /routes, /routes/match'}`);
  };
  if (o.adminListen !== undefined) {
    try {
      ({ server: adminServer, url: adminUrl } = await listenAdmin(o.adminListen, admin));
    } catch (e) {
      await forwarder.close();
      tlsWatcher?.close();
      edgeServer?.close();
      for (const c of closers.reverse()) await c();
      throw e;
    }
  }

  // Watched once the gateway is up: a failed start leaves no watcher behind.
  if (upstreamTls !== undefined) {
    closers.push(() => upstreamTls.close());
    const files = { ...(o.upstreamTls?.ca !== undefined ? { ca: o.upstreamTls.ca } : {}), ...(o.upstreamTls?.cert !== undefined ? { cert: o.upstreamTls.cert } : {}) };
    upstreamTls.watch(
      () => log.debug('upstream TLS files reloaded', files),
      (e) => log.warn('the changed upstream TLS files cannot be used; new upstream connections still use the previous ones', { error: e.message }),
    );
  }

  const drainMs = o.drainTimeoutMs ?? 10_000;
  let closing: Promise<void> | undefined;
  const doClose = async (): Promise<void> => {
    stopping = true;
    forwarder.draining = true;
    tlsWatcher?.close();
    if (running !== undefined) await running.close(drainMs);
    if (edgeServer !== undefined) {
      const s = edgeServer;
      const closed = new Promise<void>((r) => s.close(() => r()));
      // HTTP/2 connections are told with a GOAWAY: no new streams, the open ones finish.
      goAway(s);
      closeIdleConnections(s);
      // Connections whose request is answering close once it is done; idle ones now and after each answer.
      const sweep = setInterval(() => closeIdleConnections(s), 50);
      const deadline = Date.now() + drainMs;
      let done = await forwarder.drained(drainMs);
      // A connection accepted just before the listener closed may not have sent its request yet (node counts it
      // active, not idle): it gets a moment to, and what it sends is served like a request in flight. With
      // workers sharing the port, the kernel hands connections to a draining one until its listener is closed.
      const graceEnd = Math.min(deadline, Date.now() + FRESH_CONNECTION_GRACE_MS);
      while (done && openConnections(s) > 0 && Date.now() < graceEnd) {
        await sleep(20);
        done = await forwarder.drained(Math.max(0, deadline - Date.now()));
      }
      drained = true;
      clearInterval(sweep);
      if (!done) log.warn('requests still in flight after the drain timeout; closing their connections', { inFlight: forwarder.inFlight, drainTimeoutMs: drainMs });
      // A WebSocket has no "last answer" to end on: once requests are drained, its clients reconnect elsewhere.
      websockets?.closeAll();
      closeAllConnections(s);
      await closed;
    }
    await forwarder.close();
    if (adminServer !== undefined) await closeAdmin(adminServer);
    for (const c of closers.reverse()) await c();
    await accessLog.close();
  };

  return {
    url,
    adminUrl,
    egressUrl: running?.egressUrl,
    governance,
    controlPlane: client,
    inFlight: () => forwarder.inFlight,
    registry: metrics.registry,
    admin,
    close: () => (closing ??= doClose()),
  };
}

/** A failed TLS handshake on a listener: counted as a client-certificate refusal or a handshake failure, and logged. */
function tlsFailureHandler(metrics: GatewayMetrics, log: Logger, clientCerts: boolean): (err: NodeJS.ErrnoException, socket: Socket) => void {
  const tlsFailed = metrics.tlsHandshakeFailures();
  return (err, socket) => {
    const refusal = clientCerts ? handshakeRefusal(err, socket as TLSSocket) : undefined;
    if (refusal !== undefined) {
      metrics.mtlsRefused(refusal);
      log.debug('client certificate refused at the TLS handshake', { reason: refusal, code: String((socket as TLSSocket).authorizationError ?? err.code ?? err.message), remoteAddress: socket.remoteAddress });
      return;
    }
    tlsFailed(err.code);
    log.debug('TLS handshake failed', { code: err.code ?? err.message, remoteAddress: socket.remoteAddress });
  };
}

/** How long a drain waits for connections that were accepted but have not sent a request yet. */
const FRESH_CONNECTION_GRACE_MS = 1000;

const SHUTTING_DOWN = problemBody(GatewayCodes.unavailable, 503, 'this gateway is shutting down; retry');
const SHUTTING_DOWN_RAW =
  `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(SHUTTING_DOWN)}\r\n` +
  `connection: close\r\nretry-after: 0\r\n\r\n${SHUTTING_DOWN}`;

/** A request on a kept-alive connection after close() began: refused so the client retries elsewhere. */
function shuttingDown(res: ServerResponse): void {
  res.writeHead(503, { 'content-type': 'application/problem+json', 'content-length': Buffer.byteLength(SHUTTING_DOWN), connection: 'close', 'retry-after': '0' });
  res.end(SHUTTING_DOWN);
}
