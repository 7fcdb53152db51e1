import { request, type Dispatcher } from 'undici';
import { ControlPlaneError, HTTP_ERROR } from './errors.js';

/** Where and how to reach the control plane; shared by the token source and the client. */
export interface Transport {
  /** Base URL without a trailing slash. */
  baseUrl: string;
  dispatcher: Dispatcher | undefined;
  /** Bound on waiting for headers and between body chunks of ordinary (non-watch) requests. */
  requestTimeoutMs: number;
}

export interface SendOptions {
  authorization: string;
  signal: AbortSignal;
  /** Overrides of the transport's timeouts; 0 disables one (the watch stream has its own liveness check). */
  headersTimeout?: number;
  bodyTimeout?: number;
}

/**
 * One HTTP request through undici. Network failures become `unavailable` errors carrying the cause, so the
 * caller sees one error type; an abort by the caller's signal is rethrown untouched so it can tell the two apart.
 */
export async function send(t: Transport, method: string, path: string, o: SendOptions): Promise<Dispatcher.ResponseData> {
  try {
    return await request(t.baseUrl + path, {
      method: method as Dispatcher.HttpMethod,
      headers: { authorization: o.authorization, accept: 'application/json, text/event-stream' },
      signal: o.signal,
      headersTimeout: o.headersTimeout ?? t.requestTimeoutMs,
      bodyTimeout: o.bodyTimeout ?? t.requestTimeoutMs,
      ...(t.dispatcher ? { dispatcher: t.dispatcher } : {}),
    });
  } catch (e) {
    if (o.signal.aborted) throw e;
    throw new ControlPlaneError('unavailable', `${method} ${path}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

/** Reads a non-2xx answer into an error with the server's stable code (RFC 9457), consuming the body. */
export async function errorFrom(res: Dispatcher.ResponseData, what: string): Promise<ControlPlaneError> {
  let text = '';
  try {
    text = await res.body.text();
  } catch {
    // The body is only used for the message; a broken one still leaves the status to report.
  }
  try {
    const p = JSON.parse(text) as { code?: unknown; detail?: unknown; title?: unknown };
    if (typeof p.code === 'string') {
      const detail = typeof p.detail === 'string' ? p.detail : typeof p.title === 'string' ? p.title : p.code;
      return new ControlPlaneError(p.code, `${what}: ${res.statusCode} ${p.code}: ${detail}`, { status: res.statusCode });
    }
  } catch {
    // Not a problem document (a proxy's HTML page, say): fall through to a generic error.
  }
  return new ControlPlaneError(HTTP_ERROR, `${what}: HTTP ${res.statusCode}${text ? `: ${text.slice(0, 200)}` : ''}`, { status: res.statusCode });
}

/** Reads a 2xx JSON answer, or throws the server's error. */
export async function jsonFrom<T>(res: Dispatcher.ResponseData, what: string): Promise<T> {
  if (res.statusCode < 200 || res.statusCode >= 300) throw await errorFrom(res, what);
  return (await res.body.json()) as T;
}
