import { BaggageKeys } from '@plinth/core';

/**
 * W3C Baggage (https://www.w3.org/TR/baggage/): `key=value;prop;prop=v, key2=value2`.
 * Parsing never throws: a malformed member is dropped and the rest kept, because a bad header from one
 * client must not fail its request nor strip the lane from the others' members.
 */

/** Limits from the W3C spec's minimums, as OpenTelemetry's propagators apply them. */
export const BAGGAGE_MAX_BYTES = 8192;
export const BAGGAGE_MAX_MEMBERS = 180;
export const BAGGAGE_MAX_MEMBER_BYTES = 4096;

export interface BaggageEntry {
  /** Decoded value. */
  readonly value: string;
  /** Member properties as received, normalized (`;a;b=c`), or undefined. Opaque to Plinth. */
  readonly properties: string | undefined;
}

/** Baggage of one request: key → entry, insertion-ordered so serialization is stable. */
export type Baggage = Map<string, BaggageEntry>;

// RFC 7230 token, and the W3C baggage-octet range (printable ASCII except space, '"', ',', ';', '\').
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAGGAGE_OCTETS = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*$/;

export function isBaggageKey(key: string): boolean {
  return key.length > 0 && key.length <= BAGGAGE_MAX_MEMBER_BYTES && TOKEN.test(key);
}

/** Trims optional whitespace (space and tab only: OWS in the spec's grammar). */
function ows(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

function decode(v: string): string | undefined {
  if (v.indexOf('%') < 0) return v;
  try {
    return decodeURIComponent(v);
  } catch {
    return undefined; // broken percent-encoding or invalid UTF-8: the member is malformed
  }
}

function parseProperties(parts: readonly string[]): string | undefined | null {
  if (parts.length === 0) return undefined;
  let out = '';
  for (const raw of parts) {
    const p = ows(raw);
    const eq = p.indexOf('=');
    if (eq < 0) {
      if (!TOKEN.test(p)) return null;
      out += ';' + p;
    } else {
      const k = ows(p.slice(0, eq));
      const v = ows(p.slice(eq + 1));
      if (!TOKEN.test(k) || !BAGGAGE_OCTETS.test(v)) return null;
      out += ';' + k + '=' + v;
    }
  }
  return out;
}

function parseMember(member: string, into: Baggage): void {
  if (member.length > BAGGAGE_MAX_MEMBER_BYTES) return;
  const parts = member.split(';');
  const kv = parts[0] ?? '';
  const eq = kv.indexOf('=');
  if (eq < 0) return;
  const key = ows(kv.slice(0, eq));
  const rawValue = ows(kv.slice(eq + 1));
  if (!TOKEN.test(key) || !BAGGAGE_OCTETS.test(rawValue)) return;
  const value = decode(rawValue);
  if (value === undefined) return;
  const properties = parseProperties(parts.slice(1));
  if (properties === null) return;
  // A repeated key: the later member wins, and keeps the earlier one's position in the order.
  into.set(key, { value, properties });
}

/**
 * Parses one or several `baggage` header values (repeated headers are one comma-separated list). Members
 * past the byte or member limits are dropped, the ones before them kept.
 */
export function parseBaggage(header: string | readonly string[] | undefined, into: Baggage = new Map()): Baggage {
  if (header === undefined) return into;
  const text = typeof header === 'string' ? header : header.join(',');
  if (text.length === 0) return into;
  let budget = BAGGAGE_MAX_BYTES;
  let start = 0;
  while (start <= text.length && into.size < BAGGAGE_MAX_MEMBERS) {
    let end = text.indexOf(',', start);
    if (end < 0) end = text.length;
    budget -= end - start + 1;
    if (budget < -1) break; // the last member needs no separator, hence -1
    const member = ows(text.slice(start, end));
    if (member.length > 0) parseMember(member, into);
    start = end + 1;
  }
  return into;
}

/** Serializes baggage, percent-encoding values and skipping what would break the limits. */
export function serializeBaggage(baggage: Baggage): string {
  let out = '';
  let members = 0;
  for (const [key, entry] of baggage) {
    if (members >= BAGGAGE_MAX_MEMBERS) break;
    if (!isBaggageKey(key)) continue;
    // encodeURIComponent leaves only A-Z a-z 0-9 - _ . ! ~ * ' ( ) unescaped, all of them baggage-octets.
    const member = key + '=' + encodeURIComponent(entry.value) + (entry.properties ?? '');
    if (member.length > BAGGAGE_MAX_MEMBER_BYTES) continue;
    const sep = members === 0 ? 0 : 1;
    if (out.length + sep + member.length > BAGGAGE_MAX_BYTES) continue;
    out += sep ? ',' + member : member;
    members++;
  }
  return out;
}

export function getBaggage(baggage: Baggage, key: string): string | undefined {
  return baggage.get(key)?.value;
}

/** Sets (or with undefined, removes) one member. Invalid keys are ignored; returns whether it was applied. */
export function setBaggage(baggage: Baggage, key: string, value: string | undefined): boolean {
  if (value === undefined) {
    baggage.delete(key);
    return true;
  }
  if (!isBaggageKey(key)) return false;
  baggage.set(key, { value, properties: undefined });
  return true;
}

export function getLane(baggage: Baggage): string | undefined {
  const v = baggage.get(BaggageKeys.lane)?.value;
  return v === undefined || v === '' ? undefined : v;
}

export function setLane(baggage: Baggage, lane: string | undefined): void {
  setBaggage(baggage, BaggageKeys.lane, lane === '' ? undefined : lane);
}

/** The pressure-test mark: `plinth.stress=1` or `=true`. */
export function isStress(baggage: Baggage): boolean {
  const v = baggage.get(BaggageKeys.stress)?.value;
  return v === '1' || v === 'true';
}

export function setStress(baggage: Baggage, on: boolean): void {
  setBaggage(baggage, BaggageKeys.stress, on ? '1' : undefined);
}

export function getUserId(baggage: Baggage): string | undefined {
  return baggage.get(BaggageKeys.userId)?.value;
}

export function setUserId(baggage: Baggage, userId: string | undefined): void {
  setBaggage(baggage, BaggageKeys.userId, userId);
}

/**
 * Keys only the platform may set: everything under `plinth.` (lane, stress mark) and `user.id` (lane
 * stickiness and per-user quotas hang on it, so it must come from authentication, not from the client).
 */
export function isInternalBaggageKey(key: string): boolean {
  return key.startsWith('plinth.') || key === BaggageKeys.userId;
}

/**
 * A copy of `baggage` without internal keys, except those in `allowedKeys`: what the edge keeps from an
 * untrusted caller. Business keys pass through untouched.
 */
export function stripInternal(baggage: Baggage, allowedKeys: Iterable<string> = []): Baggage {
  const allowed = allowedKeys instanceof Set ? (allowedKeys as ReadonlySet<string>) : new Set(allowedKeys);
  const out: Baggage = new Map();
  for (const [k, e] of baggage) if (!isInternalBaggageKey(k) || allowed.has(k)) out.set(k, e);
  return out;
}
