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
  /** Flushes what is buffered (on shutdown). */
  flush(): Promise<void>;
}

/**
 * pino JSON lines through sonic-boom's asynchronous destination: a request pays for one JSON serialization
 * into a buffer, the write to the file happens off the hot path in larger chunks.
 */
export function createAccessLog(o: AccessLogOptions = {}): AccessLog {
  const d = o.destination ?? 1;
  const dest = typeof d === 'string' || typeof d === 'number' ? pino.destination({ dest: d, sync: false, minLength: 4096 }) : d;
  const log: Logger = pino({ base: null, messageKey: 'msg', timestamp: pino.stdTimeFunctions.isoTime }, dest);
  return {
    write(e) {
      log.info(e);
    },
    flush() {
      return new Promise<void>((resolve) => {
        const s = dest as { flush?: (cb?: (err?: Error) => void) => void };
        if (typeof s.flush !== 'function') return resolve();
        try {
          s.flush(() => resolve());
        } catch {
          resolve();
        }
      });
    },
  };
}

/** No access log at all. */
export const NO_ACCESS_LOG: AccessLog = { write() {}, flush: () => Promise.resolve() };
