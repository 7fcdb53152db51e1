import { matchesSelector, parseSelector, type Resource, type Selector, type WatchEvent } from '@plinth/core';
import type { Dispatcher } from 'undici';
import { Backoff, type BackoffOptions } from './backoff.js';
import { CacheWriter, loadCache, type CacheContents, type CacheScope } from './cache-file.js';
import { TypedEmitter } from './emitter.js';
import { CLIENT_CLOSED, ControlPlaneError, PROTOCOL_ERROR, REVISION_COMPACTED, WATCH_IDLE, isControlPlaneError } from './errors.js';
import { errorFrom, jsonFrom, send, type SendOptions, type Transport } from './http.js';
import { defaultLogger, errorMessage, type Logger } from './logger.js';
import { Snapshot } from './snapshot.js';
import { TokenSource } from './token-source.js';
import { isResource, readWatchStream, type WatchMessage } from './watch-stream.js';

export interface ControlPlaneClientOptions {
  /** Base URL of a plinth server, e.g. `http://127.0.0.1:7070`. */
  url: string;
  /** A JWT, or a `plinth_…` credential (exchanged for JWTs, refreshed at 2/3 of their lifetime). */
  token: string;
  /** The kinds to hold. */
  kinds: readonly string[];
  /** Only this namespace; default every namespace the identity may list. */
  namespace?: string;
  /** Kubernetes-style label selector (`team=orders,tier!=canary`). */
  selector?: string;
  /** Where the snapshot is persisted (atomically, debounced ~200 ms) and loaded from at start. */
  cacheFile?: string;
  /** Reconnect delays: exponential with full jitter, default 250 ms .. 15 s. */
  backoff?: BackoffOptions;
  /**
   * Drop and reconnect the watch when no byte arrived for this long. The server sends a heartbeat every
   * 15 s by default, so the default 45 s is three missed heartbeats.
   */
  idleTimeoutMs?: number;
  /** Bound on each list page and token exchange. Default 30 s. */
  requestTimeoutMs?: number;
  /** undici dispatcher (proxy, TLS options, interceptors); default undici's global one. */
  dispatcher?: Dispatcher;
  logger?: Logger;
}

/** Where the snapshot currently in memory came from. */
export type SnapshotSource = 'server' | 'cache' | 'empty';

export type DisconnectReason = 'ended' | 'idle' | 'error' | 'resync' | 'closed';

export interface ControlPlaneEvents {
  /**
   * The snapshot changed: one event per resource, after the snapshot already holds the change. The type
   * describes this client's view (ADDED = it did not hold the resource before), which is what a consumer
   * building derived state needs. Loading the cache and every (re)list announce their differences the same way.
   */
  change: [event: WatchEvent];
  /** The client holds state current with the server (first bookmark of a watch stream). */
  synced: [info: { revision: number }];
  /** An open watch stream ended; the client reconnects by itself. */
  disconnected: [info: { reason: DisconnectReason; error?: Error }];
  /**
   * A round of listing and watching failed (the server unreachable, or it refused: a `ControlPlaneError`
   * with its HTTP status); the client goes on serving its snapshot and tries again after `retryInMs`.
   */
  syncFailed: [info: { error: Error; failures: number; retryInMs: number }];
}

export interface ListFilter {
  namespace?: string;
  /** A selector string, or one parsed once with `parseSelector` for hot paths. */
  selector?: string | Selector;
}

