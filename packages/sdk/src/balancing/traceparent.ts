import { randomHex } from './ids.js';

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

/** `-00` … `-ff`: flags are nearly always 01 or 00, and a table beats formatting a number per header. */
const FLAG_SUFFIX: readonly string[] = Array.from({ length: 256 }, (_, f) => `-${f < 16 ? '0' : ''}${f.toString(16)}`);

/** Formats a traceparent; always version 00, as the spec asks of a tracer that only knows 00. */
export function formatTraceparent(ctx: TraceContext): string {
  return traceparentOf(ctx.traceId, ctx.spanId, ctx.flags);
}

/** The traceparent of a child span with a fresh id, without a TraceContext object for it (one per outbound try). */
export function childTraceparent(traceId: string, flags: number): string {
  return traceparentOf(traceId, randomHex(8), flags);
}

function traceparentOf(traceId: string, spanId: string, flags: number): string {
  return '00-' + traceId + '-' + spanId + FLAG_SUFFIX[flags & 0xff]!;
}

export function isSampled(ctx: TraceContext): boolean {
  return (ctx.flags & FLAG_SAMPLED) !== 0;
}

/** 32 lowercase hex, random, never all zero (from the id pool the tracer draws on too). */
export function randomTraceId(): string {
  return randomHex(16);
}

/** 16 lowercase hex, random, never all zero. */
export function randomSpanId(): string {
  return randomHex(8);
}

/** A new root context. */
export function newTraceContext(sampled = true): TraceContext {
  return { traceId: randomHex(16), spanId: randomHex(8), flags: sampled ? FLAG_SAMPLED : 0 };
}

/** The context for a child span (an outbound call): same trace and flags, new span id. */
export function childContext(parent: TraceContext): TraceContext {
  return { traceId: parent.traceId, spanId: randomHex(8), flags: parent.flags };
}
