import { PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, type Problem } from '@plinth/core';
import type { StoredResponse } from './types.js';

/**
 * Stable codes of the idempotency layer, each with the status the draft (draft-ietf-httpapi-idempotency-key-header)
 * or RFC 9110 gives it. Clients and tests match on `code`, never on the text.
 */
export const IdempotencyCodes = {
  /** Malformed key: empty, longer than 255 characters, not printable ASCII, or a broken sf-string. */
  KEY_INVALID: { code: 'idempotency_key_invalid', status: 400, title: 'The Idempotency-Key is not valid' },
  /** The first request with this key is still executing; retrying the same request later is safe. */
  KEY_IN_USE: { code: 'idempotency_key_in_use', status: 409, title: 'A request is outstanding for this Idempotency-Key' },
  /** The key was used for a different request (method, path or body); a retry must send the original. */
  KEY_REUSED: { code: 'idempotency_key_reused', status: 422, title: 'The Idempotency-Key was used for a different request' },
  /** The body is too large to fingerprint (same code as the control plane's). */
  PAYLOAD_TOO_LARGE: { code: 'payload_too_large', status: 413, title: 'The request body is too large' },
  /** The store could not be reached; nothing ran, so a retry is safe. */
  UNAVAILABLE: { code: 'idempotency_unavailable', status: 503, title: 'Idempotency is unavailable' },
} as const;

export type IdempotencyCodeName = keyof typeof IdempotencyCodes;
export type IdempotencyCode = (typeof IdempotencyCodes)[IdempotencyCodeName]['code'];

/** An RFC 9457 problem document as a ready-to-send response. */
export function problemResponse(name: IdempotencyCodeName, detail: string, headers: Record<string, string> = {}): StoredResponse {
  return problemOf(IdempotencyCodes[name], detail, headers);
}

/** The same for any coded error definition (e.g. core's `ErrorCodes.INTERNAL`). */
export function problemOf(def: { code: string; status: number; title: string }, detail: string, headers: Record<string, string> = {}): StoredResponse {
  const problem: Problem = { type: PROBLEM_TYPE_BASE + def.code, title: def.title, status: def.status, detail, code: def.code };
  return {
    status: def.status,
    headers: { 'content-type': PROBLEM_CONTENT_TYPE, 'cache-control': 'no-store', ...headers },
    body: Buffer.from(JSON.stringify(problem)),
  };
}
