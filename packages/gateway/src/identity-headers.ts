import type { IncomingHttpHeaders } from 'node:http';
import { Headers } from '@plinth/core';
import type { Identity } from './auth.js';
import { XFCC_HEADER } from './client-cert.js';

/** The verified subject, `ServiceAccount:<namespace>/<name>`, as the upstream reads it. */
export const IDENTITY_HEADER = 'plinth-identity';
/** The subject's roles (RoleBindings of the gateway's namespace), comma-separated, sorted. */
export const IDENTITY_ROLES_HEADER = 'plinth-identity-roles';
/** How the subject proved itself: `jwt`, `apiKey` or `mtls`. */
export const IDENTITY_VIA_HEADER = 'plinth-identity-via';

const PREFIX = 'plinth-identity';

export interface StripOptions {
  /** Keep identity headers (and `x-forwarded-client-cert`) set by a hop before this one (a sidecar behind an edge gateway). Default false. */
  keepIdentity: boolean;
  /** Keep `plinth-caller` (mesh traffic names its caller; edge clients must not choose one). Default false. */
  keepCaller: boolean;
}

/**
 * Drops what a client must not be able to assert: the identity headers and the client certificate header
 * (only the gateway's own verification sets them) and, at the edge, the caller name that rules' `callers` match on. Internal baggage
 * is dealt with by buildContext (kept only for trusted identities). Mutates `headers`; costs one scan
 * only when a `plinth-` header is present at all.
 */
export function stripIncoming(headers: IncomingHttpHeaders, o: StripOptions): void {
  if (!o.keepCaller && headers[Headers.caller] !== undefined) delete headers[Headers.caller];
  if (o.keepIdentity) return;
  // The verified client certificate: only the gateway that verified it sets it.
  if (headers[XFCC_HEADER] !== undefined) delete headers[XFCC_HEADER];
  if (headers[IDENTITY_HEADER] === undefined && headers[IDENTITY_ROLES_HEADER] === undefined && headers[IDENTITY_VIA_HEADER] === undefined) {
    // Cheap common case; a made-up plinth-identity-* name still goes through the scan below.
    let any = false;
    for (const k in headers) {
      if (k.length > PREFIX.length && k.startsWith(PREFIX)) {
        any = true;
        break;
      }
    }
    if (!any) return;
  }
  for (const k in headers) if (k.startsWith(PREFIX)) delete headers[k];
}

/** The identity as flat header pairs for the upstream (undici's array form). */
export function pushIdentity(out: string[], identity: Identity | undefined, roles: readonly string[]): void {
  if (identity === undefined) return;
  out.push(IDENTITY_HEADER, identity.subject, IDENTITY_VIA_HEADER, identity.via);
  if (roles.length > 0) out.push(IDENTITY_ROLES_HEADER, roles.join(','));
  const claims = identity.headers;
  if (claims !== undefined) for (let i = 0; i < claims.length; i++) out.push(claims[i]!);
}

/** Identity headers a trusted hop already set (sidecar mode), passed on as they came. */
export function pushIncomingIdentity(out: string[], headers: IncomingHttpHeaders): void {
  for (const k in headers) {
    if (!k.startsWith(PREFIX)) continue;
    const v = headers[k];
    if (typeof v === 'string') out.push(k, v);
  }
}

/** What may go into a header value taken from a token or an authorization service (node:http refuses the rest) and stay readable in a log. */
export const HEADER_SAFE = /^[\x20-\x7e]{1,4096}$/;
/** What may name a user: printable, no spaces. */
export const SUBJECT_SAFE = /^[\x21-\x7e]{1,256}$/;
