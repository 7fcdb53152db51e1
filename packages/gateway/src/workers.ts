/**
 * One gateway served by several processes on one host (`plinth gateway --workers n`), and restarts with no
 * failed request (SIGHUP to the primary).
 *
 * node is one thread per process, so a gateway on a host of eight cores would use one. The primary forks n
 * workers (node:cluster) that each run the whole gateway on one shared listening socket, and keeps nothing
 * on the request path: with the cluster policy `none` (the default here, `NODE_CLUSTER_SCHED_POLICY=rr` for
 * node's round robin) the kernel hands each connection to a worker that accepts it, as nginx's workers do.
 * The primary holds the listening socket for as long as any worker uses it, so a worker can be replaced
 * without the port ever closing: a reload forks a new worker, waits until it is up (its first snapshot
 * included), then drains an old one as SIGTERM drains a single gateway, one worker after another. A new
 * worker that fails to start stops the reload and the running ones serve on: a broken upgrade costs nothing.
 *
 * The admin listener is the primary's: `/readyz` is ready when every serving worker is, `/metrics` sums the
 * workers' figures (gauges that every worker sees alike are their maximum) and keeps the counters of workers
 * retired by a reload or a drain, so a reload does not reset them; `/routes` is asked of one worker.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Server } from 'node:http';
import type { Logger } from '@plinth/sdk';
import { AggregatorRegistry, Counter, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { closeAdmin, jsonAnswer, listenAdmin, problemAnswer, type AdminAnswer } from './admin-routes.js';
import { GatewayCodes } from './errors.js';
import type { Gateway } from './gateway.js';

const WORKER_ENV = 'PLINTH_GATEWAY_WORKER';
const WORKERS_ENV = 'PLINTH_GATEWAY_WORKERS';

type MetricJson = MetricObjectWithValues<MetricValue<string>>;

type ToWorker = { plinth: 'admin'; id: number; target: string } | { plinth: 'metrics'; id: number } | { plinth: 'drain' };
type FromWorker =
  | { plinth: 'ready'; url: string }
  | { plinth: 'admin'; id: number; answer: AdminAnswer }
  | { plinth: 'metrics'; id: number; metrics: MetricJson[] }
  | { plinth: 'final'; metrics: MetricJson[] };

/** This process's place in a pool: worker `id` (from 1) of `of`. Undefined outside a pool. */
export interface WorkerRole {
  readonly id: number;
  readonly of: number;
}

export function workerRole(env: NodeJS.ProcessEnv = process.env): WorkerRole | undefined {
  if (!cluster.isWorker) return undefined;
  const id = Number(env[WORKER_ENV]);
  const of = Number(env[WORKERS_ENV]);
  return Number.isInteger(id) && id >= 1 && Number.isInteger(of) && of >= 1 ? { id, of } : undefined;
}

/**
 * In a worker, once its gateway is up: tells the primary, answers its admin questions and drains when told
 * to. Signals are the primary's to act on: a terminal's Ctrl-C or a service manager's SIGTERM reaches every
 * process of the group, and the primary drains them in order. Resolves once `close` is done and the final
 * figures are with the primary.
 *
 * A primary that dies without draining its workers (SIGKILL, the OOM killer) leaves them orphans. node's cluster
 * would exit such a worker on the spot, cutting the requests it has in flight; instead it drains as if told to,
 * with `orphaned` called first, and then exits, so that none outlives its primary by more than a drain and a
 * service manager can start a new one on the same port as soon as the listener closes.
 */
