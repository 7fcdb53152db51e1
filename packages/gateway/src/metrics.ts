import type { GovernanceSource } from '@plinth/sdk';
import { outboundMetrics, type OutboundMetrics } from '@plinth/sdk/client';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { MTLS_REFUSALS, type MtlsRefusal } from './client-cert.js';
import type { MirrorOutcome } from './mirror.js';

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Route ids come from resources, but keep a bound on label values anyway. */
const MAX_ROUTES = 2048;
const OTHER = 'other';
const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];

function statusClass(status: number): string {
  return status >= 100 && status < 600 ? CLASSES[Math.floor(status / 100) - 1]! : 'aborted';
}

type Inc = { inc(v?: number): void };
type Obs = { observe(v: number): void };

/**
 * The gateway's Prometheus figures: requests and latency per route and status class, refusals per route and
 * reason, upstream endpoint counts per service, and (through the SDK's outbound metrics) breaker states,
 * retries and ejections. Label children are cached in nested maps: `.labels()` hashes on every call.
 */
export class GatewayMetrics {
  readonly registry: Registry;
  readonly outbound: OutboundMetrics;
  private readonly requests: Counter<string>;
  private readonly duration: Histogram<string>;
  private readonly rejections: Counter<string>;
  private readonly children = new Map<string, Map<string, { count: Inc; seconds: Obs }>>();
  private readonly rejectionChildren = new Map<string, Map<string, Inc>>();
  private readonly inFlight: Gauge<string>;

  constructor(opts: { registry?: Registry; governance: GovernanceSource; services: () => readonly string[] }) {
    this.registry = opts.registry ?? new Registry();
    const registers = [this.registry];
    this.requests = new Counter({ name: 'plinth_gateway_requests_total', help: 'Requests answered by the gateway, per route and status class.', labelNames: ['route', 'status_class'], registers });
    this.duration = new Histogram({ name: 'plinth_gateway_request_duration_seconds', help: 'From arrival to the end of the answer.', labelNames: ['route', 'status_class'], buckets: BUCKETS, registers });
    this.rejections = new Counter({ name: 'plinth_gateway_rejections_total', help: 'Requests refused by the gateway before any upstream (rate limits, auth, body size), per route and reason.', labelNames: ['route', 'reason'], registers });
    this.inFlight = new Gauge({ name: 'plinth_gateway_in_flight', help: 'Requests being served.', registers });
    const governance = opts.governance;
    const services = opts.services;
    new Gauge({
      name: 'plinth_gateway_upstream_endpoints',
      help: 'Routable instances per upstream service, as the gateway sees them (base lane and lanes).',
      labelNames: ['service'],
      registers,
      // Workers of one gateway see the same instances: their figures are not to be added up.
      aggregator: 'max',
      collect() {
        this.reset();
        for (const s of services()) this.set({ service: s }, governance.endpoints(s).size);
      },
    });
    this.outbound = outboundMetrics(this.registry);
  }

  begin(): void {
    this.inFlight.inc();
  }

  private grpc: Counter<string> | undefined;
  private readonly grpcChildren = new Map<string, Inc[]>();

  /**
   * A gRPC call ended with `code` (0 OK … 16): `plinth_gateway_grpc_requests_total{route, grpc_code}`,
   * registered at the first gRPC call, so a gateway without gRPC traffic shows no such series. Its HTTP
   * status is 200 whatever the outcome, hence a figure of its own for error rates.
   */
  grpcEnd(route: string | undefined, code: number): void {
    this.grpc ??= new Counter({
      name: 'plinth_gateway_grpc_requests_total',
      help: 'gRPC calls through the gateway, per route and gRPC status code (0 OK).',
      labelNames: ['route', 'grpc_code'],
      registers: [this.registry],
    });
    const r = this.routeLabel(route);
    let byCode = this.grpcChildren.get(r);
    if (byCode === undefined) this.grpcChildren.set(r, (byCode = []));
    // Codes are 0..16; anything else from an upstream is one bucket.
    const c = Number.isInteger(code) && code >= 0 && code <= 16 ? code : 17;
    (byCode[c] ??= this.grpc.labels(r, c === 17 ? OTHER : String(c))).inc();
  }

  private mirror: Counter<string> | undefined;
  private readonly mirrorChildren = new Map<string, Map<string, Inc>>();

  /**
   * `plinth_gateway_mirrored_total{route, outcome}`: shadow copies of a Route's `mirror`, `sent` (the mirror
   * answered, whatever its status), `failed` (no answer) or `skipped` (too many in flight, or a body that
   * streams through); registered at the first copy.
   */
  mirrored(route: string, outcome: MirrorOutcome): void {
    this.mirror ??= new Counter({ name: 'plinth_gateway_mirrored_total', help: "Shadow copies of requests sent to a route's mirror service, per route and outcome.", labelNames: ['route', 'outcome'], registers: [this.registry] });
    let byOutcome = this.mirrorChildren.get(route);
    if (byOutcome === undefined) this.mirrorChildren.set(route, (byOutcome = new Map()));
    let c = byOutcome.get(outcome);
    if (c === undefined) byOutcome.set(outcome, (c = this.mirror.labels(route, outcome)));
    c.inc();
  }

