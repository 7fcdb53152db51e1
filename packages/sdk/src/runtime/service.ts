/**
 * The service runtime: one call makes a Node.js process a well-behaved member of the platform.
 *
 * ```ts
 * const service = createService({ name: 'orders', version: '1.4.2', namespace: 'retail',
 *   controlPlane: { url: process.env.PLINTH_URL!, token: process.env.PLINTH_TOKEN!, cacheFile: '/var/cache/orders.json' } });
 * await service.listen(handler, { port: 8080, host: '0.0.0.0' });
 * ```
 *
 * `listen` takes a plain node:http request listener, which every common framework can hand over:
 * - express: the app is a listener: `service.listen(app)`.
 * - fastify: `await app.ready(); service.listen((req, res) => app.routing(req, res))` (fastify must not
 *   listen itself; `app.routing` is its node:http listener).
 * - hono: `import { getRequestListener } from '@hono/node-server'; service.listen(getRequestListener(app.fetch))`.
 *
 * The runtime answers `/healthz` (liveness: 200 while the process runs) and `/readyz` (200 only once the
 * instance is registered AND the control-plane snapshot is current AND it is not draining or critical; else 503 with
 * `{"ready":false,"reason":"registering|no_snapshot|draining|unhealthy"}`) before the application sees the request.
 */
import { hostname } from 'node:os';
import { HEALTH, InstanceSpec, nameError, type Health } from '@plinth/core';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { ServerOptions as TlsServerOptions } from 'node:https';
import type { BackoffOptions } from '../backoff.js';
import { createControlPlaneClient, type ControlPlaneClient } from '../control-plane-client.js';
import { TypedEmitter } from '../emitter.js';
import { controlPlaneGovernance, GOVERNANCE_KINDS, StaticGovernance, type GovernanceSource } from '../governance/source.js';
import { defaultLogger, errorMessage, type Logger } from '../logger.js';
import { createTracing, Tracing, type TracingOptions } from '../tracing/hooks.js';
import { CREDENTIAL_PREFIX, TokenSource } from '../token-source.js';
import { DrainableServer, type NotReadyReason, type UntrackedSessions, type UpgradeListener } from './drainable-server.js';
import { ALREADY_LISTENING, SERVICE_STOPPED, ServiceError } from './errors.js';
import { defaultInstanceId, derivedAddress } from './instance.js';
import { Registration } from './registration.js';
import { RegistryApi, type InstanceSpecToRegister } from './registry-api.js';

/** The kinds a service's own control-plane client holds: governance plus its configuration. */
export const SERVICE_KINDS = [...GOVERNANCE_KINDS, 'Config'] as const;

export interface ControlPlaneConnection {
  /** Base URL of a plinth server, e.g. `http://127.0.0.1:7070`. */
  url: string;
  /** A JWT, or a `plinth_…` credential. */
  token: string;
  /** Where the snapshot is persisted; lets the service start while the control plane is down. */
  cacheFile?: string;
}

