import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface InboundMetricsOptions {
  /** Where the metrics are registered; default a new Registry (never prom-client's global one). */
  registry?: Registry;
  /** Histogram buckets in seconds. */
  buckets?: number[];
}

/** Route label for requests the framework did not route (404s) or could not name: never the raw path. */
export const OTHER_ROUTE = 'other';

const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
/** Lanes come from baggage, which a client may fill with anything: cap the distinct values a label can take. */
const MAX_LANES = 32;
const MAX_ROUTES = 1024;

type Child = { inc(v?: number): void };
type ObserveChild = { observe(v: number): void };

/**
 * Nested maps so that a hot-path lookup builds no key string. Each level is bounded by its label's
 * normalization (methods, status classes, capped lanes and routes), so the cache is too.
 */
type Level<T> = Map<string, T>;

/**
 * RED metrics of the inbound side. Pressure-test traffic (baggage `plinth.stress=1`) is labelled
 * `stress="true"` so load tests never inflate real rates, errors or latencies.
 *
 * Bound label children are cached: `.labels()` hashes its arguments on every call, a nested Map lookup
 * by interned strings does not.
 */
export class InboundMetrics {
  readonly registry: Registry;
  private readonly requests: Counter<string>;
  private readonly duration: Histogram<string>;
  private readonly rejections: Counter<string>;
  private readonly inFlight: Gauge<string>;
  private readonly requestChildren: Level<Level<Level<Level<Level<Level<{ count: Child; seconds: ObserveChild }>>>>>> = new Map();
  private readonly rejectionChildren: Level<Level<Level<Child>>> = new Map();
  private readonly inFlightChildren = new Map<string, { inc(): void; dec(): void }>();
  private readonly lanes = new Set<string>();
  private readonly routes = new Set<string>();

  constructor(opts: InboundMetricsOptions = {}) {
    this.registry = opts.registry ?? new Registry();
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'plinth_inbound_requests_total',
      help: 'Inbound requests served, by route template and status class.',
      labelNames: ['service', 'method', 'route', 'status_class', 'lane', 'stress'],
      registers,
    });
    this.duration = new Histogram({
      name: 'plinth_inbound_request_duration_seconds',
      help: 'Inbound request duration from arrival to the end of the response.',
      labelNames: ['service', 'method', 'route', 'status_class', 'lane', 'stress'],
      buckets: opts.buckets ?? DEFAULT_BUCKETS,
      registers,
    });
    this.rejections = new Counter({
      name: 'plinth_inbound_rejections_total',
      help: 'Inbound requests refused by governance before the handler, by reason code.',
      labelNames: ['service', 'reason', 'stress'],
      registers,
    });
    this.inFlight = new Gauge({
      name: 'plinth_inbound_in_flight',
      help: 'Inbound requests being handled now.',
      labelNames: ['service'],
      registers,
    });
  }

  /** A request entered (admitted or not); pair with `end`. */
  begin(service: string): void {
    this.inFlightChild(service).inc();
  }

  /** A request ended with `status` (0 when the client went away before a response was sent). */
  end(service: string, method: string, route: string | undefined, status: number, lane: string | undefined, stress: boolean, seconds: number): void {
    this.inFlightChild(service).dec();
    const m = METHODS.has(method) ? method : 'OTHER';
    const r = this.routeLabel(route);
    const s = statusClass(status);
    const l = this.laneLabel(lane);
    const st = stress ? 'true' : 'false';
    const c = this.requestChild(service, m, r, s, l, st);
    c.count.inc();
    c.seconds.observe(seconds);
  }

  rejected(service: string, reason: string, stress: boolean): void {
    const st = stress ? 'true' : 'false';
    let a = this.rejectionChildren.get(service);
    if (a === undefined) this.rejectionChildren.set(service, (a = new Map()));
    let b = a.get(reason);
    if (b === undefined) a.set(reason, (b = new Map()));
    let c = b.get(st);
    if (c === undefined) b.set(st, (c = this.rejections.labels(service, reason, st)));
    c.inc();
  }

  private inFlightChild(service: string): { inc(): void; dec(): void } {
    let c = this.inFlightChildren.get(service);
    if (c === undefined) this.inFlightChildren.set(service, (c = this.inFlight.labels(service)));
    return c;
  }

  private routeLabel(route: string | undefined): string {
    if (route === undefined || route === '') return OTHER_ROUTE;
    if (this.routes.has(route)) return route;
    // Route templates are finite in a sane app; a framework handing us raw paths would not be.
    if (this.routes.size >= MAX_ROUTES) return OTHER_ROUTE;
    this.routes.add(route);
    return route;
  }

  private laneLabel(lane: string | undefined): string {
    if (lane === undefined) return 'base';
    if (this.lanes.has(lane)) return lane;
    if (this.lanes.size >= MAX_LANES) return 'other';
    this.lanes.add(lane);
    return lane;
  }

  private requestChild(service: string, method: string, route: string, status: string, lane: string, stress: string): { count: Child; seconds: ObserveChild } {
    let a = this.requestChildren.get(service);
    if (a === undefined) this.requestChildren.set(service, (a = new Map()));
    let b = a.get(method);
    if (b === undefined) a.set(method, (b = new Map()));
    let c = b.get(route);
    if (c === undefined) b.set(route, (c = new Map()));
    let d = c.get(status);
    if (d === undefined) c.set(status, (d = new Map()));
    let e = d.get(lane);
    if (e === undefined) d.set(lane, (e = new Map()));
    let f = e.get(stress);
    if (f === undefined) {
      f = { count: this.requests.labels(service, method, route, status, lane, stress), seconds: this.duration.labels(service, method, route, status, lane, stress) };
      e.set(stress, f);
    }
    return f;
  }
}

const STATUS_CLASSES = ['aborted', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/** `2xx` … `5xx`; `aborted` when no response was sent (status 0 or nonsense). */
export function statusClass(status: number): string {
  const c = Math.floor(status / 100);
  return c >= 1 && c <= 5 ? (STATUS_CLASSES[c] ?? 'aborted') : 'aborted';
}

/** A `GET /metrics` handler for node:http (and express, whose req/res are node's): Prometheus text format. */
export function metricsHandler(registry: Registry): (req: IncomingMessage, res: ServerResponse) => void {
  return (_req, res) => {
    registry.metrics().then(
      (text) => {
        res.statusCode = 200;
        res.setHeader('content-type', registry.contentType);
        res.end(text);
      },
      () => {
        res.statusCode = 500;
        res.end();
      },
    );
  };
}