export interface ControlPlaneClient {
  /**
   * Resolves once the client holds state current with the server: listed and caught up on the watch (its
   * first BOOKMARK). Never from the cache alone. Rejects with `client_closed` if closed first.
   */
  readonly ready: Promise<void>;
  /** Resolves once a snapshot is available, from the cache file or the server, whichever comes first. */
  readonly started: Promise<void>;
  /** From the in-memory snapshot, no I/O. The resource must be treated as immutable. */
  get(kind: string, namespace: string, name: string): Resource | undefined;
  /** From the in-memory snapshot, no I/O, in no particular order. */
  list(kind: string, filter?: ListFilter): Resource[];
  /** The revision the snapshot is current at (last event or bookmark applied). */
  readonly revision: number;
  readonly source: SnapshotSource;
  /** A watch stream is open. */
  readonly connected: boolean;
  on<K extends keyof ControlPlaneEvents>(event: K, listener: (...args: ControlPlaneEvents[K]) => void): () => void;
  off<K extends keyof ControlPlaneEvents>(event: K, listener: (...args: ControlPlaneEvents[K]) => void): void;
  /** Stops watching, persists the last snapshot, and releases timers and sockets. */
  close(): Promise<void>;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 45_000;
const LIST_PAGE = 500;
/** An idle client still refreshes its cache's revision this often, so a restart resumes instead of relisting. */
const BOOKMARK_SAVE_INTERVAL_MS = 60_000;

interface ListAnswer {
  revision: number;
  items: Resource[];
  continue?: string;
}

/** A relist in progress: built aside, swapped in whole at the first bookmark. */
interface Staging {
  snapshot: Snapshot;
  /** Per kind, the revision its list reflects: older events of that kind are already in the list. */
  floors: Map<string, number>;
}

class Deferred {
  settled = false;
  resolve!: () => void;
  reject!: (e: Error) => void;
  readonly promise = new Promise<void>((ok, fail) => {
    this.resolve = () => {
      this.settled = true;
      ok();
    };
    this.reject = (e) => {
      this.settled = true;
      fail(e);
    };
  });

  constructor() {
    // Nobody has to await `ready`; rejecting it on close must not become an unhandled rejection.
    this.promise.catch(() => {});
  }
}

export function createControlPlaneClient(options: ControlPlaneClientOptions): ControlPlaneClient {
  return new Client(options);
}

class Client implements ControlPlaneClient {
  private readonly log: Logger;
  private readonly transport: Transport;
  private readonly tokens: TokenSource;
  private readonly backoff: Backoff;
  private readonly scope: CacheScope;
  private readonly kindSet: Set<string>;
  private readonly query: URLSearchParams;
  private readonly idleTimeoutMs: number;
  private readonly emitter: TypedEmitter<ControlPlaneEvents>;
  private readonly writer: CacheWriter | undefined;
  private readonly readyD = new Deferred();
  private readonly startedD = new Deferred();
  private readonly lifetime = new AbortController();
  private readonly idleTimer: NodeJS.Timeout;
  private readonly loop: Promise<void>;

  private snapshot = new Snapshot();
  private rev = 0;
  /** Where the next watch resumes: the last revision seen on any stream (live or staging). */
  private cursor = 0;
  private staging: Staging | undefined;
  private src: SnapshotSource = 'empty';
  private stream: AbortController | undefined;
  private streamOpen = false;
  private syncedOnStream = false;
  /** Monotonic time of the last byte on the current watch (or of its start). */
  private lastByteAt = 0;
  private wake: (() => void) | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(o: ControlPlaneClientOptions) {
    this.log = o.logger ?? defaultLogger;
    const base = new URL(o.url);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new TypeError(`url must be http(s), not ${o.url}`);
    const kinds = [...new Set(o.kinds)].sort();
    if (kinds.length === 0) throw new TypeError('kinds must name at least one kind');
    const selector = o.selector?.trim() ?? '';
    parseSelector(selector); // throws invalid_selector now rather than on every reconnect
    this.idleTimeoutMs = o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    if (!(this.idleTimeoutMs > 0)) throw new RangeError(`idleTimeoutMs must be positive, not ${o.idleTimeoutMs}`);

    this.scope = { kinds, namespace: o.namespace ?? null, selector };
    this.kindSet = new Set(kinds);
    this.query = new URLSearchParams();
    if (o.namespace !== undefined) this.query.set('namespace', o.namespace);
    if (selector !== '') this.query.set('selector', selector);
    this.transport = { baseUrl: base.href.replace(/\/+$/, ''), dispatcher: o.dispatcher, requestTimeoutMs: o.requestTimeoutMs ?? 30_000 };
    this.tokens = new TokenSource({ transport: this.transport, token: o.token, logger: this.log });
    this.backoff = new Backoff(o.backoff);
    this.emitter = new TypedEmitter((event, e) => this.log.warn(`a '${String(event)}' listener threw`, { error: errorMessage(e) }));
    this.writer = o.cacheFile === undefined ? undefined : new CacheWriter(o.cacheFile, () => this.cacheContents(), this.log);

    // ONE liveness timer per client, whatever the event rate: each chunk only stores a timestamp, and this
    // check drops a watch that has been silent for idleTimeoutMs. It costs nothing per event and, unlike a
    // timer re-armed per chunk, nothing per heartbeat either. Detection lags by at most one period.
    this.idleTimer = setInterval(() => this.checkIdle(), Math.min(5000, Math.max(10, this.idleTimeoutMs / 4)));
    this.idleTimer.unref();

    this.loop = this.run(o.cacheFile).catch((e: unknown) => {
      // run() handles its own failures; reaching this is a bug, reported rather than left unhandled.
      this.log.warn('control-plane client stopped unexpectedly', { error: errorMessage(e) });
    });
  }