export interface ServiceOptions {
  name: string;
  version: string;
  namespace: string;
  lane?: string;
  zone?: string;
  region?: string;
  weight?: number;
  metadata?: Record<string, string>;
  /**
   * The health the Instance is registered with (default `passing`); `setHealth` changes it. A `critical`
   * instance is not routed to. A sidecar that probes its app starts `critical` until the first probe passes.
   */
  health?: Health;
  /**
   * Connection details (the runtime builds, owns and closes a client holding SERVICE_KINDS of `namespace`),
   * or a client built elsewhere (which must hold GOVERNANCE_KINDS; the caller keeps owning it). Absent:
   * standalone, with no registration and governance from a StaticGovernance.
   */
  controlPlane?: ControlPlaneConnection | ControlPlaneClient;
  /**
   * Where to register when `controlPlane` is a client built elsewhere, which exposes no credentials. Without
   * it, such a service does not register (and its readiness does not wait for a registration). Ignored
   * otherwise: connection details register with the same URL and token, and a standalone service never does.
   */
  registry?: { url: string; token: string };
  /** Address others reach this instance at, e.g. 'http://127.0.0.1:8081'. Default: derived from the bound port. */
  advertiseAddress?: string;
  /** Default `${name}-${hostname}-${pid}-${random}`. */
  instanceId?: string;
  /** Default 15; renewed every ttl/3 with jitter; re-registered when the lease is lost. */
  leaseTtlSeconds?: number;
  /** Default 10000: how long a shutdown waits for requests in flight. */
  drainTimeoutMs?: number;
  /** Default 1000: after marking draining, how long to keep accepting so callers' snapshots drop us first. */
  deregisterDelayMs?: number;
  /** Default true: SIGTERM/SIGINT shut down, then exit 0 (1 if the shutdown failed; a second signal exits at once). */
  handleSignals?: boolean;
  /** Delays between failed registrations, and the owned client's reconnects. Default 250 ms .. 15 s. */
  backoff?: BackoffOptions;
  logger?: Logger;
  /**
   * Tracing for this service: spans are exported to the control plane's OTLP endpoint with the same URL and
   * token (or to `exporter` when given). `service.tracing` then goes to the middleware and the client. A
   * `Tracing` built elsewhere is used as it is. Absent: no spans (context is still propagated).
   */
  tracing?: Omit<TracingOptions, 'service' | 'namespace' | 'version' | 'region' | 'instanceId'> | Tracing;
}

export interface ListenOptions {
  /** Default 0: any free port (the registered address follows the bound one). */
  port?: number;
  /** Default '127.0.0.1'; '0.0.0.0' to be reachable from other hosts (then set advertiseAddress). */
  host?: string;
  /**
   * A listening socket the process was started with, instead of `port` and `host` (socket activation: a service
   * manager that holds the socket across restarts, so that connections wait in its backlog rather than being
   * refused). The registered address is the socket's own, unless `advertiseAddress` says otherwise.
   */
  fd?: number;
  /**
   * node:http's `upgrade` listener, for WebSockets (e.g. `(req, socket, head) => wss.handleUpgrade(req, socket,
   * head, (ws) => wss.emit('connection', ws, req))` with the `ws` package). Upgrades that arrive while the
   * service drains get 503; connections still open are closed when it stops.
   */
  upgrade?: UpgradeListener;
  /**
   * Serve HTTPS with these node:https options (`cert`, `key`; `ca` with `requestCert` for client
   * certificates). The registered address is then `https://…` and callers' pools speak TLS to it.
   */
  tls?: TlsServerOptions;
  /**
   * HTTP/2 sessions the caller serves on this server's sockets (cleartext HTTP/2 told apart from HTTP/1.1 by a
   * proxy in front of the handler): told to finish when the service stops accepting, closed when it stops.
   */
  sessions?: UntrackedSessions;
  /**
   * Builds the server around the service's request listener instead of node:http (node:https with `tls`):
   * for a proxy in front that brings its own (the gateway's sidecar: hardened, HTTP/2 over TLS). With `tls`
   * also given, the registered address is https://.
   */
  createServer?: (listener: (req: IncomingMessage, res: ServerResponse) => void) => Server;
}

export interface Listening {
  /** The address listened on (for an inherited socket, the socket's). */
  host: string;
  port: number;
  /** The address registered (or that would be): `http(s)://host:port`, or `advertiseAddress`. */
  address: string;
  /** The server (a node:https one with `tls`: its `setSecureContext` swaps in a renewed certificate). */
  server: Server;
}

export type ServiceEvent = 'registered' | 'lease_lost' | 'draining' | 'stopped' | 'health';

