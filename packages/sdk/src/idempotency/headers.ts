import type { StoredResponse } from './types.js';

/** Set on every replayed response so a client can tell it got the first execution's answer. */
export const REPLAYED_HEADER = 'idempotent-replayed';

/**
 * Fields that describe one connection or one transfer (RFC 9110 §7.6.1), not the response: replaying them would
 * be wrong on another connection. content-length goes too: the transport recomputes it from the stored body.
 */
const NOT_STORED = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'date',
  REPLAYED_HEADER,
]);

/** Lower-cased, hop-by-hop fields dropped, numbers as strings; what a store should keep. */
export function storableHeaders(headers: Record<string, unknown>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  let dropped: Set<string> | undefined;
  const connection = headers['connection'] ?? headers['Connection'];
  // A Connection field can name further per-connection fields (RFC 9110 §7.6.1).
  if (typeof connection === 'string') dropped = new Set(connection.toLowerCase().split(',').map((s) => s.trim()));
  for (const name in headers) {
    const lower = name.toLowerCase();
    if (NOT_STORED.has(lower) || dropped?.has(lower)) continue;
    const v = headers[name];
    if (v === undefined || v === null) continue;
    out[lower] = Array.isArray(v) ? v.map(String) : String(v);
  }
  return out;
}

/** The stored response as it goes out again, marked as a replay. */
export function asReplay(stored: StoredResponse): StoredResponse {
  return { status: stored.status, headers: { ...stored.headers, [REPLAYED_HEADER]: 'true' }, body: stored.body };
}