  get ready(): Promise<void> {
    return this.readyD.promise;
  }

  get started(): Promise<void> {
    return this.startedD.promise;
  }

  get revision(): number {
    return this.rev;
  }

  get source(): SnapshotSource {
    return this.src;
  }

  get connected(): boolean {
    return this.streamOpen;
  }

  get(kind: string, namespace: string, name: string): Resource | undefined {
    return this.snapshot.get(kind, namespace, name);
  }

  list(kind: string, filter: ListFilter = {}): Resource[] {
    const items = this.snapshot.list(kind, filter.namespace);
    if (filter.selector === undefined) return items;
    const selector = typeof filter.selector === 'string' ? parseSelector(filter.selector) : filter.selector;
    return items.filter((r) => matchesSelector(selector, r.metadata.labels));
  }

  on<K extends keyof ControlPlaneEvents>(event: K, listener: (...args: ControlPlaneEvents[K]) => void): () => void {
    return this.emitter.on(event, listener);
  }

  off<K extends keyof ControlPlaneEvents>(event: K, listener: (...args: ControlPlaneEvents[K]) => void): void {
    this.emitter.off(event, listener);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      const err = new ControlPlaneError(CLIENT_CLOSED, 'the control-plane client was closed');
      this.lifetime.abort(err);
      this.stream?.abort(err);
      this.wake?.();
      clearInterval(this.idleTimer);
      this.tokens.close();
      await this.loop;
      await this.writer?.flush();
      if (!this.readyD.settled) this.readyD.reject(err);
      if (!this.startedD.settled) this.startedD.reject(err);
    })();
    return this.closing;
  }

  // ---- the loop -------------------------------------------------------------------------------------

  private async run(cacheFile: string | undefined): Promise<void> {
    if (cacheFile !== undefined) await this.loadCacheFile(cacheFile);
    // With a cache, resume its watch from the cache's revision: the server replays what changed meanwhile
    // (or answers RESYNC when that is compacted), which is far cheaper than a fleet relisting after a restart.
    let needList = this.src !== 'cache';
    let resyncedInARow = false;
    let errorsInARow = 0;
    while (!this.closed) {
      let error: unknown;
      // Set again by this round's first bookmark: tells below whether the round was healthy.
      this.syncedOnStream = false;
      try {
        if (needList) {
          await this.relist();
          needList = false;
        }
        await this.watch();
      } catch (e) {
        error = e;
      }
      if (this.closed) break;
      if (isControlPlaneError(error, REVISION_COMPACTED)) {
        needList = true;
        this.log.debug('the watch revision was compacted; relisting', { since: this.cursor });
        // The server asked for it: relist at once, unless it keeps asking (then back off like any failure).
        if (!resyncedInARow) {
          resyncedInARow = true;
          continue;
        }
      } else if (this.syncedOnStream) {
        resyncedInARow = false;
      }
      if (this.syncedOnStream) errorsInARow = 0;
      const delay = this.backoff.next();
      if (error === undefined) {
        this.log.debug('the server ended the watch; reconnecting', { inMs: delay });
      } else if (!isControlPlaneError(error, REVISION_COMPACTED)) {
        // First failure after a healthy period, then every 10th: an outage is reported, not narrated.
        const n = ++errorsInARow;
        this.emitter.emit('syncFailed', { error: error instanceof Error ? error : new Error(errorMessage(error)), failures: n, retryInMs: delay });
        const details = { error: errorMessage(error), failures: n, retryInMs: delay, source: this.src };
        if (n === 1 || n % 10 === 0) this.log.warn('cannot sync with the control plane; serving the last snapshot', details);
        else this.log.debug('still cannot sync with the control plane', details);
      }
      await this.sleep(delay);
    }
  }

  private sleep(ms: number): Promise<void> {
    // A plain timer woken by close(): no AbortSignal listener per attempt. Ref'd on purpose: a process
    // awaiting `ready` while the server is down must keep waiting rather than exit.
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private checkIdle(): void {
    if (this.stream && performance.now() - this.lastByteAt > this.idleTimeoutMs) {
      this.stream.abort(new ControlPlaneError(WATCH_IDLE, `no byte from the watch for ${this.idleTimeoutMs} ms`));
    }
  }

  /** A request with the current token; after a 401, one retry with a freshly exchanged credential. */
  private async request(path: string, signal: AbortSignal, timeouts: Pick<SendOptions, 'headersTimeout' | 'bodyTimeout'> = {}): Promise<Dispatcher.ResponseData> {
    const res = await send(this.transport, 'GET', path, { authorization: await this.tokens.authorization(), signal, ...timeouts });
    if (res.statusCode !== 401) return res;
    const err = await errorFrom(res, `GET ${path.split('?')[0]}`);
    if (!(await this.tokens.renew())) throw err;
    return send(this.transport, 'GET', path, { authorization: await this.tokens.authorization(), signal, ...timeouts });
  }

  /** Lists every kind into a staging snapshot; the watch that follows completes it and swaps it in. */
  private async relist(): Promise<void> {
    const staged = new Snapshot();
    const floors = new Map<string, number>();
    for (const kind of this.scope.kinds) {
      let floor = Number.POSITIVE_INFINITY;
      let cont: string | undefined;
      do {
        const q = new URLSearchParams(this.query);
        q.set('limit', String(LIST_PAGE));
        if (cont !== undefined) q.set('continue', cont);
        const path = `/v1/resources/${encodeURIComponent(kind)}?${q.toString()}`;
        const page = await jsonFrom<ListAnswer>(await this.request(path, this.lifetime.signal), `GET /v1/resources/${kind}`);
        if (typeof page.revision !== 'number' || !Array.isArray(page.items) || !page.items.every(isResource)) {
          throw new ControlPlaneError(PROTOCOL_ERROR, `GET /v1/resources/${kind}: not a list`);
        }
        // Pages are read at different revisions; the oldest is what the whole list is safe to follow from.
        floor = Math.min(floor, page.revision);
        for (const r of page.items) staged.put(r);
        cont = typeof page.continue === 'string' && page.continue !== '' ? page.continue : undefined;
      } while (cont !== undefined);
      floors.set(kind, floor);
    }
    this.staging = { snapshot: staged, floors };
    // One watch from the oldest list covers every kind; per-kind floors drop what a newer list already has.
    this.cursor = Math.min(...floors.values());
    this.log.debug('listed', { items: staged.size, since: this.cursor });
  }

  private async watch(): Promise<void> {
    const q = new URLSearchParams(this.query);
    q.set('kinds', this.scope.kinds.join(','));
    q.set('since', String(this.cursor));
    const stream = new AbortController();
    this.stream = stream;
    this.syncedOnStream = false;
    this.lastByteAt = performance.now();
    let reason: DisconnectReason = 'ended';
    let failure: Error | undefined;
    try {
      // No undici timeouts on the stream: the idle check above bounds the wait for headers and for bytes.
      const res = await this.request(`/v1/watch?${q.toString()}`, stream.signal, { headersTimeout: 0, bodyTimeout: 0 });
      if (res.statusCode !== 200) throw await errorFrom(res, 'GET /v1/watch');
      this.streamOpen = true;
      await readWatchStream(
        res.body,
        (m) => this.onMessage(m),
        () => {
          this.lastByteAt = performance.now();
        },
      );
    } catch (e) {
      // An abort surfaces as undici's own error; the reason we aborted with is the one worth reporting.
      const error = stream.signal.aborted && stream.signal.reason instanceof Error ? stream.signal.reason : e;
      failure = error instanceof Error ? error : new Error(String(error));
      reason = isControlPlaneError(error, WATCH_IDLE) ? 'idle' : isControlPlaneError(error, REVISION_COMPACTED) ? 'resync' : isControlPlaneError(error, CLIENT_CLOSED) ? 'closed' : 'error';
      throw error;
    } finally {
      this.stream = undefined;
      if (this.streamOpen) {
        this.streamOpen = false;
        this.emitter.emit('disconnected', failure ? { reason, error: failure } : { reason });
      }
    }
  }

  private onMessage(m: WatchMessage): void {
    if (m.type === 'resync') {
      throw new ControlPlaneError(REVISION_COMPACTED, `watch since ${this.cursor}: compacted up to ${m.compactedRevision}`, { status: 410 });
    }
    if (m.type === 'change') {
      const ev = m.event;
      if (ev.revision > this.cursor) this.cursor = ev.revision;
      if (!this.kindSet.has(ev.resource.kind)) return;
      if (this.staging) {
        if (ev.revision > (this.staging.floors.get(ev.resource.kind) ?? 0)) this.staging.snapshot.apply(ev);
        return;
      }
      const applied = this.snapshot.apply(ev);
      if (ev.revision > this.rev) this.rev = ev.revision;
      if (applied) {
        this.writer?.schedule();
        this.emitter.emit('change', applied);
      }
      return;
    }
    // BOOKMARK: everything up to m.revision has been sent.
    if (m.revision > this.cursor) this.cursor = m.revision;
    let changes: WatchEvent[] = [];
    if (this.staging) {
      const next = this.staging.snapshot;
      this.staging = undefined;
      changes = this.snapshot.diff(next, m.revision);
      // Swapped in one step: readers see the old snapshot or the new one, never a half-relisted mix.
      this.snapshot = next;
      this.rev = m.revision;
      this.writer?.schedule();
    } else if (m.revision > this.rev) {
      this.rev = m.revision;
      if (this.writer && this.writer.sinceLastWrite > BOOKMARK_SAVE_INTERVAL_MS) this.writer.schedule();
    }
    const first = !this.syncedOnStream;
    if (first) {
      this.syncedOnStream = true;
      this.src = 'server';
      this.backoff.reset();
      this.readyD.resolve();
      this.startedD.resolve();
    }
    for (const c of changes) this.emitter.emit('change', c);
    if (first) this.emitter.emit('synced', { revision: this.rev });
  }

  // ---- the cache ------------------------------------------------------------------------------------

  private async loadCacheFile(file: string): Promise<void> {
    const cached = await loadCache(file, this.scope, this.log);
    if (!cached || this.closed) return;
    this.snapshot = Snapshot.of(cached.items);
    this.rev = cached.revision;
    this.cursor = cached.revision;
    this.src = 'cache';
    this.log.debug('started from the snapshot cache', { file, revision: cached.revision, items: this.snapshot.size });
    this.startedD.resolve();
    for (const r of this.snapshot.all()) this.emitter.emit('change', { type: 'ADDED', revision: r.metadata.revision, resource: r });
  }

  private cacheContents(): CacheContents {
    return { version: 1, ...this.scope, revision: this.rev, items: [...this.snapshot.all()], savedAt: new Date().toISOString() };
  }
}
