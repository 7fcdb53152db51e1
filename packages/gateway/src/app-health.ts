/**
 * The sidecar's check of its app. A sidecar outlives the app it fronts (the app may crash, hang or still be
 * starting), so its lease alone says nothing of the app: the probe's verdict becomes the Instance's health,
 * and callers route around a `critical` app at once instead of learning it from failed calls.
 */
import type { Dispatcher } from 'undici';

export interface AppHealthOptions {
  /**
   * `{ http: '/healthz' }`: a GET of that path, passing on 2xx and 3xx (as Kubernetes' HTTP probes).
   * `{ grpc: '' }`: the gRPC Health Checking Protocol (`grpc.health.v1.Health/Check`) for the service named
   * (`''`: the whole server), passing on SERVING; for a gRPC app (`appProtocol: 'h2c'`).
   */
  check: { http: string } | { grpc: string };
  /** Between two probes. Default 5000 ms. */
  intervalMs?: number;
  /** A probe unanswered after this fails. Default 2000 ms. */
  timeoutMs?: number;
  /** Failed probes in a row that make the app critical. Default 3. */
  unhealthyThreshold?: number;
  /** Passed probes in a row that make it passing again. Default 1. */
  healthyThreshold?: number;
}

export interface ProbeResult {
  ok: boolean;
  /** What the probe saw: `HTTP 503`, `NOT_SERVING`, `grpc-status 12`, or the connection error. */
  detail: string;
}

const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';
/** HealthCheckResponse.ServingStatus names, by number. */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!(Number.isInteger(v) && v > 0)) throw new TypeError(`sidecar appHealth.${name} must be a positive integer, not ${String(v)}`);
  return v;
}

/** Checks the options as the gateway starts, so a typo stops it with a message instead of a sidecar that never passes. */
export function checkAppHealthOptions(o: AppHealthOptions, appProtocol: 'http' | 'h2c'): void {
  const c = o.check as { http?: unknown; grpc?: unknown } | undefined;
  if (c === undefined || (c.http === undefined) === (c.grpc === undefined)) throw new TypeError('sidecar appHealth.check is { http: "/path" } or { grpc: "service" }');
  if (c.http !== undefined && (typeof c.http !== 'string' || !c.http.startsWith('/'))) throw new TypeError(`sidecar appHealth.check.http must be a path starting with /, not ${JSON.stringify(c.http)}`);
  if (c.grpc !== undefined) {
    if (typeof c.grpc !== 'string' || Buffer.byteLength(c.grpc) > 127) throw new TypeError('sidecar appHealth.check.grpc must be a service name of at most 127 bytes ("" for the whole server)');
    if (appProtocol !== 'h2c') throw new TypeError('sidecar appHealth.check.grpc needs appProtocol h2c (gRPC runs over HTTP/2)');
  }
  timingOf(o);
}

/** The probe's timing with its defaults, each checked. */
function timingOf(o: AppHealthOptions): { intervalMs: number; timeoutMs: number; down: number; up: number } {
  return {
    intervalMs: positiveInt('intervalMs', o.intervalMs, 5000),
    timeoutMs: positiveInt('timeoutMs', o.timeoutMs, 2000),
    down: positiveInt('unhealthyThreshold', o.unhealthyThreshold, 3),
    up: positiveInt('healthyThreshold', o.healthyThreshold, 1),
  };
}

/** `HealthCheckRequest { service }` in a gRPC message frame. */
function healthCheckRequest(service: string): Buffer {
  const name = Buffer.from(service);
  const message = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, name.length]), name]);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

/** The `status` (field 1, an enum) of a HealthCheckResponse in its gRPC frame; undefined when unreadable. */
function servingStatus(body: Buffer): number | undefined {
  if (body.length < 5 || body[0] !== 0) return undefined;
  const len = body.readUInt32BE(1);
  const m = body.subarray(5, 5 + len);
  // proto3 leaves a zero enum out: an empty message is UNKNOWN.
  if (m.length === 0) return 0;
  for (let i = 0; i + 1 < m.length; ) {
    const tag = m[i]!;
    if (tag === 0x08) return m[i + 1]! & 0x7f;
    // Another field: skip it by its wire type (the response has none today; read forward-compatibly).
    const wire = tag & 7;
    if (wire === 2) i += 2 + m[i + 1]!;
    else if (wire === 0) {
      i++;
      while (i < m.length && (m[i]! & 0x80) !== 0) i++;
      i++;
    } else return undefined;
  }
  return 0;
}

/** One probe of the app through `pool` (the sidecar's own connections to it). */
export async function probeApp(pool: Dispatcher, check: AppHealthOptions['check'], timeoutMs: number): Promise<ProbeResult> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    if ('http' in check) {
      const r = await pool.request({ method: 'GET', path: check.http, headers: { 'user-agent': 'plinth-sidecar-probe' }, signal });
      await r.body.dump({ limit: 64 * 1024, signal });
      return { ok: r.statusCode >= 200 && r.statusCode < 400, detail: `HTTP ${r.statusCode}` };
    }
    const r = await pool.request({
      method: 'POST',
      path: HEALTH_CHECK_PATH,
      headers: { 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'plinth-sidecar-probe' },
      body: healthCheckRequest(check.grpc),
      signal,
    });
    const body = Buffer.from(await r.body.arrayBuffer());
    // An error comes trailers-only, in the headers (UNIMPLEMENTED: no health service; NOT_FOUND: no such service).
    const code = r.headers['grpc-status'];
    if (code !== undefined && code !== '0') return { ok: false, detail: `grpc-status ${String(code)}` };
    if (r.statusCode !== 200) return { ok: false, detail: `HTTP ${r.statusCode}` };
    const status = servingStatus(body);
    if (status === undefined) return { ok: false, detail: 'unreadable HealthCheckResponse' };
    return { ok: status === 1, detail: SERVING_STATUS[status] ?? `status ${status}` };
  } catch (e) {
    const err = e as { name?: string; code?: string; message?: string };
    if (signal.aborted) return { ok: false, detail: `no answer in ${timeoutMs} ms` };
    return { ok: false, detail: err.code ?? err.message ?? String(e) };
  }
}

/**
 * Probes the app every `intervalMs` (one timer per sidecar, unref'd, never two probes at once) and reports a
 * change of verdict past the thresholds. It starts unhealthy: an app still starting gets no traffic.
 */
export class AppProbe {
  healthy = false;
  private passes = 0;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly down: number;
  private readonly up: number;

  constructor(
    private readonly pool: Dispatcher,
    private readonly o: AppHealthOptions,
    private readonly onChange: (healthy: boolean, r: ProbeResult) => void,
  ) {
    ({ intervalMs: this.intervalMs, timeoutMs: this.timeoutMs, down: this.down, up: this.up } = timingOf(o));
  }

  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    await this.running;
  }

  private tick(): Promise<void> {
    if (this.stopped || this.running !== undefined) return Promise.resolve();
    this.running = probeApp(this.pool, this.o.check, this.timeoutMs).then((r) => {
      this.running = undefined;
      if (!this.stopped) this.record(r);
    });
    return this.running;
  }

  private record(r: ProbeResult): void {
    if (r.ok) {
      this.failures = 0;
      if (++this.passes >= this.up && !this.healthy) {
        this.healthy = true;
        this.onChange(true, r);
      }
    } else {
      this.passes = 0;
      // Starting unhealthy, the first failure is no news; a healthy app needs `down` failures in a row.
      if (++this.failures >= this.down && this.healthy) {
        this.healthy = false;
        this.onChange(false, r);
      }
    }
  }
}
