/**
 * Client certificates (mutual TLS) at the edge: what a connection's verified certificate says, read once per
 * connection, as a route's identity and as the `x-forwarded-client-cert` header the upstream is told.
 *
 * Verification itself is OpenSSL's, at the handshake, against `tls.clientCa`: node marks the socket
 * `authorized` or gives the reason in `authorizationError`. Nothing here trusts a certificate the handshake
 * did not verify.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import { checkRoles, type AuthOutcome, type Identity, type RoleIndex } from './auth.js';
import { GatewayCodes } from './errors.js';
import type { CompiledAuth } from './routes.js';

/** Envoy's header: `Hash=<sha256 of the DER, hex>;Subject="<RFC 2253 DN>";URI=<SAN>;DNS=<SAN>`. */
export const XFCC_HEADER = 'x-forwarded-client-cert';

/** Why a client certificate is no identity; the `reason` of `plinth_gateway_mtls_refusals_total`. */
export const MTLS_REFUSALS = ['no_certificate', 'untrusted', 'expired', 'invalid', 'unmapped', 'trust_domain'] as const;
export type MtlsRefusal = (typeof MTLS_REFUSALS)[number];

export interface SpiffeId {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly name: string;
}

/** A connection's client certificate, as read once. */
export interface ClientCert {
  /** Why it is no identity, before any route's own conditions (undefined: verified and mapped). */
  readonly refusal: MtlsRefusal | undefined;
  readonly detail: string;
  /** `ServiceAccount:<namespace>/<name>`, from the SPIFFE ID. */
  readonly subject: string | undefined;
  readonly spiffe: SpiffeId | undefined;
  /** Epoch ms of `notAfter`. */
  readonly validTo: number;
  /** The header value, set only for a verified certificate. */
  readonly xfcc: string | undefined;
}

const PEER = Symbol('plinth.gateway.clientCert');
type Cached = { [PEER]?: ClientCert };

const NONE: ClientCert = Object.freeze({
  refusal: 'no_certificate',
  detail: 'this route takes a client certificate (mutual TLS); the connection presented none',
  subject: undefined,
  spiffe: undefined,
  validTo: 0,
  xfcc: undefined,
});

/**
 * The client certificate of the connection `req` came on, undefined over plain HTTP. HTTP/2 requests reach
 * the connection's socket through node's socket proxy, so the cache is per connection either way.
 */
export function clientCertOf(req: IncomingMessage): ClientCert | undefined {
  const socket = req.socket as TLSSocket & Cached;
  if (socket.encrypted !== true) return undefined;
  let c = socket[PEER];
  if (c === undefined) socket[PEER] = c = readClientCert(socket);
  return c;
}

function readClientCert(socket: TLSSocket): ClientCert {
  const x509 = socket.getPeerX509Certificate();
  if (x509 === undefined) return NONE;
  const validTo = Date.parse(x509.validTo);
  if (socket.authorized !== true) {
    const code = typeof socket.authorizationError === 'string' ? socket.authorizationError : String(socket.authorizationError ?? 'unknown');
    const refusal = verifyRefusal(code);
    return { refusal, detail: verifyDetail(refusal, code), subject: undefined, spiffe: undefined, validTo, xfcc: undefined };
  }
  const xfcc = xfccOf(x509);
  const spiffe = spiffeIdOf(x509.subjectAltName, 'client');
  if (typeof spiffe === 'string') return { refusal: 'unmapped', detail: spiffe, subject: undefined, spiffe: undefined, validTo, xfcc };
  return { refusal: undefined, detail: '', subject: `ServiceAccount:${spiffe.namespace}/${spiffe.name}`, spiffe, validTo, xfcc };
}

/**
 * The one SPIFFE ID of Plinth's form among a certificate's URI SANs (node's `subjectAltName` text), or why
 * there is none; `whose` names the certificate in that reason (`client`, `upstream`).
 */
