import { randomFillSync } from 'node:crypto';

/**
 * W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/):
 * `version-traceid-parentid-flags`, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
 */
export interface TraceContext {
  /** 32 lowercase hex, not all zero. */
  readonly traceId: string;
  /** 16 lowercase hex, not all zero: the span that the next hop sees as its parent. */
  readonly spanId: string;
  /** Trace flags; bit 0 is "sampled". */
  readonly flags: number;
}

export const FLAG_SAMPLED = 0x01;
const V00_LENGTH = 55;

function isLowerHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function isAllZero(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (s.charCodeAt(i) !== 48) return false;
  return true;
}

/**
 * Parses a traceparent. Returns undefined for anything invalid, in which case the spec says to start a new
 * trace. Versions above 00 are read by their 00 prefix (forward compatibility); version ff is invalid.
 */
export function parseTraceparent(header: string | undefined): TraceContext | undefined {
  if (header === undefined) return undefined;
  const h = header.length > V00_LENGTH + 256 ? header.slice(0, V00_LENGTH + 1) : header.trim();
  if (h.length < V00_LENGTH) return undefined;
  if (!isLowerHex(h, 0, 2) || h[2] !== '-' || h[35] !== '-' || h[52] !== '-') return undefined;
  const version = h.slice(0, 2);
  if (version === 'ff') return undefined;
  // Version 00 has exactly four fields; a later version may append fields after another dash.
  if (version === '00' ? h.length !== V00_LENGTH : h.length > V00_LENGTH && h[V00_LENGTH] !== '-') return undefined;
  if (!isLowerHex(h, 3, 35) || !isLowerHex(h, 36, 52) || !isLowerHex(h, 53, 55)) return undefined;
  if (isAllZero(h, 3, 35) || isAllZero(h, 36, 52)) return undefined;
  return { traceId: h.slice(3, 35), spanId: h.slice(36, 52), flags: parseInt(h.slice(53, 55), 16) };
}

/** Formats a traceparent; always version 00, as the spec asks of a tracer that only knows 00. */
export function formatTraceparent(ctx: TraceContext): string {
  const f = ctx.flags & 0xff;
  return `00-${ctx.traceId}-${ctx.spanId}-${f < 16 ? '0' : ''}${f.toString(16)}`;
}

export function isSampled(ctx: TraceContext): boolean {
  return (ctx.flags & FLAG_SAMPLED) !== 0;
}

// One pooled buffer refilled in bulk: a randomFillSync call per id costs a syscall-sized overhead, one per
// 256 ids does not. Ids need uniqueness, not secrecy, but crypto randomness is what the spec recommends.
const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolOffset = POOL_SIZE;

function randomHex(bytes: number): string {
  for (;;) {
    if (poolOffset + bytes > POOL_SIZE) {
      randomFillSync(pool);
      poolOffset = 0;
    }
    const start = poolOffset;
    poolOffset += bytes;
    let zero = true;
    for (let i = start; i < start + bytes; i++) if (pool[i] !== 0) zero = false;
    // An all-zero id is invalid on the wire; the odds are 2^-64 at worst, but the check is cheap.
    if (!zero) return pool.toString('hex', start, start + bytes);
  }
}

export function randomTraceId(): string {
  return randomHex(16);
}

export function randomSpanId(): string {
  return randomHex(8);
}

/** A new root context. */
export function newTraceContext(sampled = true): TraceContext {
  return { traceId: randomTraceId(), spanId: randomSpanId(), flags: sampled ? FLAG_SAMPLED : 0 };
}

/** The context for a child span (an outbound call): same trace and flags, new span id. */
export function childContext(parent: TraceContext): TraceContext {
  return { traceId: parent.traceId, spanId: randomSpanId(), flags: parent.flags };
}
