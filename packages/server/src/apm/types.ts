/**
 * The APM's contracts: spans as Plinth keeps them (normalized from OTLP at ingest), the queries the API,
 * the CLI and the alerting ask, and the store that answers them. One store contract, two backends (SQLite
 * embedded, PostgreSQL for several servers), like the resource store.
 */

export type SpanKind = 'internal' | 'server' | 'client' | 'producer' | 'consumer';
export type SpanStatus = 'unset' | 'ok' | 'error';
export type AttrValue = string | number | boolean;
export type Attributes = Record<string, AttrValue>;

export interface SpanEvent {
  timeMs: number;
  name: string;
  attributes: Attributes;
}

/** One span. Times are unix epoch milliseconds (fractional: µs precision survives). */
export interface SpanRecord {
  /** Resource `service.namespace`; `default` when absent. Tenancy and RBAC follow it. */
  namespace: string;
  /** 32 lowercase hex. */
  traceId: string;
  /** 16 lowercase hex. */
  spanId: string;
  parentSpanId: string | undefined;
  /** Resource `service.name`; `unknown_service` when absent, as OpenTelemetry does. */
  service: string;
  /** Resource `service.version`. */
  version: string | undefined;
  name: string;
  kind: SpanKind;
  startMs: number;
  durationMs: number;
  status: SpanStatus;
  statusMessage: string | undefined;
  /**
   * Server and consumer spans: the endpoint, `METHOD route` from `http.request.method` + `http.route` when
   * known (never the raw URL: cardinality), else the span name.
   */
  endpoint: string | undefined;
  /**
   * Client and producer spans: who was called — `peer.service`, else `db.system` (+ `/db.namespace`), else
   * `messaging.system`, else `server.address`. Undefined for other kinds.
   */
  peer: string | undefined;
  /** `http.response.status_code` (or the older `http.status_code`). */
  httpStatus: number | undefined;
  /** `rpc.grpc.status_code`: the code a gRPC call ended with (its HTTP status is 200 whatever the outcome). */
  grpcStatus: number | undefined;
  /** `plinth.lane` attribute (set from baggage by the SDK and the gateway). */
  lane: string | undefined;
  /** `plinth.stress` attribute: pressure-test traffic, kept out of real figures and SLOs. */
  stress: boolean;
  /** Resource `cloud.region`. */
  region: string | undefined;
  /** `plinth.caller` attribute on server spans: the calling service as it named itself. */
  caller: string | undefined;
  attributes: Attributes;
  resource: Attributes;
  events: SpanEvent[];
}

export interface TimeRange {
  fromMs: number;
  toMs: number;
}

export interface TraceQuery extends TimeRange {
  namespace: string;
  service?: string | undefined;
  endpoint?: string | undefined;
  status?: 'error' | 'ok' | undefined;
  minDurationMs?: number | undefined;
  maxDurationMs?: number | undefined;
  /** Every pair must match: `lane`, `region`, `version`, `stress` match the record's fields, other keys its attributes. */
  tags?: Record<string, string> | undefined;
  /** Default 20, at most 1000. Newest first. */
  limit?: number | undefined;
}

export interface TraceSummary {
  traceId: string;
  /** The root span's service and name (the earliest span when the root was not received). */
  rootService: string;
  rootName: string;
  startMs: number;
  durationMs: number;
  spanCount: number;
  errorCount: number;
  services: string[];
}

/** What RED figures are grouped by: a service's server spans, its endpoints, or caller → callee edges (client spans). */
export type RedGroup = 'service' | 'endpoint' | 'edge';
export type SplitTag = 'lane' | 'stress' | 'region' | 'version';

export interface RedQuery extends TimeRange {
  namespace: string;
  /** Only this service (for edges: calls made by it or into it). */
  service?: string | undefined;
  group: RedGroup;
  split?: readonly SplitTag[] | undefined;
  /** Pressure-test traffic is excluded unless asked for or split by `stress`. */
  includeStress?: boolean | undefined;
}