export function serveAsWorker(gw: Gateway, close: () => Promise<void>, orphaned?: () => void): Promise<void> {
  return new Promise((done) => {
    const send = (m: FromWorker, then?: () => void): void => {
      if (!process.connected || process.send === undefined) return void then?.();
      try {
        process.send(m, undefined, {}, () => then?.());
      } catch {
        then?.();
      }
    };
    let closing = false;
    const drain = (): void => {
      if (closing) return;
      closing = true;
      close()
        .catch(() => {})
        .then(() => gw.registry.getMetricsAsJSON())
        .then(
          (metrics) => send({ plinth: 'final', metrics: metrics as MetricJson[] }, done),
          () => done(),
        );
    };
    process.on('message', (m: ToWorker) => {
      if (typeof m !== 'object' || m === null) return;
      if (m.plinth === 'admin') {
        gw.admin(m.target).then(
          (answer) => send({ plinth: 'admin', id: m.id, answer }),
          () => send({ plinth: 'admin', id: m.id, answer: problemAnswer(GatewayCodes.unavailable, 503, 'the worker could not answer') }),
        );
      } else if (m.plinth === 'metrics') {
        gw.registry.getMetricsAsJSON().then(
          (metrics) => send({ plinth: 'metrics', id: m.id, metrics: metrics as MetricJson[] }),
          () => send({ plinth: 'metrics', id: m.id, metrics: [] }),
        );
      } else if (m.plinth === 'drain') drain();
    });
    const self = cluster.worker;
    // The channel closes with `exitedAfterDisconnect` set when the worker or its primary asked for it; unset,
    // the primary is gone. node's own listener runs after this one and exits unless the flag is set.
    self?.once('disconnect', () => {
      if (self.exitedAfterDisconnect || closing) return;
      self.exitedAfterDisconnect = true;
      orphaned?.();
      drain();
    });
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => {});
    send({ plinth: 'ready', url: gw.url });
  });
}

/**
 * A worker's last step, after its gateway closed or failed to start: it leaves the pool and exits with the exit
 * code set (node's cluster would exit 0 at once on a bare disconnect of the channel, which keeps it alive).
 */
export function leavePool(): void {
  // An orphan's channel is already closed (disconnecting it again would throw); it exits once idle.
  if (process.connected) cluster.worker?.disconnect();
}

export interface WorkerPoolOptions {
  /** Worker processes, at least 1. */
  workers: number;
  /** `host:port` of the primary's `/metrics`, `/healthz`, `/readyz`, `/routes`. None when absent. */
  adminListen?: string;
  /** The script and arguments a worker runs (with `PLINTH_GATEWAY_WORKER` set); default this process's. */
  exec?: string;
  args?: string[];
  /** How long a new worker may take to be up, its first snapshot included. Default 60 s. */
  startTimeoutMs?: number;
  /** How long a draining worker may take to exit before it is killed. Default 20 s (a gateway drains for 10 s). */
  exitTimeoutMs?: number;
  /** How long the primary waits for its workers' admin answers. Default 5 s. */
  adminTimeoutMs?: number;
  /** The primary's own figures (workers, restarts, reloads); default a new registry. */
  registry?: Registry;
  logger?: Logger;
}

export interface WorkerPool {
  /** The proxy's address, as the first worker reported it. */
  readonly url: string;
  readonly adminUrl: string | undefined;
  /** Process ids of the workers serving now. */
  pids(): number[];
  /** Replaces every worker, one after another. False when a new worker failed to start (the old ones serve on) or the pool closed meanwhile. */
  reload(): Promise<boolean>;
  /** Drains every worker (as SIGTERM drains a gateway), then closes the admin listener. Idempotent. */
  close(): Promise<void>;
  /** Kills every worker at once, without draining. */
  kill(): void;
}

/** A worker that exited before it was up: its exit code is the one to exit with (it printed why). */
export class WorkerStartError extends Error {
  constructor(
    readonly exitCode: number | null,
    readonly signal: string | null,
  ) {
    super(signal !== null ? `a gateway worker was killed by ${signal} before it was up` : `a gateway worker exited with code ${String(exitCode)} before it was up`);
  }
}

interface Pending {
  readonly waiting: Set<Worker>;
  readonly answers: Map<Worker, unknown>;
  readonly finish: () => void;
}