export interface Service {
  readonly name: string;
  readonly instanceId: string;
  /** From the control-plane client (GOVERNANCE_KINDS), scoped to the service's namespace. */
  readonly governance: GovernanceSource;
  readonly controlPlane: ControlPlaneClient | undefined;
  /** For `plinth(handler, { tracing })` and `createClient({ tracing })`; flushed on shutdown. */
  readonly tracing: Tracing | undefined;
  /** Creates the HTTP server around `handler`; the runtime answers /healthz and /readyz and counts requests for draining. */
  listen(handler: (req: IncomingMessage, res: ServerResponse) => void, opts?: ListenOptions): Promise<Listening>;
  /** Registered AND the control-plane snapshot current AND not draining AND not critical. */
  readonly ready: boolean;
  /** A snapshot is held (from the server or the cache file): governance is usable. */
  readonly started: Promise<void>;
  inFlight(): number;
  /**
   * Marks the Instance draining, waits deregisterDelayMs, stops accepting, waits for requests in flight
   * (up to drainTimeoutMs), deletes the Instance, closes the control-plane client it owns. Idempotent.
   */
  shutdown(reason?: string): Promise<void>;
  /** The health the Instance is registered with. */
  readonly currentHealth: Health;
  /**
   * Registers another health: callers stop routing to a `critical` instance and come back when it is
   * `passing` again (for a sidecar's probe of its app, or a service that knows it cannot serve).
   */
  setHealth(health: Health): void;
  on(event: ServiceEvent, listener: () => void): () => void;
}

const DEFAULTS = { leaseTtlSeconds: 15, drainTimeoutMs: 10_000, deregisterDelayMs: 1000 } as const;
/** Bound on each registry call: a renewal hanging longer than half a lease is better retried. */
const registryTimeoutMs = (ttlSeconds: number) => Math.min(10_000, Math.max(1000, ttlSeconds * 500));

export function createService(opts: ServiceOptions): Service {
  return new ServiceRuntime(opts);
}

function isClient(x: ControlPlaneConnection | ControlPlaneClient): x is ControlPlaneClient {
  return typeof (x as Partial<ControlPlaneClient>).list === 'function';
}

function check(value: string, what: 'name' | 'namespace', option: string): void {
  const msg = nameError(value, what);
  if (msg !== undefined) throw new TypeError(`${option}: ${msg}`);
}

type Events = { [K in ServiceEvent]: [] };

class ServiceRuntime implements Service {
  readonly name: string;
  readonly instanceId: string;
  readonly governance: GovernanceSource;
  readonly controlPlane: ControlPlaneClient | undefined;
  readonly started: Promise<void>;
  readonly tracing: Tracing | undefined;

  private readonly log: Logger;
  private readonly ownsClient: boolean;
  private readonly closeGovernance: () => void;
  private readonly registration: Registration | undefined;
  private readonly api: RegistryApi | undefined;
  private readonly emitter: TypedEmitter<Events>;
  private http: DrainableServer | undefined;
  private snapshotCurrent: boolean;
  private draining = false;
  private stopping: Promise<void> | undefined;
  private health: Health;
  /** The address registered, once listening. */
  private address: string | undefined;
  private removeSignalHandlers: (() => void) | undefined;

