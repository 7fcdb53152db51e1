/**
 * Relative deadlines on the wire (`plinth-timeout-ms`, `Headers.timeout` in @plinth/core): each hop sends
 * the time its callee has left, as whole milliseconds, and turns the one it received into an absolute
 * deadline on its own monotonic clock. Relative rather than absolute, so hops need no synchronized clocks.
 */

/** Ceiling for a received budget: 24 h. A hostile or buggy `plinth-timeout-ms: 99999999999999999999` must not pin a call forever. */
export const MAX_TIMEOUT_MS = 86_400_000;

/** More digits than this is far above MAX_TIMEOUT_MS whatever they say; skips converting megabyte strings. */
const MAX_DIGITS = 15;

/**
 * The remaining budget a caller sent, in ms, or undefined when absent or malformed (anything but digits:
 * signs, decimals, exponents, hex, empty). Huge values are capped at MAX_TIMEOUT_MS. Repeated fields
 * (an array, or one comma-joined string) must all be well-formed; the smallest wins, since the tighter
 * deadline is the one some caller is really waiting on.
 */
export function parseTimeoutHeader(value: string | string[] | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') return value.includes(',') ? parseList(value.split(',')) : parseOne(value);
  const parts: string[] = [];
  for (const v of value) parts.push(...v.split(','));
  return parseList(parts);
}

function parseList(parts: readonly string[]): number | undefined {
  let min = Infinity;
  for (const p of parts) {
    const n = parseOne(p);
    if (n === undefined) return undefined;
    if (n < min) min = n;
  }
  return min === Infinity ? undefined : min;
}

function parseOne(raw: string): number | undefined {
  const v = raw.trim();
  if (v.length === 0 || !/^\d+$/.test(v)) return undefined;
  if (v.length > MAX_DIGITS) return MAX_TIMEOUT_MS;
  return Math.min(Number(v), MAX_TIMEOUT_MS);
}

/** gRPC's `grpc-timeout` units (gRPC over HTTP/2: TimeoutValue, at most 8 digits, then the unit), in ms. */
const GRPC_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * The budget a gRPC client sent in `grpc-timeout` (`5S`, `250m`, `100000u`), in ms, capped at
 * MAX_TIMEOUT_MS; undefined when absent or malformed. What gRPC clients send instead of `plinth-timeout-ms`.
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value.trim());
  if (m === null) return undefined;
  return Math.min(Number(m[1]) * GRPC_UNITS[m[2]!]!, MAX_TIMEOUT_MS);
}

/** The `grpc-timeout` value for the next hop: whole ms, floored, as `<n>m`. */
export function formatGrpcTimeout(remaining: number): string {
  return `${formatTimeout(remaining)}m`;
}

/**
 * The absolute deadline `now + min(budgets)`, ignoring undefined (and NaN or Infinity: no budget); a
 * negative budget counts as 0. Undefined when no budget applies.
 */
export function deadlineAt(now: number, ...budgetsMs: (number | undefined)[]): number | undefined {
  let min = Infinity;
  for (let i = 0; i < budgetsMs.length; i++) {
    const b = budgetsMs[i];
    if (b !== undefined && b < min) min = b;
  }
  return min === Infinity ? undefined : now + Math.max(0, min);
}

/** Ms left until `deadline`: Infinity without one, never below 0. */
export function remainingMs(deadline: number | undefined, now: number): number {
  if (deadline === undefined) return Infinity;
  const r = deadline - now;
  return r > 0 ? r : 0;
}

/**
 * The header value for the next hop: whole ms, floored (rounding up would grant the callee time the caller
 * does not have), within [0, MAX_TIMEOUT_MS]. Callers without a deadline send no header; Infinity formats
 * as the cap for those that send one anyway.
 */
export function formatTimeout(remaining: number): string {
  if (!(remaining > 0)) return '0';
  const ms = Math.floor(Math.min(remaining, MAX_TIMEOUT_MS));
  // Calls under one timeout rule mostly send the same figure: keep the last string rather than format anew.
  if (ms !== lastMs) {
    lastMs = ms;
    lastText = String(ms);
  }
  return lastText;
}

let lastMs = 0;
let lastText = '0';
