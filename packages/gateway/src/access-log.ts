import { jsonString } from '@plinth/core';
import { pino, type DestinationStream } from 'pino';

/** One line per request. */
export interface AccessEntry {
  method: string;
  host: string;
  path: string;
  route: string | undefined;
  /** The upstream service (for a split route, the one drawn). */
  service: string | undefined;
  status: number;
  durationMs: number;
  upstream: string | undefined;
  bytesIn: number;
  bytesOut: number;
  traceId: string | undefined;
  /** With `requestId` on: the ID sent upstream and returned to the client. */
  requestId?: string | undefined;
  identity: string | undefined;
  lane: string | undefined;
  stress: boolean;
  /** The stable code of a refusal or failure (`rate_limited`, `upstream_error`, …). */
  reason: string | undefined;
  /** A gRPC call's status code (0 OK), from the upstream's trailers or the gateway's own refusal. */
  grpcStatus?: number | undefined;
}

export interface AccessLogOptions {
  /** A file path, a file descriptor (1 = stdout, the default) or a stream with `write`. */
  destination?: string | number | DestinationStream;
  /**
   * Other processes write lines to the same destination (a gateway's workers sharing stdout): every write is
   * then whole lines of at most PIPE_BUF bytes, which a pipe never interleaves with another writer's.
   */
  shared?: boolean;
}

export interface AccessLog {
  write(e: AccessEntry): void;
  /** Lines dropped because the destination could not keep up (its buffer was full). */
  readonly dropped: number;
  /** Flushes what is buffered and, when the log opened the destination itself, closes it (on shutdown). */
  close(): Promise<void>;
}

/** Buffered before a write: larger chunks, fewer system calls per request under load. */
const MIN_WRITE = 16 * 1024;
const MAX_WRITE = 64 * 1024;
/** The most that may wait for a slow or stuck destination (a blocked pipe); beyond it lines are dropped and counted. */
const MAX_BUFFERED = 16 * 1024 * 1024;
/** POSIX's PIPE_BUF on Linux: a write of at most this many bytes to a pipe is never split. */
const PIPE_BUF = 4096;
/** A quiet gateway's lines still appear within this. */
const FLUSH_EVERY_MS = 1000;

/**
 * pino's line format (`level`, `time` as ISO 8601, then the entry's fields, undefined ones left out) through
 * pino's asynchronous destination (sonic-boom): a request pays for one line of text; the write to the file
 * happens off the hot path in chunks of 16 KiB or more, and at least once a second, so a line never waits for
 * traffic to push it out. The buffer is bounded: a destination that stops taking lines costs dropped lines
 * (counted), never the gateway's memory.
 *
 * The line is written by `accessLine` rather than by `logger.info(entry)`: the entry's shape is fixed, and
 * pino's generic serializer (a walk over the keys, a type test and an escape scan per value, a new Date per
 * line) cost about 2 µs a line against about 0.6 µs, on a proxy hop whose whole budget is tens of µs.
 */
