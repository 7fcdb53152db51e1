import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Headers, PROTOCOL_METADATA } from '@plinth/core';
import { createService, type ControlPlaneClient, type Logger, type Service } from '@plinth/sdk';
import { getLane, isStress } from '@plinth/sdk/balancing';
import { defaultPool } from '@plinth/sdk/client';
import { buildContext, compiledTrafficOf } from '@plinth/sdk/middleware';
import type { Dispatcher } from 'undici';
import { AppProbe, checkAppHealthOptions, type AppHealthOptions } from './app-health.js';
import { planBody } from './body.js';
import { GatewayCodes } from './errors.js';
import { stripIncoming } from './identity-headers.js';
import { hardenedServer, http1Settings, listenOn, parseListen, urlOf, type AnyServer, type ServerLimits } from './listen.js';
import { clientCertOf, forwardedCert } from './client-cert.js';
import { closeAllConnections, closeIdleConnections, enableH2c, goAway, webSocketStreams } from './http2.js';
import type { TlsContext } from './tls.js';
import { hostOf, type Exchange, type Forwarder } from './proxy.js';
import { normalizePath } from './routes.js';
import { WebSocketProxy, wsRefusal } from './websocket.js';
import { DEFAULT_MAX_BODY_BYTES } from '@plinth/core';

export interface SidecarOptions {
  /** The app behind the sidecar, e.g. `http://127.0.0.1:5000`. */
  app: string;
  /**
   * How the app is spoken to: `http` (HTTP/1.1, the default) or `h2c` (cleartext HTTP/2, a gRPC server). With
   * `h2c` the ingress takes cleartext HTTP/2 beside HTTP/1.1, and the Instance says so in its metadata
   * (`plinth.dev/protocol: h2c`), so callers speak HTTP/2 to it; a TLS ingress offers HTTP/2 by ALPN instead.
   */
  appProtocol?: 'http' | 'h2c';
  /** The app's service name and version, as registered. */
  service: string;
  version: string;
  lane?: string;
  zone?: string;
  region?: string;
  weight?: number;
  metadata?: Record<string, string>;
  /** Where the app sends its outbound calls (`http://<egress>/<service>/<path>` or `Host: <service>`). */
  egress?: string;
  /** The address other services reach the ingress at; default derived from the bound one. */
  advertiseAddress?: string;
  instanceId?: string;
  leaseTtlSeconds?: number;
  /** After marking the instance draining, how long to keep serving so callers drop it first. Default 1000. */
  deregisterDelayMs?: number;
  /** Request bodies larger than this get 413 at the ingress and the egress. Default 1 MiB. */
  maxBodyBytes?: number;
  /**
   * Probe the app and register its verdict as the Instance's health: `critical` (not routed to) until a
   * probe passes and after `unhealthyThreshold` failures in a row, `passing` otherwise. Without it the
   * instance is `passing` while the sidecar runs, whatever the app does.
   */
  appHealth?: AppHealthOptions;
}

/** HTTPS on the sidecar ingress (gateway's `tls`): the loaded context, and what to do with failed handshakes. */
export interface SidecarTls {
  context: TlsContext;
  onTlsError: (err: Error, socket: Socket) => void;
}

export interface RunningSidecar {
  readonly service: Service;
  /** The ingress server when it serves TLS (its certificate is reloaded by the gateway, as the edge's). */
  readonly tlsServer: AnyServer | undefined;
  readonly ingressUrl: string;
  readonly egressUrl: string | undefined;
  close(drainTimeoutMs: number): Promise<void>;
}

/** A Host header that names a service rather than this machine. */
function serviceHost(host: string): string | undefined {
  if (host === '' || host === 'localhost' || host.startsWith('[') || /^[0-9.]+$/.test(host)) return undefined;
  return /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(host) ? host : undefined;
}

