import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';

/** Bodies up to this size are read into memory first, so a retry can send them again. */
export const REPLAYABLE_BYTES = 64 * 1024;

/** Raised when a body grows past the route's limit while streaming; recognised by class. */
export class BodyTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`request body larger than ${limit} bytes`);
    this.name = 'BodyTooLargeError';
  }
}

/**
 * What is sent upstream: nothing, a buffer (replayable: retries may send it again), or the request itself
 * streaming through (not replayable).
 */
export type UpstreamBody = { readonly replayable: true; readonly data: Buffer | null } | { readonly replayable: false; readonly data: RestOfBody };

const NO_BODY: UpstreamBody = { replayable: true, data: null };

export type BodyPlan = { readonly kind: 'none' } | { readonly kind: 'tooLarge' } | { readonly kind: 'read'; readonly length: number | undefined };

const PLAN_NONE: BodyPlan = { kind: 'none' };
const PLAN_TOO_LARGE: BodyPlan = { kind: 'tooLarge' };

/** From the headers alone: is there a body, and is it over the limit already by its declared length? */
export function planBody(req: IncomingMessage, max: number): BodyPlan {
  const cl = req.headers['content-length'];
  if (cl !== undefined) {
    const n = Number(cl);
    if (n === 0) return PLAN_NONE;
    if (n > max) return PLAN_TOO_LARGE;
    return { kind: 'read', length: n };
  }
  if (req.headers['transfer-encoding'] === undefined) return PLAN_NONE;
  return { kind: 'read', length: undefined };
}

/**
 * Reads a small body whole; a large one is handed on as a stream. With a declared length the parser already
 * holds the body to it; a chunked body is counted against `max` as it streams.
 */
export function readBody(req: IncomingMessage, plan: BodyPlan, max: number): Promise<UpstreamBody> | UpstreamBody {
  if (plan.kind !== 'read') return NO_BODY;
  if (plan.length !== undefined && plan.length > REPLAYABLE_BYTES) return { replayable: false, data: new RestOfBody(req, [], 0, max) };
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    const onData = (c: Buffer): void => {
      size += c.length;
      chunks.push(c);
      if (size > max) {
        done();
        reject(new BodyTooLargeError(max));
      } else if (size > REPLAYABLE_BYTES) {
        // Too big to keep for retries: what was read goes first, the rest streams behind it.
        done();
        req.pause();
        resolve({ replayable: false, data: new RestOfBody(req, chunks, size, max) });
      }
    };
    const onEnd = (): void => {
      done();
      resolve({ replayable: true, data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) });
    };
    const onError = (e: Error): void => {
      done();
      reject(e);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/**
 * A request body streaming upstream: what was read already, then the rest as it comes, counted against
 * `max` and paused with the request while the upstream is slow. Destroyed before its end (the upstream
 * answered without reading it all, or went away), it lets go of the request, which then drains into
 * nothing: the client finishes sending and reads its answer, instead of the request being torn down with
 * the answer on it (over HTTP/2 they share one stream).
 */
export class RestOfBody extends Readable {
  /**
   * Why the body stopped early (over the limit, the client gone). The stream ends without an error: an
   * error thrown into undici's HTTP/2 body pipe sends node's HTTP/2 session into a loop (see UpstreamTry);
   * the try reads the reason here.
   */
  failure: Error | undefined;
  private size: number;

  constructor(
    private readonly req: IncomingMessage,
    head: readonly Buffer[],
    size: number,
    private readonly max: number,
  ) {
    super();
    this.size = size;
    for (const c of head) this.push(c);
    req.on('data', this.onData);
    req.on('end', this.onEnd);
    req.on('error', this.onError);
    req.on('close', this.onClose);
  }

  private readonly onData = (c: Buffer): void => {
    this.size += c.length;
    if (this.size > this.max) this.stop(new BodyTooLargeError(this.max));
    else if (!this.push(c)) this.req.pause();
  };

  private readonly onEnd = (): void => {
    this.push(null);
  };

  private readonly onError = (e: Error): void => {
    this.stop(e);
  };

  private readonly onClose = (): void => {
    if (!this.req.readableEnded) this.stop(new Error('the client closed the request before its body ended'));
  };

  private stop(reason: Error): void {
    this.failure ??= reason;
    this.destroy();
  }

  override _read(): void {
    this.req.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const req = this.req;
    req.off('data', this.onData);
    req.off('end', this.onEnd);
    req.off('error', this.onError);
    req.off('close', this.onClose);
    if (!req.readableEnded && !req.destroyed) req.resume();
    callback(error);
  }
}