export interface RedRow {
  /** group service/endpoint: the service; group edge: the caller. */
  service: string;
  endpoint?: string | undefined;
  /** group edge: the callee. */
  peer?: string | undefined;
  /** The split tags' values for this row (`stress` as "true"/"false"). */
  tags: Partial<Record<SplitTag, string>>;
  count: number;
  errors: number;
  /** count / seconds of the range. */
  ratePerSec: number;
  errorRate: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  /** Answers 429 or 503 (rate limits, breakers, overload): what contention analysis calls rejections. */
  rejections: number;
}

export interface TopologyNode {
  name: string;
  /** Seen only as a callee of client spans, never reporting spans itself: a database, a partner API. */
  external: boolean;
}

export interface TopologyEdge {
  caller: string;
  callee: string;
  external: boolean;
  count: number;
  errors: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
}

export interface Topology {
  nodes: TopologyNode[];
  edges: TopologyEdge[];
}

export interface TopologyQuery extends TimeRange {
  namespace: string;
  /** Focus: only this service, its upstreams (callers) and downstreams (callees). */
  service?: string | undefined;
  includeStress?: boolean | undefined;
}

/** Service-level indicator counts over a window; pressure-test traffic never counts. */
export interface SliQuery extends TimeRange {
  namespace: string;
  service: string;
  /** One endpoint (`METHOD route`), or every endpoint of the service. */
  endpoint?: string | undefined;
  /** availability: bad = error status (or HTTP 5xx); latency: bad = slower than thresholdMs. */
  indicator: 'availability' | 'latency';
  thresholdMs?: number | undefined;
}

export interface SliCounts {
  total: number;
  bad: number;
}

/** One entry of the alert history: a rule or SLO alert firing or resolving, and what was notified. */
export interface AlertEvent {
  namespace: string;
  /** `Slo/<name>` or `AlertRule/<name>`. */
  source: string;
  state: 'firing' | 'resolved';
  /** e.g. `burn 1h/5m 16.2x ≥ 14.4x` or `p99 812 ms > 500 ms for 3 periods`. */
  summary: string;
  severity: 'page' | 'ticket' | 'info';
  atMs: number;
  /** Notification outcome: `delivered`, `failed: …`, `silenced`, `none`. */
  notification: string;
  details: Attributes;
}

export interface AlertEventQuery {
  namespace?: string | undefined;
  source?: string | undefined;
  fromMs?: number | undefined;
  /** Default 100, at most 1000. Newest first. */
  limit?: number | undefined;
}

export interface RetentionPolicy {
  /** Raw spans older than this are deleted. Default 7 days. */
  spansMs: number;
  /** Rolled-up aggregates older than this are deleted. Default 35 days (an SLO's 30-day window fits). */
  rollupsMs: number;
}

export interface SpanStore {
  readonly backend: 'sqlite' | 'postgres';
  init(): Promise<void>;
  /** Stores a batch and folds it into the rolled-up aggregates. Idempotent on (traceId, spanId). */
  insert(spans: readonly SpanRecord[]): Promise<void>;
  /** Every span of one trace, ordered by start time. */
  trace(namespace: string, traceId: string): Promise<SpanRecord[]>;
  searchTraces(q: TraceQuery): Promise<TraceSummary[]>;
  /** From the rolled-up aggregates (minute resolution), so a 30-day range is as cheap as a 5-minute one. */
  red(q: RedQuery): Promise<RedRow[]>;
  topology(q: TopologyQuery): Promise<Topology>;
  sli(q: SliQuery): Promise<SliCounts>;
  /** Services that reported spans in the range, with their namespaces. */
  services(q: TimeRange & { namespace?: string | undefined }): Promise<{ namespace: string; service: string }[]>;
  enforceRetention(nowMs: number, policy: RetentionPolicy): Promise<{ spans: number; rollups: number }>;
  appendAlertEvent(e: AlertEvent): Promise<void>;
  alertEvents(q: AlertEventQuery): Promise<AlertEvent[]>;
  /**
   * Runs `fn` only if no other server is running the same named job right now (PostgreSQL: an advisory
   * lock; SQLite: one process owns the file, so always). Returns whether it ran. Keeps several servers
   * from evaluating the same alert twice.
   */
  exclusive(name: string, fn: () => Promise<void>): Promise<boolean>;
  /** Flushes pending aggregates and releases connections. */
  close(): Promise<void>;
}