export function spiffeIdOf(subjectAltName: string | undefined, whose: string): SpiffeId | string {
  const ids = sansOf(subjectAltName, 'URI').filter((u) => u.startsWith('spiffe://'));
  if (ids.length !== 1) {
    return ids.length === 0
      ? `the ${whose} certificate names no SPIFFE ID (a URI SAN spiffe://<trust-domain>/ns/<namespace>/sa/<name>)`
      : `the ${whose} certificate names more than one SPIFFE ID`;
  }
  const spiffe = parseSpiffeId(ids[0]!);
  return spiffe ?? `the ${whose} certificate's SPIFFE ID ${ids[0]!.slice(0, 200)} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<name>`;
}

/** OpenSSL's verify codes (as node names them) by what the operator can do about them. */
export function verifyRefusal(code: string): MtlsRefusal {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
    case 'CERT_NOT_YET_VALID':
      return 'expired';
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
      return 'untrusted';
    default:
      return 'invalid';
  }
}

function verifyDetail(refusal: MtlsRefusal, code: string): string {
  if (refusal === 'expired') return code === 'CERT_NOT_YET_VALID' ? 'the client certificate is not valid yet' : 'the client certificate has expired';
  if (refusal === 'untrusted') return `the client certificate is not signed by a CA this gateway trusts (${code})`;
  return `the client certificate does not verify (${code})`;
}

const SEGMENT = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;

/** `spiffe://<trust-domain>/ns/<namespace>/sa/<name>`, namespace and name as Plinth names them; else undefined. */
export function parseSpiffeId(uri: string): SpiffeId | undefined {
  if (!uri.startsWith('spiffe://') || uri.length > 2048) return undefined;
  const rest = uri.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined;
  const trustDomain = rest.slice(0, slash);
  const parts = rest.slice(slash + 1).split('/');
  if (!TRUST_DOMAIN.test(trustDomain) || parts.length !== 4 || parts[0] !== 'ns' || parts[2] !== 'sa') return undefined;
  const namespace = parts[1]!;
  const name = parts[3]!;
  if (namespace.length > 63 || name.length > 63 || !SEGMENT.test(namespace) || !SEGMENT.test(name)) return undefined;
  return { trustDomain, namespace, name };
}

/**
 * The entries of one type in node's `subjectAltName` text (`DNS:a, URI:spiffe://…`). Node quotes an entry
 * whose value holds a comma or a quote as a JSON string, so a crafted SAN cannot pose as two.
 */
export function sansOf(text: string | undefined, type: 'URI' | 'DNS'): string[] {
  if (text === undefined || text === '') return [];
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) break;
    const t = text.slice(i, colon);
    let value: string;
    let next: number;
    if (text.charCodeAt(colon + 1) === 34 /* " */) {
      let j = colon + 2;
      while (j < text.length && text.charCodeAt(j) !== 34) j += text.charCodeAt(j) === 92 /* \ */ ? 2 : 1;
      try {
        value = JSON.parse(text.slice(colon + 1, j + 1)) as string;
      } catch {
        return out;
      }
      next = text.indexOf(', ', j + 1);
    } else {
      next = text.indexOf(', ', colon + 1);
      value = text.slice(colon + 1, next < 0 ? text.length : next);
    }
    if (t === type) out.push(value);
    if (next < 0) break;
    i = next + 2;
  }
  return out;
}

/** A header-safe value: printable ASCII only; anything else as its UTF-8 bytes, percent-encoded. */
function printable(s: string): string {
  return /^[\x20-\x7e]*$/.test(s) ? s : s.replace(/[^\x20-\x7e]+/g, (m) => encodeURIComponent(m));
}

