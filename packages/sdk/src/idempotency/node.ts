import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCodes, Headers } from '@plinth/core';
import { errorMessage, type Logger } from '../logger.js';
import { problemOf } from './errors.js';
import type { Idempotency } from './idempotency.js';
import { captureResponse, readBody, sendResponse, sendTooLarge } from './node-io.js';

/**
 * A node:http handler behind `idempotent`. When the request carries a key, its stream has already been read to
 * fingerprint it and `body` holds the bytes; otherwise (a GET, or no key) the request is untouched and `body`
 * is `undefined`, so the handler reads the stream as usual. A third argument beats re-creating the stream:
 * an IncomingMessage cannot be rewound, and a stand-in stream would not be one.
 */
export type NodeIdempotentHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer | undefined) => void | Promise<void>;

/**
 * Wraps a node:http handler so a request with an `Idempotency-Key` runs it once; replays get the stored
 * response. A handler that throws (or rejects) gets a 500 problem and its key released.
 */
export function idempotent(handler: NodeIdempotentHandler, idem: Idempotency<IncomingMessage>): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const key = idem.keyOf(req.method, req.headers[Headers.idempotencyKey]);
    if (key === undefined) {
      guard(idem.logger, res, () => handler(req, res, undefined));
      return;
    }
    guard(idem.logger, res, async () => {
      const body = await readBody(req, idem.maxBodyBytes);
      if (body === undefined) {
        if (!req.destroyed) sendTooLarge(res, idem.maxBodyBytes);
        return;
      }
      const d = await idem.begin(req, { method: req.method!, target: req.url ?? '/', key, body });
      if (d.kind === 'respond') {
        sendResponse(res, d.response);
        return;
      }
      captureResponse(res, d.execution);
      await handler(req, res, body);
    });
  };
}

/** Runs the handler and turns a throw or a rejection into a 500; no promise is made for a synchronous handler. */
function guard(logger: Logger, res: ServerResponse, run: () => void | Promise<void>): void {
  try {
    const p = run();
    if (p !== undefined) p.then(undefined, (err: unknown) => fail(logger, res, err));
  } catch (err) {
    fail(logger, res, err);
  }
}

function fail(logger: Logger, res: ServerResponse, err: unknown): void {
  logger.warn('request handler failed', { error: errorMessage(err) });
  if (res.headersSent) res.destroy(err instanceof Error ? err : undefined);
  else sendResponse(res, problemOf(ErrorCodes.INTERNAL, 'The request handler failed.'));
}
