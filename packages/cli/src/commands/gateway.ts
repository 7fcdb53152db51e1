import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { GatewayOptions } from '@plinth/gateway';
import { resolveConnection, defaultNamespace } from '../config.js';
import { CliError, ExitCode, UsageError } from '../errors.js';
import { note, out, runUntilSignal } from './common.js';

interface GatewayFlags {
  listen: string;
  admin?: string;
  namespace?: string;
  cacheFile?: string;
  trustProxy?: string;
  requestId?: string | true;
  accessLog: boolean;
  sidecar?: boolean;
  app?: string;
  service?: string;
  appVersion?: string;
  lane?: string;
  egress?: string;
  traceSample?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  tlsClientCert?: string;
  http2: boolean;
  h2c?: boolean;
  advertise?: string;
  appProtocol?: string;
  appHealth?: string;
  appHealthInterval?: string;
  streamIdleTimeout?: string;
  upstreamCa?: string;
  upstreamCert?: string;
  upstreamKey?: string;
  upstreamServerIdentity?: string;
  upstreamTrustDomains?: string;
  upstreamHttp2?: boolean;
  workers?: string;
  check?: boolean;
}

const HOST_PORT = /^(\[[^\]]+\]|[^:]*):\d+$/;
/** A listening socket the gateway was started with: `fd:N`, or one passed by systemd's socket activation. */
const INHERITED = /^(fd:\d+|systemd(:.+)?)$/;

