import type { ServerResponse } from 'node:http';
import { PlinthError, PROBLEM_CONTENT_TYPE, toProblem } from '@plinth/core';

/** Any thrown value becomes a problem+json answer; unknown errors are logged and answered 500 without detail. */
export function sendProblem(res: ServerResponse, err: unknown, instance?: string, onInternal?: (e: unknown) => void): void {
  let pe: PlinthError;
  if (err instanceof PlinthError) pe = err;
  else {
    onInternal?.(err);
    pe = new PlinthError('INTERNAL', 'internal error; the server log has the details');
  }
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(toProblem(pe, instance));
  const headers: Record<string, string | number> = {
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  };
  if (pe.status === 401) headers['www-authenticate'] = 'Bearer realm="plinth"';
  res.writeHead(pe.status, headers);
  res.end(body);
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string | number>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}
