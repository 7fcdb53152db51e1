import { pino, type DestinationStream, type Logger } from 'pino';

/** One line per request. */
export interface AccessEntry {
  method: string;
  host: string;
  path: string;
  route: string | undefined;
  status: number;
  durationMs: number;
  upstream: string | undefined;
  bytesIn: number;
  bytesOut: number;
  traceId: string | undefined;
  identity: string | undefined;
  lane: string | undefined;
  stress: boolean;
  /** The stable code of a refusal or failure (`rate_limited`, `upstream_error`, …). */
  reason: string | undefined;
}

export interface AccessLogOptions {
  /** A file path, a file descriptor (1 = stdout, the default) or a stream with `write`. */
  destination?: string | number | DestinationStream;
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
/** A quiet gateway's lines still appear within this. */
const FLUSH_EVERY_MS = 1000;

/**
 * pino JSON lines through sonic-boom's asynchronous destination: a request pays for one JSON serialization
 * into a buffer; the write to the file happens off the hot path in chunks of 16 KiB or more, and at least
 * once a second, so a line never waits for traffic to push it out. The buffer is bounded: a destination
 * that stops taking lines costs dropped lines (counted), never the gateway's memory.
 */
export function createAccessLog(o: AccessLogOptions = {}): AccessLog {
  const d = o.destination ?? 1;
  const own = typeof d === 'string' || typeof d === 'number';
  const dest = own ? pino.destination({ dest: d, sync: false, minLength: MIN_WRITE, maxWrite: MAX_WRITE, maxLength: MAX_BUFFERED, periodicFlush: FLUSH_EVERY_MS }) : d;
  let dropped = 0;
  if (own) {
    const events = dest as unknown as NodeJS.EventEmitter;
    events.on('drop', () => dropped++);
    // A reader that went away (EPIPE on a piped stdout) costs the log, never the gateway.
    events.on('error', () => dropped++);
  }
  const log: Logger = pino({ base: null, messageKey: 'msg', timestamp: pino.stdTimeFunctions.isoTime }, dest);
  return {
    write(e) {
      log.info(e);
    },
    get dropped() {
      return dropped;
    },
    close() {
      return new Promise<void>((resolve) => {
        const s = dest as { flush?: (cb?: (err?: Error) => void) => void; end?: () => void };
        const done = (): void => {
          // stdout stays open for whoever else writes to it; a file we opened is ours to close.
          if (own && d !== 1 && d !== 2) s.end?.();
          resolve();
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

/** No access log at all. */
export const NO_ACCESS_LOG: AccessLog = { write() {}, dropped: 0, close: () => Promise.resolve() };