export function createAccessLog(o: AccessLogOptions = {}): AccessLog {
  const d = o.destination ?? 1;
  const own = typeof d === 'string' || typeof d === 'number';
  // Buffer mode: in its text mode sonic-boom measures the UTF-8 length of its whole pending chunk (a string of up
  // to maxWrite, rebuilt by concatenation) on every write, about 2.5 µs a line; with Buffers it adds lengths
  // (about 0.3 µs a line, the Buffer included).
  const dest = own
    ? pino.destination({
        dest: d,
        sync: false,
        contentMode: 'buffer',
        // sonic-boom starts a new chunk rather than split a line, so chunks of whole lines stay within maxWrite.
        ...(o.shared === true ? { minLength: PIPE_BUF - 1024, maxWrite: PIPE_BUF } : { minLength: MIN_WRITE, maxWrite: MAX_WRITE }),
        maxLength: MAX_BUFFERED,
        periodicFlush: FLUSH_EVERY_MS,
      })
    : d;
  const sink = dest as unknown as { write(chunk: string | Buffer): unknown };
  let dropped = 0;
  if (own) {
    const events = dest as unknown as NodeJS.EventEmitter;
    events.on('drop', () => dropped++);
    // A reader that went away (EPIPE on a piped stdout) costs the log, never the gateway.
    events.on('error', () => dropped++);
  }
  const clock = new IsoClock();
  return {
    write(e) {
      const line = accessLine(e, clock.now());
      sink.write(own ? Buffer.from(line) : line);
    },
    get dropped() {
      return dropped;
    },
    close() {
      return new Promise<void>((resolve) => {
        const s = dest as { flush?: (cb?: (err?: Error) => void) => void; end?: () => void; once?: (event: string, fn: () => void) => void };
        const done = (): void => {
          // stdout stays open for whoever else writes to it; a file we opened is ours to close, and closed only
          // once the last chunk is written (end() writes what the flush left under minLength).
          if (own && d !== 1 && d !== 2 && s.end !== undefined && s.once !== undefined) {
            s.once('close', resolve);
            // A destination that failed (EPIPE, a full disk) may never close cleanly: shutdown must not wait on it.
            s.once('error', resolve);
            s.end();
          } else resolve();
        };
        if (typeof s.flush !== 'function') return done();
        try {
          s.flush(() => done());
        } catch {
          done();
        }
      });
    },
  };
}

/** JSON has no NaN or Infinity; pino writes them as null. */
function num(n: number): string {
  return Number.isFinite(n) ? String(n) : 'null';
}

/**
 * One access-log line, newline included: what pino's `info(e)` writes at `time`, with lone surrogates escaped
 * (hosts, paths and identities come from outside and may hold any character).
 */
export function accessLine(e: AccessEntry, time: string): string {
  let line = `{"level":30,"time":"${time}","method":${jsonString(e.method)},"host":${jsonString(e.host)},"path":${jsonString(e.path)}`;
  if (e.route !== undefined) line += `,"route":${jsonString(e.route)}`;
  if (e.service !== undefined) line += `,"service":${jsonString(e.service)}`;
  line += `,"status":${num(e.status)},"durationMs":${num(e.durationMs)}`;
  if (e.upstream !== undefined) line += `,"upstream":${jsonString(e.upstream)}`;
  line += `,"bytesIn":${num(e.bytesIn)},"bytesOut":${num(e.bytesOut)}`;
  if (e.traceId !== undefined) line += `,"traceId":${jsonString(e.traceId)}`;
  if (e.requestId !== undefined) line += `,"requestId":${jsonString(e.requestId)}`;
  if (e.identity !== undefined) line += `,"identity":${jsonString(e.identity)}`;
  if (e.lane !== undefined) line += `,"lane":${jsonString(e.lane)}`;
  line += e.stress ? ',"stress":true' : ',"stress":false';
  if (e.reason !== undefined) line += `,"reason":${jsonString(e.reason)}`;
  if (e.grpcStatus !== undefined) line += `,"grpcStatus":${num(e.grpcStatus)}`;
  return `${line}}\n`;
}

/**
 * `new Date().toISOString()` without a Date per line: the text up to the second is kept for the second it
 * names, and the milliseconds are appended (a busy gateway writes thousands of lines a second).
 */
export class IsoClock {
  private second = Number.NaN;
  private prefix = '';

  constructor(private readonly nowMs: () => number = Date.now) {}

  now(): string {
    const t = this.nowMs();
    const second = Math.floor(t / 1000);
    if (second !== this.second) {
      this.second = second;
      // `YYYY-MM-DDTHH:MM:SS.`; years past 9999 (or before 0) have a longer prefix, still ending in the dot.
      const iso = new Date(second * 1000).toISOString();
      this.prefix = iso.slice(0, iso.length - 4);
    }
    const ms = t - second * 1000;
    return `${this.prefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${Math.floor(ms)}Z`;
  }
}

/** No access log at all. */
export const NO_ACCESS_LOG: AccessLog = { write() {}, dropped: 0, close: () => Promise.resolve() };
