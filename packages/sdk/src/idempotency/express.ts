import type { IncomingMessage, ServerResponse } from 'node:http';
import { Headers } from '@plinth/core';
import type { Idempotency } from './idempotency.js';
import { captureResponse, readBody, sendResponse, sendTooLarge } from './node-io.js';

/** The part of express's Request this middleware reads; an express Request is one. */
export interface ExpressRequestLike extends IncomingMessage {
  originalUrl?: string;
  body?: unknown;
}

/**
 * Express middleware: a request with an `Idempotency-Key` reaches the next handlers once; replays get the stored
 * response. Mount it after your body parser: the fingerprint then covers the parsed body (its JSON form, or
 * the bytes when it is a Buffer from `express.raw()`). Mounted before any parser, it reads the raw body itself
 * and leaves it in `req.body` as a Buffer, as `express.raw()` would (parsers after it then skip the request).
 */
export function expressIdempotency<Req extends ExpressRequestLike>(idem: Idempotency<Req>): (req: Req, res: ServerResponse, next: (err?: unknown) => void) => void {
  return (req, res, next) => {
    const key = idem.keyOf(req.method, req.headers[Headers.idempotencyKey]);
    if (key === undefined) {
      next();
      return;
    }
    void (async () => {
      let body: Buffer;
      if (req.readableEnded || req.body !== undefined) {
        body = bodyBytes(req.body);
      } else {
        const read = await readBody(req, idem.maxBodyBytes);
        if (read === undefined) {
          if (!req.destroyed) sendTooLarge(res, idem.maxBodyBytes);
          return;
        }
        body = read;
        req.body = read;
      }
      if (body.length > idem.maxBodyBytes) {
        sendTooLarge(res, idem.maxBodyBytes);
        return;
      }
      const d = await idem.begin(req, { method: req.method!, target: req.originalUrl ?? req.url ?? '/', key, body });
      if (d.kind === 'respond') {
        sendResponse(res, d.response);
        return;
      }
      // express's error handler answers a failing route with a 5xx through res.end, which releases the key.
      captureResponse(res, d.execution);
      next();
    })().catch(next);
  };
}

function bodyBytes(body: unknown): Buffer {
  if (body === undefined || body === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body);
  // A parsed body: the same bytes parse to the same value in the same key order, so its JSON is stable.
  return Buffer.from(JSON.stringify(body));
}