export function registerGateway(program: Command): void {
  program
    .command('gateway')
    .description('run the edge gateway (or, with --sidecar, a sidecar in front of one app) until SIGINT/SIGTERM')
    .option('--listen <host:port>', 'proxy address (the ingress in sidecar mode); fd:N or systemd[:NAME] for a listening socket the gateway was started with (socket activation)', '127.0.0.1:8080')
    .option('--admin <host:port>', 'admin address: /metrics, /healthz, /readyz')
    .option('--tls-cert <file>', 'serve HTTPS (the sidecar ingress too, which then registers an https:// address): PEM certificate (chain) file, reloaded when it changes; with --tls-key')
    .option('--tls-key <file>', 'serve HTTPS: PEM private key file of --tls-cert')
    .option('--tls-client-ca <file>', 'with --tls-cert: verify client certificates (mutual TLS) against this PEM CA bundle, reloaded when it changes')
    .option('--tls-client-cert <mode>', 'with --tls-client-ca: "request" (default: routes of auth mode mtls decide; a sidecar believes identity headers only from verified peers) or "require" (no handshake without a valid certificate)')
    .option('--upstream-ca <file>', 'verify https:// upstream instances against this PEM CA bundle instead of the system roots; reloaded when it changes')
    .option('--upstream-cert <file>', 'present this PEM client certificate to https:// upstreams (mutual TLS); with --upstream-key, reloaded when it changes')
    .option('--upstream-key <file>', 'PEM private key of --upstream-cert')
    .option('--upstream-server-identity <mode>', '"hostname" (default): an upstream certificate must name the address\'s host; "spiffe": it must carry one SPIFFE ID instead')
    .option('--upstream-http2', 'offer HTTP/2 to https:// upstreams (ALPN h2), as gRPC services need')
    .option('--upstream-trust-domains <list>', 'with --upstream-server-identity spiffe: comma-separated trust domains accepted (default any)')
    .option('--no-http2', 'with --tls-cert: offer HTTP/1.1 only (HTTP/2 is offered beside it by default)')
    .option('--h2c', 'without --tls-cert: also serve cleartext HTTP/2 (prior knowledge) on --listen, beside HTTP/1.1')
    .option('-n, --namespace <ns>', 'namespace whose Routes and rules are served (default: $PLINTH_NAMESPACE or "default")')
    .option('--cache-file <file>', 'snapshot cache: start and route from it while the control plane is down')
    .option('--trust-proxy <hops>', 'proxies in front whose X-Forwarded-For is believed', undefined)
    .option('--request-id [header]', 'a request ID per request (default header x-request-id): sent upstream, on every answer, in the access log; an incoming one is kept behind --trust-proxy and in sidecar mode')
    .option('--no-access-log', 'do not write JSON access-log lines to stdout')
    .option('--sidecar', 'sidecar mode: register --app as an instance of --service and front it')
    .option('--app <url>', 'sidecar: the app, e.g. http://127.0.0.1:5000')
    .option('--service <name>', 'sidecar: the app\'s service name')
    .option('--app-version <version>', 'sidecar: the app\'s version (--version is the CLI\'s own)')
    .option('--lane <lane>', 'sidecar: the lane the app runs in')
    .option('--egress <host:port>', 'sidecar: where the app sends outbound calls, e.g. 127.0.0.1:15001')
    .option('--app-protocol <protocol>', 'sidecar: "http" (default) or "h2c", cleartext HTTP/2 to the app (a gRPC server); the ingress then takes h2c too and the instance says so')
    .option('--app-health <check>', 'sidecar: probe the app and register its health (critical until a probe passes): an HTTP path such as /healthz, or grpc[:service] for the gRPC health protocol (with --app-protocol h2c)')
    .option('--app-health-interval <ms>', 'sidecar: milliseconds between two probes (default 5000; 3 failures in a row make the app critical)')
    .option('--advertise <address>', 'sidecar: the address other services reach the ingress at, e.g. https://10.0.0.7:8443 (default from --listen)')
    .option('--stream-idle-timeout <ms>', 'for routes without their own streamIdleTimeoutMs and for sidecar traffic: the deadline bounds an exchange up to its answer\'s head, then a streaming answer (server-sent events, gRPC streams) is cut only after this many milliseconds without a byte either way')
    .option('--workers <n>', 'serve from n worker processes (or "auto": one per core) sharing --listen, with the admin address in the primary; SIGHUP to the primary then replaces them one by one with no failed request (edge mode)')
    .option('--check', 'check the flags, the files they name, the token and the Routes as a start would, then exit: 0 when it would start and every Route compiles')
    .option('--trace-sample <ratio>', 'export a span per hop to the control plane for this share of new traces (0..1; errors and slow requests are kept on demand); needs create on Span')
    .action(async (flags: GatewayFlags, cmd: Command) => {
      const globals = cmd.optsWithGlobals<{ url?: string; token?: string }>();
      const conn = await resolveConnection({ url: globals.url, token: globals.token });
      if (conn.token === undefined) throw new UsageError('no token: set $PLINTH_TOKEN (a plinth_… credential of the gateway\'s ServiceAccount) or run plinth login');
      for (const [name, v] of [['--listen', flags.listen], ['--admin', flags.admin], ['--egress', flags.egress]] as const) {
        if (v !== undefined && !HOST_PORT.test(v) && !INHERITED.test(v)) throw new UsageError(`${name} expects host:port, fd:N or systemd[:NAME], not ${JSON.stringify(v)}`);
      }
      const trustProxy = flags.trustProxy === undefined ? undefined : Number(flags.trustProxy);
      if (trustProxy !== undefined && !(Number.isInteger(trustProxy) && trustProxy >= 0)) throw new UsageError('--trust-proxy expects a number of hops (0, 1, 2, …)');
      const sidecarOnly = { '--app': flags.app, '--service': flags.service, '--app-version': flags.appVersion, '--lane': flags.lane, '--egress': flags.egress, '--advertise': flags.advertise, '--app-protocol': flags.appProtocol, '--app-health': flags.appHealth, '--app-health-interval': flags.appHealthInterval };
      if (flags.sidecar) {
        for (const k of ['--app', '--service', '--app-version'] as const) if (sidecarOnly[k] === undefined) throw new UsageError(`--sidecar needs ${k}`);
      } else {
        const given = Object.entries(sidecarOnly).filter(([, v]) => v !== undefined).map(([k]) => k);
        if (given.length > 0) throw new UsageError(`${given.join(', ')} only apply with --sidecar`);
      }
      if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
      if (flags.appProtocol !== undefined && flags.appProtocol !== 'http' && flags.appProtocol !== 'h2c') {
        throw new UsageError(`--app-protocol expects http or h2c, not ${JSON.stringify(flags.appProtocol)}`);
      }
      const appHealth = flags.appHealth === undefined ? undefined : appHealthCheck(flags.appHealth);
      if (flags.appHealthInterval !== undefined && flags.appHealth === undefined) throw new UsageError('--app-health-interval applies with --app-health');
      const probeEvery = flags.appHealthInterval === undefined ? undefined : Number(flags.appHealthInterval);
      if (probeEvery !== undefined && !(Number.isInteger(probeEvery) && probeEvery > 0)) throw new UsageError(`--app-health-interval expects milliseconds, a positive integer, not ${JSON.stringify(flags.appHealthInterval)}`);
      if ((flags.upstreamCert === undefined) !== (flags.upstreamKey === undefined)) throw new UsageError('--upstream-cert and --upstream-key go together');
      const serverIdentity = flags.upstreamServerIdentity;
      if (serverIdentity !== undefined && serverIdentity !== 'hostname' && serverIdentity !== 'spiffe') {
        throw new UsageError(`--upstream-server-identity expects hostname or spiffe, not ${JSON.stringify(serverIdentity)}`);
      }
      const trustDomains = flags.upstreamTrustDomains?.split(',').map((d) => d.trim()).filter((d) => d !== '');
      if (trustDomains !== undefined && serverIdentity !== 'spiffe') throw new UsageError('--upstream-trust-domains applies with --upstream-server-identity spiffe');
      const upstreamTls =
        flags.upstreamCa !== undefined || flags.upstreamCert !== undefined || serverIdentity !== undefined || flags.upstreamHttp2 === true
          ? {
              ...(flags.upstreamHttp2 === true ? { http2: true } : {}),
              ...(flags.upstreamCa !== undefined ? { ca: resolve(flags.upstreamCa) } : {}),
              ...(flags.upstreamCert !== undefined && flags.upstreamKey !== undefined ? { cert: resolve(flags.upstreamCert), key: resolve(flags.upstreamKey) } : {}),
              ...(serverIdentity !== undefined ? { serverIdentity: serverIdentity as 'hostname' | 'spiffe' } : {}),
              ...(trustDomains !== undefined ? { trustDomains } : {}),
            }
          : undefined;
      if (!flags.http2 && flags.tlsCert === undefined) throw new UsageError('--no-http2 applies with --tls-cert and --tls-key (plain HTTP is HTTP/1.1 only)');
      if (flags.tlsClientCa !== undefined && flags.tlsCert === undefined) throw new UsageError('--tls-client-ca applies with --tls-cert and --tls-key (client certificates need TLS)');
      if (flags.tlsClientCert !== undefined && flags.tlsClientCa === undefined) throw new UsageError('--tls-client-cert applies with --tls-client-ca');
      if (flags.tlsClientCert !== undefined && flags.tlsClientCert !== 'request' && flags.tlsClientCert !== 'require') {
        throw new UsageError(`--tls-client-cert expects request or require, not ${JSON.stringify(flags.tlsClientCert)}`);
      }
      const clientCert = flags.tlsClientCert as 'request' | 'require' | undefined;
      if (flags.h2c === true && flags.tlsCert !== undefined) throw new UsageError('--h2c is cleartext HTTP/2; with --tls-cert, HTTP/2 is offered through TLS already');
      if (flags.h2c === true && flags.sidecar) throw new UsageError('--h2c applies to the edge gateway, not --sidecar');
      const sample = flags.traceSample === undefined ? undefined : Number(flags.traceSample);
      if (sample !== undefined && !(sample >= 0 && sample <= 1)) throw new UsageError('--trace-sample expects a ratio from 0 to 1, e.g. 0.01');
      const streamIdle = flags.streamIdleTimeout === undefined ? undefined : Number(flags.streamIdleTimeout);
      if (streamIdle !== undefined && !(Number.isInteger(streamIdle) && streamIdle > 0)) throw new UsageError(`--stream-idle-timeout expects milliseconds, a positive integer, not ${JSON.stringify(flags.streamIdleTimeout)}`);
      const workers = flags.workers === undefined ? undefined : workerCount(flags.workers);
      if (workers !== undefined && flags.sidecar) throw new UsageError('--workers applies to the edge gateway: a sidecar registers its one app from one process');
      const namespace = flags.namespace ?? defaultNamespace();
      // Loaded here so that other commands do not pay for the gateway's modules.
      const { checkGateway, isTokenRefusal, parseListen, startGateway, startWorkerPool, serveAsWorker, leavePool, workerRole, WorkerStartError } = await import('@plinth/gateway');
      const logger = { warn: (m: string, f?: Record<string, unknown>) => note(`warning: ${m}${f ? ` ${JSON.stringify(f)}` : ''}`), debug: () => {} };
      const role = workers !== undefined ? workerRole() : undefined;
      if (workers !== undefined && role === undefined && !flags.check) {
        let pool;
        try {
          // The workers listen through the primary: an inherited socket must be this process's (LISTEN_PID).
          for (const l of [flags.listen, flags.admin]) if (l !== undefined) parseListen(l);
          pool = await startWorkerPool({ workers, ...(flags.admin !== undefined ? { adminListen: flags.admin } : {}), logger });
        } catch (e) {
          // The worker printed why it could not start; its exit code says what kind of failure it was.
          if (e instanceof WorkerStartError) throw new CliError(`cannot start the gateway: ${e.message}`, knownExitCode(e.exitCode));
          throw startFailure(e, 'cannot start the gateway', isTokenRefusal);
        }
        out(`plinth gateway listening on ${pool.url} (namespace ${namespace}, ${workers} worker${workers === 1 ? '' : 's'}: ${pool.pids().join(' ')})`);
        if (pool.adminUrl) out(`admin on ${pool.adminUrl} (/metrics, /healthz, /readyz)`);
        const p = pool;
        process.on('SIGHUP', () => {
          note('SIGHUP: replacing the workers one by one');
          p.reload().then(
            (ok) => note(ok ? `reloaded: workers ${p.pids().join(' ')}` : `reload failed: workers ${p.pids().join(' ')} serve on`),
            (e: unknown) => note(`reload failed: ${(e as Error).message}`),
          );
        });
        await runUntilSignal(() => p.close(), 'draining', () => p.kill());
        return;
      }
      const options: GatewayOptions = {
        namespace,
        controlPlane: { url: conn.url, token: conn.token, ...(flags.cacheFile !== undefined ? { cacheFile: resolve(flags.cacheFile) } : {}) },
        listen: flags.listen,
        // A worker's admin answers go through the primary's listener.
        ...(flags.admin !== undefined && role === undefined ? { adminListen: flags.admin } : {}),
        ...(role !== undefined ? { processes: role.of } : {}),
        ...(flags.tlsCert !== undefined && flags.tlsKey !== undefined
          ? {
              tls: {
                cert: resolve(flags.tlsCert),
                key: resolve(flags.tlsKey),
                ...(flags.http2 ? {} : { http2: false }),
                ...(flags.tlsClientCa !== undefined ? { clientCa: resolve(flags.tlsClientCa) } : {}),
                ...(clientCert !== undefined ? { clientCert } : {}),
              },
            }
          : {}),
        ...(flags.h2c === true ? { h2c: true } : {}),
        ...(upstreamTls !== undefined ? { upstreamTls } : {}),
        ...(trustProxy !== undefined ? { trustProxy } : {}),
        ...(flags.requestId !== undefined ? { requestId: flags.requestId === true ? true : { header: flags.requestId.toLowerCase() } } : {}),
        ...(streamIdle !== undefined ? { streamIdleTimeoutMs: streamIdle } : {}),
        ...(flags.accessLog ? (role !== undefined ? { accessLog: { shared: true } } : {}) : { accessLog: false as const }),
        logger,
        ...(flags.sidecar
          ? {
              sidecar: {
                app: flags.app!,
                service: flags.service!,
                version: flags.appVersion!,
                ...(flags.lane !== undefined ? { lane: flags.lane } : {}),
                ...(flags.egress !== undefined ? { egress: flags.egress } : {}),
                ...(flags.advertise !== undefined ? { advertiseAddress: flags.advertise } : {}),
                ...(flags.appProtocol !== undefined ? { appProtocol: flags.appProtocol as 'http' | 'h2c' } : {}),
                ...(appHealth !== undefined ? { appHealth: { check: appHealth, ...(probeEvery !== undefined ? { intervalMs: probeEvery } : {}) } } : {}),
              },
            }
          : {}),
      };
      if (flags.check) {
        let found;
        try {
          found = await checkGateway(options);
        } catch (e) {
          throw startFailure(e, 'the gateway would not start', isTokenRefusal);
        }
        for (const error of found.routeErrors) note(`route error: ${error}`);
        if (found.routeErrors.length > 0) throw new CliError(`${found.routeErrors.length} Route${found.routeErrors.length === 1 ? '' : 's'} of namespace ${namespace} cannot be compiled and would be ignored`, ExitCode.REFUSED);
        out(`configuration OK: ${flags.sidecar ? `sidecar for ${flags.service}` : `${found.routes} Route${found.routes === 1 ? '' : 's'}`} in namespace ${namespace}`);
        return;
      }
      const tracing =
        sample === undefined
          ? undefined
          : (await import('@plinth/sdk')).createTracing({
              service: flags.sidecar ? flags.service! : 'gateway',
              namespace,
              sampleRatio: sample,
              keepSlowerThanMs: 1000,
              exporter: { url: conn.url, token: conn.token },
            });
      let gw;
      try {
        gw = await startGateway({ ...options, ...(tracing !== undefined ? { tracing } : {}) });
      } catch (e) {
        // A worker's channel to the primary would keep it alive: the error is printed, then it exits.
        if (role !== undefined) leavePool();
        throw startFailure(e, 'cannot start the gateway', isTokenRefusal);
      }
      const running = gw;
      const closeAll = async (): Promise<void> => {
        await running.close();
        await tracing?.shutdown();
      };
      if (role !== undefined) {
        await serveAsWorker(running, closeAll, () => note(`gateway worker ${process.pid}: the primary is gone; draining, then exiting`));
        leavePool();
        return;
      }
      out(`plinth gateway ${flags.sidecar ? `(sidecar for ${flags.service}) ` : ''}listening on ${gw.url} (namespace ${namespace})`);
      if (gw.egressUrl) out(`egress on ${gw.egressUrl}: http://${new URL(gw.egressUrl).host}/<service>/<path>`);
      if (gw.adminUrl) out(`admin on ${gw.adminUrl} (/metrics, /healthz, /readyz)`);
      // node's default for SIGHUP is to die on the spot, cutting requests in flight: one process cannot reload
      // (that takes --workers), so a hangup, or a HUP sent out of habit, drains and stops as SIGTERM does.
      process.once('SIGHUP', () => {
        note('SIGHUP: a single gateway cannot reload (run it with --workers for that); draining as for SIGTERM');
        process.kill(process.pid, 'SIGTERM');
      });
      await runUntilSignal(closeAll, 'draining');
    });
}