/** The sidecar options a start refuses, refused before anything runs; the app's URL and protocol. */
export function checkSidecarOptions(o: SidecarOptions): { app: URL; appProtocol: 'http' | 'h2c' } {
  const app = new URL(o.app);
  if (app.protocol !== 'http:') throw new TypeError(`sidecar app must be an http:// URL, not ${o.app}`);
  const appProtocol = o.appProtocol ?? 'http';
  if (appProtocol !== 'http' && appProtocol !== 'h2c') throw new TypeError(`sidecar appProtocol is http or h2c, not ${JSON.stringify(appProtocol)}`);
  if (o.appHealth !== undefined) checkAppHealthOptions(o.appHealth, appProtocol);
  return { app, appProtocol };
}

/**
 * Sidecar mode: the gateway in front of one app that does not run the SDK (Python, Go, …), on the same host.
 *
 * - Ingress: registered as the app's Instance (through the SDK's createService, so leases, readiness and
 *   draining are the SDK's), it runs the app's inbound policies (rate limits, concurrency, overload, fault
 *   injection) with mesh trust, then forwards to the app.
 * - Egress: the app calls `http://<egress>/<service>/<path>` (or any path with `Host: <service>`) and gets
 *   discovery, lanes, version routing, balancing, breakers, retries and deadlines from the engine. The app
 *   passes on the `traceparent`, `baggage` and `plinth-timeout-ms` it received, as with any mesh.
 */
