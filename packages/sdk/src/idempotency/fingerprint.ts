import { createHash } from 'node:crypto';

/**
 * What makes two requests "the same" for a key: method, request target (path and query) and the exact body
 * bytes. Hashed into one fixed-size value so stores index a short string whatever the path's length.
 */
export function requestFingerprint(method: string, target: string, body: Uint8Array): string {
  return createHash('sha256').update(method.toUpperCase()).update('\n').update(target).update('\n').update(body).digest('base64url');
}