/** Quoted when it holds a separator of the header (`,;="`) or a space, as Envoy does. */
function field(v: string): string {
  const p = printable(v);
  return /[,;="\s\\]/.test(p) ? `"${p.replace(/["\\]/g, '\\$&')}"` : p;
}

/**
 * node's subject is one `K=V` per line, most significant first, values already escaped as RFC 2253 says
 * (`O=Plinth\\, Inc.`); RFC 2253 lists them the other way round, comma-separated.
 */
function rfc2253(subject: string): string {
  return subject
    .split('\n')
    .filter((l) => l !== '')
    .reverse()
    .join(',');
}

export function xfccOf(x509: X509Certificate): string {
  const hash = x509.fingerprint256.replace(/:/g, '').toLowerCase();
  let out = `Hash=${hash};Subject="${printable(rfc2253(x509.subject)).replace(/["\\]/g, '\\$&')}"`;
  for (const u of sansOf(x509.subjectAltName, 'URI')) out += `;URI=${field(u)}`;
  for (const d of sansOf(x509.subjectAltName, 'DNS')) out += `;DNS=${field(d)}`;
  return out;
}

function refuse(detail: string): AuthOutcome {
  return { ok: false, status: 401, code: GatewayCodes.unauthenticated, detail };
}

/** A route's decision on a connection's certificate, before roles; `reason` says why for the metric. */
export function certOutcome(cert: ClientCert | undefined, auth: CompiledAuth, now: number): { outcome: AuthOutcome; reason: MtlsRefusal | undefined } {
  if (cert === undefined) return { outcome: refuse('this route takes a client certificate (mutual TLS), which needs an HTTPS connection'), reason: 'no_certificate' };
  if (cert.refusal !== undefined) return { outcome: refuse(cert.detail), reason: cert.refusal };
  // A connection outlives its certificate: the handshake's verdict holds only until notAfter.
  if (now > cert.validTo) return { outcome: refuse('the client certificate has expired'), reason: 'expired' };
  const spiffe = cert.spiffe!;
  if (auth.trustDomains !== undefined && !auth.trustDomains.has(spiffe.trustDomain)) {
    return { outcome: refuse(`the client certificate's trust domain ${spiffe.trustDomain} is not one this route accepts (${[...auth.trustDomains].join(', ')})`), reason: 'trust_domain' };
  }
  const identity: Identity = { subject: cert.subject!, via: 'mtls', audiences: [], expiresAt: Math.floor(cert.validTo / 1000) };
  return { outcome: { ok: true, identity }, reason: undefined };
}

/** The `x-forwarded-client-cert` value to send: only for a verified certificate, and only until its notAfter. */
export function forwardedCert(cert: ClientCert | undefined, now: number): string | undefined {
  return cert !== undefined && cert.xfcc !== undefined && now <= cert.validTo ? cert.xfcc : undefined;
}

/**
 * A route of mode mtls on one request (`verifying`: the listener checks client certificates, `tls.clientCa`): the connection's verified certificate as the identity, the route's
 * trust domains and roles applied. `reason` is set for a refusal of the certificate itself.
 */
export function authenticateCert(req: IncomingMessage, auth: CompiledAuth, verifying: boolean, roles: RoleIndex | undefined): { outcome: AuthOutcome; reason: MtlsRefusal | undefined } {
  if (!verifying) {
    return { outcome: { ok: false, status: 503, code: GatewayCodes.authUnavailable, detail: 'this gateway does not verify client certificates (it has no client CA bundle)' }, reason: undefined };
  }
  const r = certOutcome(clientCertOf(req), auth, Date.now());
  return r.reason === undefined ? { outcome: checkRoles(r.outcome, auth, roles), reason: undefined } : r;
}

/**
 * A handshake that failed over the client certificate (`clientCert: 'require'`), by reason; undefined for
 * any other failure. A certificate that does not verify is refused by node after OpenSSL's handshake, with
 * the verify code left on the socket; a missing one by OpenSSL itself.
 */
export function handshakeRefusal(err: NodeJS.ErrnoException, socket: TLSSocket): MtlsRefusal | undefined {
  const code = socket.authorizationError;
  if (code !== undefined && code !== null) return verifyRefusal(String(code));
  if (err.code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' || err.code === 'ERR_SSL_NO_CERTIFICATE_RETURNED') return 'no_certificate';
  return undefined;
}