export async function startSidecar(
  f: Forwarder,
  o: SidecarOptions,
  client: ControlPlaneClient,
  registry: { url: string; token: string },
  namespace: string,
  listen: string,
  limits: ServerLimits,
  log: Logger,
  tls?: SidecarTls,
): Promise<RunningSidecar> {
  const { app, appProtocol } = checkSidecarOptions(o);
  const appPool = defaultPool(app.origin, appProtocol, 64);
  const maxBody = o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const metadata = appProtocol === 'h2c' ? { ...o.metadata, [PROTOCOL_METADATA]: 'h2c' } : o.metadata;
  const service = createService({
    name: o.service,
    version: o.version,
    namespace,
    controlPlane: client,
    registry,
    handleSignals: false,
    deregisterDelayMs: o.deregisterDelayMs ?? 1000,
    ...(o.appHealth !== undefined ? { health: 'critical' as const } : {}),
    ...(o.lane !== undefined ? { lane: o.lane } : {}),
    ...(o.zone !== undefined ? { zone: o.zone } : {}),
    ...(o.region !== undefined ? { region: o.region } : {}),
    ...(o.weight !== undefined ? { weight: o.weight } : {}),
    ...(metadata !== undefined ? { metadata } : {}),
    ...(o.advertiseAddress !== undefined ? { advertiseAddress: o.advertiseAddress } : {}),
    ...(o.instanceId !== undefined ? { instanceId: o.instanceId } : {}),
    ...(o.leaseTtlSeconds !== undefined ? { leaseTtlSeconds: o.leaseTtlSeconds } : {}),
  });

  const ingress = (req: IncomingMessage, res: ServerResponse): void => {
    const ex = f.begin(req, res);
    serveIngress(f, ex, o.service, maxBody, appPool).catch(() => f.problem(ex, 500, GatewayCodes.internal, 'the sidecar failed to handle the request'));
  };
  const appAddress = `${app.hostname}:${app.port || '80'}`;
  const wsIngress = new WebSocketProxy(f, (req, path, query) => {
    keepMeshHeaders(f, req);
    return { service: o.service, path, query, route: undefined, identity: undefined, admit: true, direct: appAddress, timeoutMs: undefined };
  });
  const target = parseListen(listen);
  // HTTP/2 sessions live beside node's HTTP/1.1 connections (cleartext ones told apart per connection, TLS
  // ones by ALPN): the service's drain is told of them.
  let ingressServer: AnyServer | undefined;
  const sessions = appProtocol === 'h2c' || tls !== undefined ? { stopAccepting: () => ingressServer && goAway(ingressServer), closeAll: () => ingressServer && closeAllConnections(ingressServer) } : undefined;
  const bound = await service.listen(ingress, {
    ...(target.fd !== undefined ? { fd: target.fd } : { host: target.host, port: target.port }),
    upgrade: wsIngress.listener,
    ...(sessions !== undefined ? { sessions } : {}),
    // With TLS, the gateway's own hardened server (HTTP/2 by ALPN only for an HTTP/2 app: other sidecars and
    // SDK pools speak HTTP/1.1 to an instance unless told otherwise); `tls` then only makes the address https://.
    ...(tls !== undefined
      ? {
          tls: tls.context,
          createServer: (l: (req: IncomingMessage, res: ServerResponse) => void) =>
            (ingressServer = hardenedServer(l, limits, appProtocol === 'h2c' ? tls.context : { ...tls.context, ALPNProtocols: ['http/1.1'] }, tls.onTlsError)) as unknown as Server,
        }
      : {}),
  });
  if (appProtocol === 'h2c' && tls === undefined) {
    const s = (ingressServer = bound.server);
    // HTTP/2 requests go through the service's own request listener: probes, draining and in-flight counts as for HTTP/1.1.
    enableH2c(s, (req, res) => s.emit('request', req, res), http1Settings(limits), limits.http2, f.o.wheel);
  }
  if (ingressServer !== undefined) webSocketStreams(ingressServer, wsIngress.streamListener);
  let probe: AppProbe | undefined;
  if (o.appHealth !== undefined) {
    f.o.metrics.appHealth(false);
    probe = new AppProbe(appPool, o.appHealth, (healthy, r) => {
      service.setHealth(healthy ? 'passing' : 'critical');
      f.o.metrics.appHealth(healthy);
      if (healthy) log.debug('the app passes its health probe: instance passing', { service: o.service, probe: r.detail });
      else log.warn('the app fails its health probe: instance critical, callers route around it', { service: o.service, probe: r.detail });
    });
    probe.start();
  }
  let egressUrl: string | undefined;
  let egressServer: ReturnType<typeof hardenedServer> | undefined;
  let wsEgress: WebSocketProxy | undefined;
  if (o.egress !== undefined) {
    const e = parseListen(o.egress);
    const egressListener = (req: IncomingMessage, res: ServerResponse): void => {
      const ex = f.begin(req, res);
      serveEgress(f, ex, o.service, maxBody).catch(() => f.problem(ex, 500, GatewayCodes.internal, 'the sidecar failed to handle the request'));
    };
    egressServer = hardenedServer(egressListener, limits);
    // The app may speak HTTP/1.1 or cleartext HTTP/2 (a gRPC client): each connection is told apart by its first bytes.
    enableH2c(egressServer, egressListener, http1Settings(limits), limits.http2, f.o.wheel);
    const self = o.service;
    wsEgress = new WebSocketProxy(f, (req, path, query) => {
      const to = egressTarget(hostOf(req), path);
      if (to === undefined) return wsRefusal(404, GatewayCodes.routeNotFound, NAME_THE_SERVICE);
      req.headers[Headers.caller] = self;
      const context = buildContext({ method: 'GET', path: to.path, headers: req.headers }, { trust: 'mesh', traffic: compiledTrafficOf(f.o.governance), clock: f.o.wheel.clock });
      return { service: to.service, path: to.path, query, route: undefined, identity: undefined, admit: false, context, timeoutMs: undefined };
    });
    egressServer.on('upgrade', wsEgress.listener);
    webSocketStreams(egressServer, wsEgress.streamListener);
    const at = await listenOn(egressServer, e);
    egressUrl = urlOf(at.host, at.port);
  }

  return {
    service,
    tlsServer: tls !== undefined ? ingressServer : undefined,
    ingressUrl: urlOf(bound.host, bound.port, tls === undefined ? 'http' : 'https'),
    egressUrl,
    async close(drainTimeoutMs) {
      await probe?.stop();
      const egressClosed = egressServer ? new Promise<void>((r) => egressServer!.close(() => r())) : Promise.resolve();
      if (egressServer !== undefined) {
        goAway(egressServer);
        closeIdleConnections(egressServer);
      }
      await service.shutdown('gateway closing');
      await f.drained(drainTimeoutMs);
      wsIngress.closeAll();
      wsEgress?.closeAll();
      if (egressServer !== undefined) closeAllConnections(egressServer);
      await egressClosed;
      await appPool.close().catch(() => undefined);
    },
  };
}