/** A failed start (or check) as the CLI reports it: bad options exit 2, no snapshot 3, anything else 1. */
function startFailure(e: unknown, what: string, tokenRefused: (e: unknown) => boolean): Error {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'EADDRINUSE') return new CliError(`${what}: an address is already in use (${err.message})`, ExitCode.REFUSED);
  if (err instanceof TypeError) return new UsageError(err.message);
  if (/no snapshot/.test(err.message)) return new CliError(`${what}: ${err.message}`, ExitCode.UNREACHABLE);
  if (tokenRefused(e)) return new CliError(`${what}: the control plane refuses the token (${err.message})`, ExitCode.AUTH);
  return new CliError(`${what}: ${err.message}`, ExitCode.REFUSED);
}

/** A worker's exit code when it is one of the CLI's own, else REFUSED. */
function knownExitCode(code: number | null): ExitCode {
  return (Object.values(ExitCode) as number[]).includes(code ?? -1) && code !== ExitCode.OK ? (code as ExitCode) : ExitCode.REFUSED;
}

/** `--workers`: a positive integer, or `auto` for one per core node may use. */
function workerCount(v: string): number {
  if (v === 'auto') return availableParallelism();
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= 1 && n <= 256)) throw new UsageError(`--workers expects a number of processes from 1 to 256, or auto, not ${JSON.stringify(v)}`);
  return n;
}

/** `--app-health`: an HTTP path, or `grpc` / `grpc:<service>` for the gRPC Health Checking Protocol. */
function appHealthCheck(v: string): { http: string } | { grpc: string } {
  if (v.startsWith('/')) return { http: v };
  if (v === 'grpc') return { grpc: '' };
  if (v.startsWith('grpc:') && v.length > 5) return { grpc: v.slice(5) };
  throw new UsageError(`--app-health expects an HTTP path (/healthz), grpc or grpc:<service>, not ${JSON.stringify(v)}`);
}