  constructor(private readonly o: ServiceOptions) {
    check(o.name, 'name', 'name');
    check(o.namespace, 'namespace', 'namespace');
    this.name = o.name;
    this.instanceId = o.instanceId ?? defaultInstanceId(o.name, hostname());
    check(this.instanceId, 'name', 'instanceId');
    const ttl = o.leaseTtlSeconds ?? DEFAULTS.leaseTtlSeconds;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 3600) throw new RangeError(`leaseTtlSeconds must be an integer in 1..3600, not ${ttl}`);
    for (const k of ['drainTimeoutMs', 'deregisterDelayMs'] as const) {
      const v = o[k];
      if (v !== undefined && !(v >= 0 && Number.isFinite(v))) throw new RangeError(`${k} must be a non-negative number, not ${v}`);
    }
    // Fail at construction, not on every registration attempt, on what the server would reject.
    const probe = InstanceSpec.safeParse(this.specFor('http://127.0.0.1:1'));
    if (!probe.success) throw new TypeError(`invalid instance: ${probe.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    if (o.advertiseAddress !== undefined && !InstanceSpec.shape.address.safeParse(o.advertiseAddress).success) {
      throw new TypeError(`advertiseAddress: not a valid address: ${o.advertiseAddress}`);
    }

    this.health = o.health ?? 'passing';
    this.log = o.logger ?? defaultLogger;
    this.emitter = new TypedEmitter((event, e) => this.log.warn(`a service '${String(event)}' listener threw`, { error: errorMessage(e) }));

    const cp = o.controlPlane;
    let registry: { url: string; token: string } | undefined;
    if (cp === undefined) {
      this.controlPlane = undefined;
      this.ownsClient = false;
      const g = new StaticGovernance();
      this.governance = g;
      this.closeGovernance = () => {};
      this.started = Promise.resolve();
      this.snapshotCurrent = true;
    } else {
      if (isClient(cp)) {
        this.controlPlane = cp;
        this.ownsClient = false;
        registry = o.registry;
      } else {
        this.controlPlane = createControlPlaneClient({
          url: cp.url,
          token: cp.token,
          kinds: SERVICE_KINDS,
          namespace: o.namespace,
          ...(cp.cacheFile !== undefined ? { cacheFile: cp.cacheFile } : {}),
          ...(o.backoff ? { backoff: o.backoff } : {}),
          logger: this.log,
        });
        this.ownsClient = true;
        registry = { url: cp.url, token: cp.token };
      }
      const g = controlPlaneGovernance(this.controlPlane, o.namespace);
      this.governance = g;
      this.closeGovernance = () => g.close();
      this.started = this.controlPlane.started;
      this.snapshotCurrent = false;
      // `ready` of the client never resolves from the cache: readiness waits for state current with the server.
      this.controlPlane.ready.then(
        () => (this.snapshotCurrent = true),
        () => {},
      );
    }

    if (registry !== undefined) {
      const base = new URL(registry.url);
      if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new TypeError(`registry url must be http(s), not ${registry.url}`);
      this.api = new RegistryApi(
        { baseUrl: base.href.replace(/\/+$/, ''), dispatcher: undefined, requestTimeoutMs: registryTimeoutMs(ttl) },
        registry.token,
        o.namespace,
        this.instanceId,
        this.log,
      );
      this.registration = new Registration({
        api: this.api,
        leaseTtlSeconds: ttl,
        backoff: o.backoff,
        logger: this.log,
        onRegistered: () => this.emitter.emit('registered'),
        onLeaseLost: () => this.emitter.emit('lease_lost'),
      });
    }

    this.tracing = tracingFor(o, cp !== undefined && !isClient(cp) ? cp : o.registry, this.instanceId);

    if (o.handleSignals ?? true) this.installSignalHandlers();
  }

  get ready(): boolean {
    return this.notReady() === undefined;
  }

  inFlight(): number {
    return this.http?.inFlightCount ?? 0;
  }

  on(event: ServiceEvent, listener: () => void): () => void {
    return this.emitter.on(event, listener);
  }

  async listen(handler: (req: IncomingMessage, res: ServerResponse) => void, opts: ListenOptions = {}): Promise<Listening> {
    if (this.stopping) throw new ServiceError(SERVICE_STOPPED, `service ${this.name} is shutting down`);
    if (this.http) throw new ServiceError(ALREADY_LISTENING, `service ${this.name} is already listening`);
    const http = new DrainableServer(handler, () => this.notReady(), opts.upgrade, opts.tls, opts.sessions, opts.createServer);
    this.http = http;
    let host = opts.host ?? '127.0.0.1';
    let port: number;
    try {
      ({ host, port } = await http.listen(opts.port ?? 0, host, opts.fd));
    } catch (e) {
      this.http = undefined;
      throw e;
    }
    const address = this.o.advertiseAddress ?? derivedAddress(host, port, opts.tls === undefined ? 'http' : 'https');
    this.address = address;
    const registration = this.registration;
    if (registration) {
      // Registered only once a snapshot is held: a caller that finds us can count on our governance.
      this.started.then(
        () => registration.start(this.specFor(address)),
        () => {},
      );
    }
    return { host, port, address, server: http.server };
  }

  get currentHealth(): Health {
    return this.health;
  }

  /** Sent at once when registered (retried as lease renewals are); before that, the registration carries it. */
  setHealth(health: Health): void {
    if (!HEALTH.includes(health)) throw new TypeError(`health must be one of ${HEALTH.join(', ')}, not ${String(health)}`);
    if (health === this.health) return;
    this.health = health;
    this.emitter.emit('health');
    if (this.registration !== undefined && this.address !== undefined) this.registration.update(this.specFor(this.address));
  }

  shutdown(reason = 'shutdown'): Promise<void> {
    this.stopping ??= this.stop(reason);
    return this.stopping;
  }

  private notReady(): NotReadyReason | undefined {
    if (this.draining) return 'draining';
    if (!this.snapshotCurrent) return 'no_snapshot';
    if (this.registration && !this.registration.registered) return 'registering';
    if (this.health === 'critical') return 'unhealthy';
    return undefined;
  }

  private specFor(address: string): InstanceSpecToRegister {
    const o = this.o;
    return {
      service: o.name,
      version: o.version,
      address,
      health: this.health,
      draining: false,
      leaseTtlSeconds: o.leaseTtlSeconds ?? DEFAULTS.leaseTtlSeconds,
      ...(o.lane !== undefined ? { lane: o.lane } : {}),
      ...(o.zone !== undefined ? { zone: o.zone } : {}),
      ...(o.region !== undefined ? { region: o.region } : {}),
      ...(o.weight !== undefined ? { weight: o.weight } : {}),
      ...(o.metadata !== undefined ? { metadata: o.metadata } : {}),
    };
  }

  private async stop(reason: string): Promise<void> {
    this.draining = true;
    this.log.debug('shutting down', { service: this.name, instance: this.instanceId, reason });
    this.emitter.emit('draining');
    try {
      await this.registration?.markDraining();
      const http = this.http;
      if (http) {
        const delay = this.o.deregisterDelayMs ?? DEFAULTS.deregisterDelayMs;
        if (delay > 0) await new Promise((r) => setTimeout(r, delay));
        http.stopAccepting();
        const drainMs = this.o.drainTimeoutMs ?? DEFAULTS.drainTimeoutMs;
        if (!(await http.drained(drainMs))) {
          this.log.warn('requests still in flight after the drain timeout; closing their connections', { inFlight: http.inFlightCount, drainTimeoutMs: drainMs });
        }
        await http.close();
      }
      await this.registration?.stop();
    } finally {
      this.api?.close();
      // Spans of the last requests are flushed before the process goes.
      if (this.tracing !== undefined) await this.tracing.shutdown().catch((e: unknown) => this.log.warn('span export on shutdown failed', { error: errorMessage(e) }));
      this.closeGovernance();
      if (this.ownsClient) await this.controlPlane?.close();
      this.removeSignalHandlers?.();
      this.emitter.emit('stopped');
    }
  }

  private installSignalHandlers(): void {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        this.log.warn(`${signal} again during shutdown; exiting now`);
        process.exit(1);
      }
      signalled = true;
      this.shutdown(signal).then(
        () => process.exit(0),
        (e: unknown) => {
          this.log.warn('shutdown failed', { error: errorMessage(e) });
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    this.removeSignalHandlers = () => {
      // A signal-driven stop still owes its process.exit; only a shutdown() called in code gives the signals back.
      if (signalled) return;
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    };
  }
}

function tracingFor(o: ServiceOptions, cp: { url: string; token: string } | undefined, instanceId: string): Tracing | undefined {
  const t = o.tracing;
  if (t === undefined || t instanceof Tracing) return t;
  // A `plinth_…` credential is exchanged for short-lived JWTs, as every other call of the SDK does.
  const token = (c: { url: string; token: string }) =>
    c.token.startsWith(CREDENTIAL_PREFIX) ? new TokenSource({ transport: { baseUrl: c.url.replace(/\/+$/, ''), dispatcher: undefined, requestTimeoutMs: 10_000 }, token: c.token, logger: o.logger ?? defaultLogger }) : c.token;
  const exporter = t.exporter ?? (cp !== undefined ? { url: cp.url, token: token(cp) } : undefined);
  return createTracing({
    ...t,
    ...(exporter !== undefined ? { exporter } : {}),
    service: o.name,
    namespace: o.namespace,
    version: o.version,
    instanceId,
    ...(o.region !== undefined ? { region: o.region } : {}),
  });
}
