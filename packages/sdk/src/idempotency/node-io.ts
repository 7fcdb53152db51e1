import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { problemResponse } from './errors.js';
import type { Execution } from './idempotency.js';
import type { StoredResponse } from './types.js';

/** The request body, or `undefined` when it is larger than `limit` (or the request was aborted). */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return Promise.resolve(undefined);
  return readStream(req, limit);
}

/**
 * A stream's bytes up to `limit`. Past the limit it stops listening but does not destroy the stream: for a
 * request that would take the socket, and with it the 413 the caller is about to send.
 */
export function readStream(stream: Readable, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer | string) => {
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      size += b.length;
      if (size > limit) {
        stream.pause();
        done(undefined);
        return;
      }
      chunks.push(b);
    };
    const onEnd = () => done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    const onFail = () => done(undefined);
    const done = (body: Buffer | undefined) => {
      stream.off('data', onData).off('end', onEnd).off('error', onFail).off('aborted', onFail);
      resolve(body);
    };
    stream.on('data', onData).on('end', onEnd).on('error', onFail).on('aborted', onFail);
  });
}

/** Writes a whole response through node's API (express and plain node:http alike). */
export function sendResponse(res: ServerResponse, r: StoredResponse): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  for (const name in r.headers) res.setHeader(name, r.headers[name]!);
  res.statusCode = r.status;
  res.end(r.body);
}

/** 413 before the body was read: the connection has unread bytes on it, so it is not reused. */
export function sendTooLarge(res: ServerResponse, limit: number): void {
  sendResponse(res, problemResponse('PAYLOAD_TOO_LARGE', `A request with an Idempotency-Key may carry at most ${limit} bytes.`, { connection: 'close' }));
}

type WriteHead = ServerResponse['writeHead'];
type Write = ServerResponse['write'];
type End = ServerResponse['end'];

/**
 * Lets the handler write to `res` as usual (the first execution streams to its client) while keeping a copy of
 * status, headers and body for replays. The response counts once `end()` is called, even if the client has
 * gone by then: the handler did run. A response closed without `end()` releases the key.
 */
export function captureResponse(res: ServerResponse, execution: Execution): void {
  const chunks: Buffer[] = [];
  const writeHead = res.writeHead as (this: ServerResponse, ...args: unknown[]) => ServerResponse;
  const write = res.write as (this: ServerResponse, ...args: unknown[]) => boolean;
  const end = res.end as (this: ServerResponse, ...args: unknown[]) => ServerResponse;
  let ended = false;
  let recorded: Promise<void> | undefined;

  // Headers handed to writeHead bypass getHeaders(); moving them to setHeader first keeps one place to read.
  res.writeHead = function (this: ServerResponse, status: number, ...rest: unknown[]) {
    const reason = typeof rest[0] === 'string' ? rest[0] : undefined;
    const headers = reason === undefined ? rest[0] : rest[1];
    if (headers !== undefined && !this.headersSent) setAll(this, headers as OutgoingHttpHeaders | readonly unknown[]);
    return reason === undefined ? writeHead.call(this, status) : writeHead.call(this, status, reason);
  } as WriteHead;

  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    keep(chunks, chunk, rest[0]);
    return write.call(this, chunk, ...rest);
  } as Write;

  // The last bytes wait until the store has the response, so a client that retries the moment it has its
  // answer finds the replay, not a key still claimed (which in 'reject' mode would be a spurious 409).
  res.end = function (this: ServerResponse, ...args: unknown[]) {
    // A second end() must not overtake the first one while that waits on the store.
    if (ended) {
      if (recorded === undefined) return end.apply(this, args);
      void recorded.then(() => end.apply(this, args));
      return this;
    }
    ended = true;
    if (typeof args[0] !== 'function') keep(chunks, args[0], args[1]);
    recorded = execution.finish({ status: this.statusCode, headers: this.getHeaders(), body: Buffer.concat(chunks) });
    void recorded.then(() => end.apply(this, args));
    return this;
  } as End;

  res.once('close', () => {
    if (!ended) {
      ended = true;
      void execution.finish(undefined);
    }
  });
}

function keep(chunks: Buffer[], chunk: unknown, encoding: unknown): void {
  if (chunk === undefined || chunk === null) return;
  if (typeof chunk === 'string') chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'));
  else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk));
}

function setAll(res: ServerResponse, headers: OutgoingHttpHeaders | readonly unknown[]): void {
  if (Array.isArray(headers)) {
    // Either [[name, value], ...] or the flat raw form [name, value, name, value].
    if (Array.isArray(headers[0])) {
      for (const [name, value] of headers as [string, string][]) res.appendHeader(name, value);
    } else {
      for (let i = 0; i + 1 < headers.length; i += 2) res.appendHeader(String(headers[i]), headers[i + 1] as string);
    }
    return;
  }
  for (const name in headers as OutgoingHttpHeaders) {
    const v = (headers as OutgoingHttpHeaders)[name];
    if (v !== undefined) res.setHeader(name, v);
  }
}
