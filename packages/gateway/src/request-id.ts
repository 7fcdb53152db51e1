import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { ownedOnRequest } from '@plinth/core';

/**
 * A request ID per request, as Envoy's `x-request-id` and nginx's `$request_id`: sent upstream, returned to the
 * client on every answer (the gateway's own refusals too), written to the access log. The one thing a user
 * quotes in a support ticket, and what an app that logs its own lines joins them on.
 */
export interface RequestIdOptions {
  /** Default `x-request-id`. */
  header?: string;
}

export interface CompiledRequestId {
  header: string;
  /**
   * Keep a well-formed ID that came with the request: behind a trusted proxy at the edge (the load balancer
   * set it), always in sidecar mode (the calling sidecar or the app did). Otherwise a client could choose the
   * ID its request is logged under, so the gateway makes its own.
   */
  keepIncoming: boolean;
}

/** The hop's server span carries the ID, so that `plinth traces --tag plinth.request_id=<id>` finds the trace a user quotes it for. */
export const REQUEST_ID_ATTRIBUTE = 'plinth.request_id';

/** Visible ASCII, no spaces, at most 200 characters: fits a log field and a header as it is. */
const WELL_FORMED = /^[\x21-\x7e]{1,200}$/;
const TOKEN = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
/** Credentials: an ID under their names would replace them. */
const CREDENTIALS = new Set(['authorization', 'cookie']);

export function compileRequestId(o: boolean | RequestIdOptions | undefined, keepIncoming: boolean): CompiledRequestId | undefined {
  if (o === undefined || o === false) return undefined;
  const header = (o === true ? undefined : o.header) ?? 'x-request-id';
  if (!TOKEN.test(header)) throw new TypeError(`requestId.header: ${JSON.stringify(header)} is not a lower-case header name`);
  // The headers a route may not edit either: an ID under one of their names would fight what the gateway sets.
  if (ownedOnRequest(header) || CREDENTIALS.has(header)) throw new TypeError(`requestId.header: ${header} is a header the gateway sets or strips itself`);
  return { header, keepIncoming };
}

/** The request's ID: the one it came with when that is kept, else a new UUID. */
export function requestIdOf(req: IncomingMessage, c: CompiledRequestId): string {
  if (c.keepIncoming) {
    const v = req.headers[c.header];
    if (typeof v === 'string' && WELL_FORMED.test(v)) return v;
  }
  return randomUUID();
}