async function serveIngress(f: Forwarder, ex: Exchange, service: string, maxBody: number, appPool: Dispatcher): Promise<void> {
  const req = ex.req;
  const url = req.url ?? '/';
  if (url.charCodeAt(0) !== 47) return f.problem(ex, 400, GatewayCodes.badRequest, 'expected a request target starting with /');
  const q = url.indexOf('?');
  const path = normalizePath(q < 0 ? url : url.slice(0, q));
  ex.path = path;
  ex.host = hostOf(req);
  ex.ip = f.clientIp(req);
  keepMeshHeaders(f, req);
  const plan = planBody(req, maxBody);
  if (plan.kind === 'tooLarge') return f.tooLarge(ex, maxBody);
  const ctx = await f.admit(ex, service, path);
  if (ctx === undefined) return;
  await f.forward(ex, service, q < 0 ? path : path + url.slice(q), ctx, plan, maxBody, undefined, appPool);
}

async function serveEgress(f: Forwarder, ex: Exchange, self: string, maxBody: number): Promise<void> {
  const req = ex.req;
  const url = req.url ?? '/';
  if (url.charCodeAt(0) !== 47) return f.problem(ex, 400, GatewayCodes.badRequest, 'expected a request target starting with /');
  const q = url.indexOf('?');
  const path = normalizePath(q < 0 ? url : url.slice(0, q));
  const query = q < 0 ? '' : url.slice(q);
  ex.host = hostOf(req);
  ex.path = path;
  const to = egressTarget(ex.host, path);
  if (to === undefined) return f.problem(ex, 404, GatewayCodes.routeNotFound, NAME_THE_SERVICE);
  // The app is this service: its calls carry its name, and the baggage it passes on is trusted as ours.
  req.headers[Headers.caller] = self;
  const ctx = buildContext({ method: ex.method, path: to.path, headers: req.headers }, { trust: 'mesh', traffic: compiledTrafficOf(f.o.governance), clock: f.o.wheel.clock });
  ex.lane = getLane(ctx.baggage);
  ex.stress = isStress(ctx.baggage);
  const plan = planBody(req, maxBody);
  if (plan.kind === 'tooLarge') return f.tooLarge(ex, maxBody);
  await f.forward(ex, to.service, to.path + query, ctx, plan, maxBody, undefined);
}

/**
 * Mesh traffic: callers name themselves and an edge gateway in front has set the identity. When the ingress
 * verifies client certificates, only a peer whose certificate verified is believed; the rest lose those
 * headers, as at the edge.
 */
function keepMeshHeaders(f: Forwarder, req: IncomingMessage): void {
  const trusted = !f.o.clientCerts || forwardedCert(clientCertOf(req), Date.now()) !== undefined;
  stripIncoming(req.headers, { keepIdentity: trusted, keepCaller: trusted });
}

const NAME_THE_SERVICE = 'name the service: http://<egress>/<service>/<path>, or Host: <service>';

/** The service an egress call names (by Host, else by the first path segment) and the path left for it. */
function egressTarget(host: string, path: string): { service: string; path: string } | undefined {
  const byHost = serviceHost(host);
  if (byHost !== undefined) return { service: byHost, path };
  const end = path.indexOf('/', 1);
  const service = serviceHost(end < 0 ? path.slice(1) : path.slice(1, end));
  return service === undefined ? undefined : { service, path: end < 0 ? '/' : path.slice(end) };
}
