import { GRPC_RESOURCE_EXHAUSTED, GRPC_UNAVAILABLE, isGrpcServerError } from '@plinth/core';
import type { SpanKind, SpanRecord } from '../types.js';
import { BUCKETS, bucketOf } from './histogram.js';

/**
 * Which rollup rows a span feeds. `s`: server and consumer spans (service and endpoint figures); `c`: client
 * and producer spans with a known peer (caller -> callee edges); `i`: everything else, counted per service
 * only so that `services` and topology's "does it report spans" see services that only do internal work.
 */
export type KindGroup = 's' | 'c' | 'i';

export const MINUTE_MS = 60_000;

export interface RollupRow {
  namespace: string;
  grp: KindGroup;
  /** Epoch minute: floor(startMs / 60 000). */
  minute: number;
  service: string;
  /** Group s: the endpoint; c: the peer; i: ''. */
  target: string;
  /** '' when the span had none. */
  lane: string;
  stress: 0 | 1;
  region: string;
  version: string;
  count: number;
  errors: number;
  rejections: number;
  hist: number[];
}

export function kindGroup(kind: SpanKind, peer: string | undefined): KindGroup {
  if (kind === 'server' || kind === 'consumer') return 's';
  if ((kind === 'client' || kind === 'producer') && peer) return 'c';
  return 'i';
}

/**
 * Error status, an HTTP 5xx answer, or a gRPC code that is the server's failure (a gRPC call is HTTP 200
 * whatever happened). Applied to client spans too, so that an edge's error figure agrees with the callee's
 * own when the client instrumentation left the status unset.
 */
export function isError(s: SpanRecord): boolean {
  return s.status === 'error' || (s.httpStatus !== undefined && s.httpStatus >= 500) || (s.grpcStatus !== undefined && isGrpcServerError(s.grpcStatus));
}

/**
 * 429 and 503: what rate limits, breakers and load shedding answer; for gRPC, RESOURCE_EXHAUSTED and
 * UNAVAILABLE, which gRPC's own mapping gives those two.
 */
export function isRejection(s: SpanRecord): boolean {
  return s.httpStatus === 429 || s.httpStatus === 503 || s.grpcStatus === GRPC_RESOURCE_EXHAUSTED || s.grpcStatus === GRPC_UNAVAILABLE;
}

const SEP = '\u0000';

/**
 * Folds one batch into rollup rows, one per key. Sorted by key so that concurrent writers on a shared
 * database lock rows in the same order (no deadlocks between them).
 */
export function aggregate(spans: Iterable<SpanRecord>): RollupRow[] {
  const rows = new Map<string, RollupRow>();
  for (const s of spans) {
    const grp = kindGroup(s.kind, s.peer);
    const minute = Math.floor(s.startMs / MINUTE_MS);
    const target = grp === 's' ? (s.endpoint ?? s.name) : grp === 'c' ? s.peer! : '';
    const lane = s.lane ?? '';
    const stress = s.stress ? 1 : 0;
    const region = s.region ?? '';
    const version = s.version ?? '';
    const key = s.namespace + SEP + grp + SEP + minute + SEP + s.service + SEP + target + SEP + lane + SEP + stress + SEP + region + SEP + version;
    let row = rows.get(key);
    if (!row) {
      row = { namespace: s.namespace, grp, minute, service: s.service, target, lane, stress, region, version, count: 0, errors: 0, rejections: 0, hist: new Array<number>(BUCKETS).fill(0) };
      rows.set(key, row);
    }
    row.count++;
    if (isError(s)) row.errors++;
    if (isRejection(s)) row.rejections++;
    row.hist[bucketOf(s.durationMs)]!++;
  }
  return [...rows.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
}

/** The minutes a range touches: [floor(from), ceil(to)). Rollups are read at whole-minute resolution. */
export function minuteRange(fromMs: number, toMs: number): { from: number; to: number } {
  return { from: Math.floor(fromMs / MINUTE_MS), to: Math.ceil(toMs / MINUTE_MS) };
}
