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
export type UpstreamBody = { readonly replayable: true; readonly data: Buffer | null } | { readonly replayable: false; readonly data: Readable };

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
  if (plan.length !== undefined && plan.length > REPLAYABLE_BYTES) return { replayable: false, data: req };
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
        resolve({ replayable: false, data: Readable.from(continued(chunks, req, size, max)) });
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

async function* continued(head: Buffer[], req: IncomingMessage, size: number, max: number): AsyncGenerator<Buffer> {
  yield* head;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new BodyTooLargeError(max);
    yield c;
  }
}
