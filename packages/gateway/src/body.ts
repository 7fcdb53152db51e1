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
 * What is sent upstream: nothing or a buffer (`whole`: retries send it again), or the request streaming
 * through (`stream`: each try opens it; retries replay it while it is small enough to have been kept).
 */
export type UpstreamBody = { readonly kind: 'whole'; readonly data: Buffer | null } | { readonly kind: 'stream'; readonly data: StreamedBody };

const NO_BODY: UpstreamBody = { kind: 'whole', data: null };

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
 * holds the body to it; a chunked body is counted against `max` as it streams. `live` (a gRPC call): the body
 * streams from its first byte, a copy kept for retries while it is small (see StreamedBody).
 */
export function readBody(req: IncomingMessage, plan: BodyPlan, max: number, live: boolean): Promise<UpstreamBody> | UpstreamBody {
  if (plan.kind !== 'read') return NO_BODY;
  if (live) return { kind: 'stream', data: new StreamedBody(req, NO_CHUNKS, 0, max, true) };
  if (plan.length !== undefined && plan.length > REPLAYABLE_BYTES) return { kind: 'stream', data: new StreamedBody(req, NO_CHUNKS, 0, max, false) };
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
        resolve({ kind: 'stream', data: new StreamedBody(req, chunks, size, max, false) });
      }
    };
    const onEnd = (): void => {
      done();
      resolve({ kind: 'whole', data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) });
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

const NO_CHUNKS: readonly Buffer[] = [];

/** A body that cannot be sent again was asked for a second try (the engine checks `replayable` first). */
const NOT_REPLAYABLE = Object.freeze(new Error('the request body streamed through and cannot be sent again'));

/**
 * A request body streaming upstream: what was read already, then the rest as it comes, counted against
 * `max` and paused with the request while the upstream is slow. Each try reads it through its own
 * `BodyReader` (`open`).
 *
 * With `keep`, a copy of what passed is kept up to REPLAYABLE_BYTES, so that a retry can send the body again:
 * the new try's reader starts with the copy and goes on with the rest as it comes. This is what a gRPC call
 * needs: a bidirectional one's client waits for answers before it ends its stream, so the body cannot be
 * read whole before the first try, and gRPC's own clients retry the same way (a buffer per call, dropped
 * once it passes its limit, gRFC A6). Past the limit the body is one try's only (`replayable` false).
 *
 * A reader destroyed before the end (the upstream answered without reading it all, or went away) lets go
 * of the request, which then drains into nothing but the copy: the client finishes sending and reads its
 * answer, instead of the request being torn down with the answer on it (over HTTP/2 they share one stream).
 */
export class StreamedBody {
  /** Bytes received so far. */
  size: number;
  /** Why the body stopped early (over the limit, the client gone); the try reads it from its reader. */
  failure: Error | undefined;
  /** What passed, while it is small enough to send again; undefined once it was not kept. */
  private kept: Buffer[] | undefined;
  private reader: BodyReader | undefined;
  private opened = false;
  private ended = false;
  private listening = false;

  constructor(
    private readonly req: IncomingMessage,
    private readonly head: readonly Buffer[],
    size: number,
    private readonly max: number,
    keep: boolean,
  ) {
    this.size = size;
    this.kept = keep ? [] : undefined;
  }

  /** Another try may send this body from its start. */
  get replayable(): boolean {
    return this.kept !== undefined && this.failure === undefined;
  }

  /** The body for one try: from its start, then as it comes. The previous try's reader is let go of. */
  open(): BodyReader {
    const reader = new BodyReader(this);
    const prev = this.reader;
    this.reader = reader;
    if (prev !== undefined) prev.destroy();
    if (!this.opened) {
      this.opened = true;
      for (const c of this.head) reader.push(c);
    } else if (this.kept === undefined) {
      reader.fail(NOT_REPLAYABLE);
      return reader;
    } else for (const c of this.kept) reader.push(c);
    if (this.failure !== undefined) reader.fail(this.failure);
    else if (this.ended) reader.push(null);
    else if (!this.listening) {
      const req = this.req;
      // The client may have gone while the call waited for its first try.
      if (req.destroyed && !req.readableEnded) {
        this.stop(new Error('the client closed the request before its body ended'));
        return reader;
      }
      this.listening = true;
      req.on('data', this.onData);
      req.on('end', this.onEnd);
      req.on('error', this.onError);
      req.on('close', this.onClose);
    }
    return reader;
  }

  private readonly onData = (c: Buffer): void => {
    this.size += c.length;
    if (this.size > this.max) return this.stop(new BodyTooLargeError(this.max));
    const kept = this.kept;
    if (kept !== undefined) {
      if (this.size <= REPLAYABLE_BYTES) kept.push(c);
      else this.kept = undefined;
    }
    const reader = this.reader;
    if (reader !== undefined && !reader.push(c)) this.req.pause();
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    this.unlisten();
    this.reader?.push(null);
  };

  private readonly onError = (e: Error): void => {
    this.stop(e);
  };

  private readonly onClose = (): void => {
    if (!this.req.readableEnded) this.stop(new Error('the client closed the request before its body ended'));
  };

  private stop(reason: Error): void {
    this.failure ??= reason;
    this.kept = undefined;
    this.unlisten();
    this.reader?.fail(reason);
  }

  private unlisten(): void {
    if (!this.listening) return;
    this.listening = false;
    const req = this.req;
    req.off('data', this.onData);
    req.off('end', this.onEnd);
    req.off('error', this.onError);
    req.off('close', this.onClose);
    if (!req.readableEnded && !req.destroyed) req.resume();
  }

  /**
   * No try will follow (an answer was taken): the copy is let go of, so a long-lived stream does not hold
   * its first 64 KiB for its whole life.
   */
  commit(): void {
    this.kept = undefined;
  }

  /** The reader wants more. */
  pull(reader: BodyReader): void {
    if (reader === this.reader && this.listening) this.req.resume();
  }

  /**
   * A reader is done before the body's end. Kept, the body goes on into the copy while it fits (a retry
   * may follow); past it, or not kept, the request drains into nothing.
   */
  letGo(reader: BodyReader): void {
    if (reader !== this.reader) return;
    this.reader = undefined;
    if (this.kept === undefined) this.unlisten();
    else if (this.listening) this.req.resume();
  }
}

/**
 * One try's view of a StreamedBody. It ends without an error when stopped early: an error thrown into
 * undici's HTTP/2 body pipe sends node's HTTP/2 session into a loop (see UpstreamTry); the try reads the
 * reason from `failure`.
 */
export class BodyReader extends Readable {
  failure: Error | undefined;

  constructor(private readonly source: StreamedBody) {
    super();
  }

  /** Bytes of the body received from the client so far (every try's reader tells the same). */
  get received(): number {
    return this.source.size;
  }

  fail(reason: Error): void {
    this.failure ??= reason;
    this.destroy();
  }

  /** This try's answer is the call's: see StreamedBody.commit. */
  commit(): void {
    this.source.commit();
  }

  override _read(): void {
    this.source.pull(this);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.source.letGo(this);
    callback(error);
  }
}