  private appHealthy: Gauge | undefined;

  /** `plinth_gateway_app_healthy`: 1 while the sidecar's probe of its app passes, 0 otherwise; only with a probe. */
  appHealth(healthy: boolean): void {
    this.appHealthy ??= new Gauge({ name: 'plinth_gateway_app_healthy', help: "1 while the sidecar's health probe of its app passes (the instance is passing), else 0.", registers: [this.registry] });
    this.appHealthy.set(healthy ? 1 : 0);
  }

  /** `plinth_gateway_access_log_dropped_total`, read from `count` at each scrape. */
  accessLogDropped(count: () => number): void {
    new Counter({
      name: 'plinth_gateway_access_log_dropped_total',
      help: 'Access-log lines dropped because the destination could not keep up.',
      registers: [this.registry],
      collect() {
        this.reset();
        const n = count();
        if (n > 0) this.inc(n);
      },
    });
  }

  /**
   * `plinth_gateway_tls_handshake_failures_total`, registered only where TLS is served. The reason is bounded:
   * `timeout` (no handshake in time), `protocol` (not TLS, or TLS the gateway does not speak), `other`
   * (resets and the rest). All three start at 0 so a dashboard has a series before the first failure.
   */
  tlsHandshakeFailures(): (code: string | undefined) => void {
    const c = new Counter({ name: 'plinth_gateway_tls_handshake_failures_total', help: 'TLS handshakes on the proxy listener that failed, per reason.', labelNames: ['reason'], registers: [this.registry] });
    const byReason = { timeout: c.labels('timeout'), protocol: c.labels('protocol'), other: c.labels('other') };
    for (const child of Object.values(byReason)) child.inc(0);
    return (code) => byReason[tlsFailureReason(code)].inc();
  }

  private mtls: Record<MtlsRefusal, Inc> | undefined;

  /**
   * `plinth_gateway_mtls_refusals_total`, registered only where client certificates are verified: client
   * certificates refused at the handshake (`tls.clientCert: 'require'`) or by a route of mode mtls, per
   * reason (MTLS_REFUSALS). Every reason starts at 0.
   */
  mtlsRefusals(): void {
    if (this.mtls !== undefined) return;
    const c = new Counter({ name: 'plinth_gateway_mtls_refusals_total', help: 'Client certificates refused, at the TLS handshake or by a route of mode mtls, per reason.', labelNames: ['reason'], registers: [this.registry] });
    const byReason = {} as Record<MtlsRefusal, Inc>;
    for (const r of MTLS_REFUSALS) (byReason[r] = c.labels(r)).inc(0);
    this.mtls = byReason;
  }

  mtlsRefused(reason: MtlsRefusal): void {
    this.mtls?.[reason].inc();
  }

  /** `plinth_gateway_websockets_open`, read from `count` at each scrape. */
  websockets(count: () => number): void {
    new Gauge({
      name: 'plinth_gateway_websockets_open',
      help: 'Proxied WebSocket connections open now.',
      registers: [this.registry],
      collect() {
        this.set(count());
      },
    });
  }

  end(route: string | undefined, status: number, seconds: number): void {
    this.inFlight.dec();
    const r = this.routeLabel(route);
    const cls = statusClass(status);
    let byClass = this.children.get(r);
    if (byClass === undefined) this.children.set(r, (byClass = new Map()));
    let c = byClass.get(cls);
    if (c === undefined) byClass.set(cls, (c = { count: this.requests.labels(r, cls), seconds: this.duration.labels(r, cls) }));
    c.count.inc();
    c.seconds.observe(seconds);
  }

  rejected(route: string | undefined, reason: string): void {
    const r = this.routeLabel(route);
    let byReason = this.rejectionChildren.get(r);
    if (byReason === undefined) this.rejectionChildren.set(r, (byReason = new Map()));
    let c = byReason.get(reason);
    if (c === undefined) byReason.set(reason, (c = this.rejections.labels(r, reason)));
    c.inc();
  }

  private routeLabel(route: string | undefined): string {
    if (route === undefined) return OTHER;
    if (this.children.has(route) || this.children.size < MAX_ROUTES) return route;
    return OTHER;
  }
}

/** OpenSSL's errors surface as ERR_SSL_*; node's own handshake timeout has its code. */
export function tlsFailureReason(code: string | undefined): 'timeout' | 'protocol' | 'other' {
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  if (code !== undefined && (code.startsWith('ERR_SSL_') || code === 'ERR_TLS_INVALID_PROTOCOL_VERSION')) return 'protocol';
  return 'other';
}