const noopLogger: Logger = { warn: () => {}, debug: () => {} };
/** A worker that served this long before it crashed is replaced at once; quicker crashes back off up to 10 s. */
const STABLE_MS = 10_000;
const MAX_BACKOFF_MS = 10_000;

export async function startWorkerPool(o: WorkerPoolOptions): Promise<WorkerPool> {
  if (!cluster.isPrimary) throw new TypeError('startWorkerPool: call it in the primary process');
  if (!Number.isInteger(o.workers) || o.workers < 1) throw new TypeError(`startWorkerPool: workers must be a positive integer, not ${o.workers}`);
  const log = o.logger ?? noopLogger;
  const startTimeoutMs = o.startTimeoutMs ?? 60_000;
  const exitTimeoutMs = o.exitTimeoutMs ?? 20_000;
  const adminTimeoutMs = o.adminTimeoutMs ?? 5_000;
  if (process.env['NODE_CLUSTER_SCHED_POLICY'] === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ exec: o.exec ?? process.argv[1], args: o.args ?? process.argv.slice(2) });

  const serving = new Set<Worker>();
  const readyAt = new Map<Worker, number>();
  const draining = new Set<Worker>();
  const starting = new Set<Worker>();
  const retired = new WeakSet<Worker>();
  let folding: Promise<void> = Promise.resolve();
  const pending = new Map<number, Pending>();
  let retiredFigures: MetricJson[] = [];
  let nextId = 0;
  let nextRequest = 0;
  let closing = false;
  let crashStreak = 0;
  /** The proxy's address, as the latest worker up reported it. */
  let reported = '';
  const respawns = new Set<NodeJS.Timeout>();

  const registry = o.registry ?? new Registry();
  new Gauge({
    name: 'plinth_gateway_workers',
    help: 'Worker processes serving (up and not draining).',
    registers: [registry],
    collect() {
      this.set(serving.size);
    },
  });
  const restarts = new Counter({ name: 'plinth_gateway_worker_restarts_total', help: 'Workers that exited without being asked to and were replaced.', registers: [registry] });
  const reloads = new Counter({ name: 'plinth_gateway_reloads_total', help: 'Reloads (every worker replaced in turn), per outcome: done, or failed when a new worker did not start.', labelNames: ['outcome'], registers: [registry] });

  const fold = async (metrics: MetricJson[]): Promise<void> => {
    // Gauges describe the present; what a retired worker counted stays in the totals.
    const kept = metrics.filter((m) => String(m.type) === 'counter' || String(m.type) === 'histogram');
    retiredFigures = (await AggregatorRegistry.aggregate([retiredFigures, kept]).getMetricsAsJSON()) as MetricJson[];
  };

  const onMessage = (w: Worker, m: FromWorker): void => {
    if (typeof m !== 'object' || m === null) return;
    if (m.plinth === 'admin' || m.plinth === 'metrics') {
      const p = pending.get(m.id);
      if (p === undefined || !p.waiting.delete(w)) return;
      p.answers.set(w, m.plinth === 'admin' ? m.answer : m.metrics);
      if (p.waiting.size === 0) p.finish();
    } else if (m.plinth === 'final') {
      folding = folding
        .then(() => fold(m.metrics))
        .then(
          () => void retired.add(w),
          (e: unknown) => log.warn('the figures of a retired worker could not be kept', { error: (e as Error).message }),
        );
    }
  };

  const forget = (w: Worker): void => {
    for (const p of pending.values()) if (p.waiting.delete(w) && p.waiting.size === 0) p.finish();
  };

  /** A new worker, once it says it is up. */
  const fork = (): Promise<Worker> => {
    const w = cluster.fork({ [WORKER_ENV]: String(++nextId), [WORKERS_ENV]: String(o.workers) });
    starting.add(w);
    return new Promise<Worker>((resolve, reject) => {
      const timer = setTimeout(() => {
        log.warn('a new gateway worker was not up in time and is stopped', { pid: w.process.pid, startTimeoutMs });
        w.process.kill('SIGKILL');
      }, startTimeoutMs);
      w.on('message', (m: FromWorker) => {
        if (m?.plinth === 'ready' && starting.delete(w)) {
          clearTimeout(timer);
          reported = m.url;
          readyAt.set(w, Date.now());
          resolve(w);
        } else onMessage(w, m);
      });
      w.once('exit', (code: number | null, signal: string | null) => {
        clearTimeout(timer);
        forget(w);
        const wasServing = serving.delete(w);
        draining.delete(w);
        if (starting.delete(w)) return reject(new WorkerStartError(code, signal));
        if (wasServing && !closing) replace(w, code, signal);
      });
    });
  };

  const replace = (w: Worker, code: number | null, signal: string | null): void => {
    const lived = Date.now() - (readyAt.get(w) ?? Date.now());
    readyAt.delete(w);
    crashStreak = lived >= STABLE_MS ? 0 : crashStreak + 1;
    restarts.inc();
    log.warn('a gateway worker exited unasked; starting another', { pid: w.process.pid, code, signal, servedMs: lived });
    respawn();
  };

  /** A replacement: at once after a worker that had served a while, else after a backoff that doubles. */
  const respawn = (): void => {
    const delay = crashStreak === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 100 * 2 ** crashStreak);
    const t = setTimeout(() => {
      respawns.delete(t);
      if (closing) return;
      fork().then(
        (fresh) => (closing ? void drain(fresh) : void serving.add(fresh)),
        (e: unknown) => {
          crashStreak++;
          log.warn('a replacement gateway worker failed to start; trying again', { error: (e as Error).message });
          if (!closing) respawn();
        },
      );
    }, delay);
    respawns.add(t);
  };

  /** Asks `w` to drain; resolves when it has exited (killed if it takes longer than exitTimeoutMs). */
  const drain = (w: Worker): Promise<void> => {
    serving.delete(w);
    readyAt.delete(w);
    draining.add(w);
    if (w.isDead()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        log.warn('a draining gateway worker did not exit in time and is killed', { pid: w.process.pid, exitTimeoutMs });
        w.process.kill('SIGKILL');
      }, exitTimeoutMs);
      w.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      try {
        w.send({ plinth: 'drain' } satisfies ToWorker);
      } catch {
        w.process.kill('SIGTERM');
      }
    });
  };

  /** Sends `message(id)` to each of `workers` and collects what they answer within adminTimeoutMs. */
  const ask = <T>(workers: Iterable<Worker>, message: (id: number) => ToWorker): Promise<Map<Worker, T>> =>
    new Promise((resolve) => {
      const id = ++nextRequest;
      const waiting = new Set<Worker>();
      const answers = new Map<Worker, unknown>();
      const finish = (): void => {
        clearTimeout(timer);
        pending.delete(id);
        resolve(answers as Map<Worker, T>);
      };
      pending.set(id, { waiting, answers, finish });
      for (const w of workers) {
        try {
          w.send(message(id));
          waiting.add(w);
        } catch {
          // gone between the list and the send: it has nothing to say
        }
      }
      // Answers come over IPC, never before this line.
      const timer = waiting.size === 0 ? undefined : setTimeout(finish, adminTimeoutMs);
      if (waiting.size === 0) finish();
    });

  const pids = (): number[] => [...serving].map((w) => w.process.pid ?? 0);

  const admin = async (target: string): Promise<AdminAnswer> => {
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    if (path === '/healthz') return jsonAnswer(serving.size > 0 ? 200 : 503, JSON.stringify({ ok: serving.size > 0, workers: pids() }));
    if (path === '/readyz') {
      if (closing) return jsonAnswer(503, '{"ready":false,"reason":"draining"}');
      if (serving.size === 0) return jsonAnswer(503, '{"ready":false,"reason":"no_workers"}');
      const answers = await ask<AdminAnswer>(serving, (id) => ({ plinth: 'admin', id, target: '/readyz' }));
      const notReady = [...serving].map((w) => answers.get(w)).find((a) => a === undefined || a.status !== 200);
      if (notReady === undefined) return jsonAnswer(200, JSON.stringify({ ready: true, workers: pids() }));
      return notReady.status === 503 ? notReady : jsonAnswer(503, '{"ready":false,"reason":"worker_unresponsive"}');
    }
    if (path === '/metrics') {
      const answers = await ask<MetricJson[]>([...serving, ...draining], (id) => ({ plinth: 'metrics', id }));
      // A worker whose final figures arrived meanwhile is counted in retiredFigures already.
      await folding;
      const live = [...answers].filter(([w]) => !retired.has(w)).map(([, m]) => m);
      const merged = Registry.merge([AggregatorRegistry.aggregate([...live, retiredFigures]), registry]);
      return { status: 200, contentType: merged.contentType, body: await merged.metrics() };
    }
    const one = [...serving][0];
    if (one === undefined) return problemAnswer(GatewayCodes.unavailable, 503, 'no gateway worker is serving');
    const answers = await ask<AdminAnswer>([one], (id) => ({ plinth: 'admin', id, target }));
    return answers.get(one) ?? problemAnswer(GatewayCodes.unavailable, 503, 'the gateway worker did not answer');
  };

  const killAll = (): void => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
  };

  let url: string;
  try {
    const first = await fork();
    serving.add(first);
    url = reported;
    const rest = await Promise.allSettled(Array.from({ length: o.workers - 1 }, () => fork()));
    for (const r of rest) if (r.status === 'fulfilled') serving.add(r.value);
    const failed = rest.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  } catch (e) {
    closing = true;
    await Promise.all([...serving].map(drain));
    killAll();
    throw e;
  }

  let adminServer: Server | undefined;
  let adminUrl: string | undefined;
  if (o.adminListen !== undefined) {
    try {
      ({ server: adminServer, url: adminUrl } = await listenAdmin(o.adminListen, admin));
    } catch (e) {
      closing = true;
      await Promise.all([...serving].map(drain));
      throw e;
    }
  }

  let reloading: Promise<boolean> | undefined;
  let again = false;
  const reloadOnce = async (): Promise<boolean> => {
    const exits: Promise<void>[] = [];
    for (const old of [...serving]) {
      if (closing) return false;
      // One that exited meanwhile was replaced from the new code already.
      if (!serving.has(old)) continue;
      let fresh: Worker;
      try {
        fresh = await fork();
      } catch (e) {
        reloads.inc({ outcome: 'failed' });
        log.warn('reload stopped: a new gateway worker did not start; the running workers serve on', { error: (e as Error).message });
        await Promise.all(exits);
        return false;
      }
      if (closing) {
        exits.push(drain(fresh));
        break;
      }
      serving.add(fresh);
      exits.push(drain(old));
    }
    await Promise.all(exits);
    if (closing) return false;
    reloads.inc({ outcome: 'done' });
    return true;
  };
  const reload = (): Promise<boolean> => {
    if (reloading !== undefined) {
      // A reload asked for during one starts again once it is done: the later code is the one to run.
      again = true;
      return reloading;
    }
    const run = async (): Promise<boolean> => {
      let ok: boolean;
      do {
        again = false;
        ok = await reloadOnce();
      } while (again && !closing);
      return ok;
    };
    reloading = run().finally(() => (reloading = undefined));
    return reloading;
  };

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      closing = true;
      for (const t of respawns) clearTimeout(t);
      respawns.clear();
      for (const w of starting) w.process.kill('SIGKILL');
      await Promise.all([...serving, ...draining].map((w) => (draining.has(w) ? exited(w) : drain(w))));
      if (adminServer !== undefined) await closeAdmin(adminServer);
    })());

  return {
    url,
    adminUrl,
    pids,
    reload,
    close,
    kill: killAll,
  };
}

function exited(w: Worker): Promise<void> {
  return w.isDead() ? Promise.resolve() : new Promise((r) => w.once('exit', () => r()));
}
