import { PlinthError } from '@plinth/core';
import { authorize, principalOf, type GuardDeps } from '../http/guard.js';
import { sendJson } from '../http/problem.js';
import type { RequestContext, Router } from '../http/router.js';
import { hasControlChars, tagKeyError } from './store/common.js';
import type { RedGroup, SpanStore, SplitTag, TimeRange } from './types.js';

export interface ApmQueryApiDeps extends GuardDeps {
  spans: SpanStore;
  /** Epoch ms, for relative and default time ranges; tests pin it. */
  now?: (() => number) | undefined;
}

/** RBAC pseudo-kind of everything the APM shows: `get` for one trace, `list` for searches and figures. */
export const TRACE_KIND = 'Trace';

const DEFAULT_RANGE_MS = 60 * 60 * 1000;
const MAX_TEXT = 256;
const MAX_TAGS = 20;
const TRACE_ID = /^[0-9a-f]{32}$/;
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:\d\d)$/i;
const RELATIVE = /^-(\d{1,9})(ms|s|m|h|d|w)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const SPLITS: readonly SplitTag[] = ['lane', 'stress', 'region', 'version'];
const GROUPS: readonly RedGroup[] = ['service', 'endpoint', 'edge'];

function invalid(field: string, message: string): PlinthError {
  return new PlinthError('INVALID_PARAMETER', `${field}: ${message}`, { errors: [{ field, message }] });
}

/** A misspelt filter must not silently widen a search: unknown parameters are refused. */
function onlyParams(q: URLSearchParams, allowed: readonly string[]): void {
  for (const key of q.keys()) if (!allowed.includes(key)) throw invalid(key, `unknown parameter; this endpoint takes ${allowed.join(', ')}`);
}

/** The single value of a parameter; repeating a single-valued one is an error, not "the last one wins". */
function single(q: URLSearchParams, name: string): string | undefined {
  const all = q.getAll(name);
  if (all.length > 1) throw invalid(name, 'given more than once');
  const v = all[0];
  return v === undefined || v === '' ? undefined : v;
}

function text(q: URLSearchParams, name: string): string | undefined {
  const v = single(q, name);
  if (v === undefined) return undefined;
  if (v.length > MAX_TEXT) throw invalid(name, `at most ${MAX_TEXT} characters`);
  if (hasControlChars(v)) throw invalid(name, 'control characters are not allowed');
  return v;
}

/** Spans without `service.namespace` land in `default`, so that is where a query without one looks. */
function namespaceOf(q: URLSearchParams): string {
  return text(q, 'namespace') ?? 'default';
}

function nonNegative(q: URLSearchParams, name: string): number | undefined {
  const v = single(q, name);
  if (v === undefined) return undefined;
  if (!/^\d{1,12}(\.\d{1,6})?$/.test(v)) throw invalid(name, 'a non-negative number of milliseconds');
  return Number(v);
}

function bool(q: URLSearchParams, name: string): boolean | undefined {
  const v = single(q, name);
  if (v === undefined) return undefined;
  if (v !== 'true' && v !== 'false') throw invalid(name, '"true" or "false"');
  return v === 'true';
}

function oneOf<T extends string>(q: URLSearchParams, name: string, values: readonly T[]): T | undefined {
  const v = single(q, name);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw invalid(name, `one of ${values.join(', ')}`);
  return v as T;
}

/** RFC 3339, epoch milliseconds, `now`, or relative to now: `-15m`, `-1h`, `-7d`. */
export function instant(q: URLSearchParams, name: string, now: number): number | undefined {
  const v = single(q, name);
  if (v === undefined) return undefined;
  if (v === 'now') return now;
  if (/^\d{1,15}$/.test(v)) return Number(v);
  const rel = RELATIVE.exec(v);
  if (rel) return now - Number(rel[1]) * UNIT_MS[rel[2]!]!;
  if (RFC3339.test(v)) {
    const t = Date.parse(v);
    if (Number.isFinite(t)) return t;
  }
  throw invalid(name, 'an RFC 3339 time, epoch milliseconds, "now" or a relative time like -1h');
}

/** Default: the last hour. */
export function range(q: URLSearchParams, now: number): TimeRange {
  const toMs = instant(q, 'to', now) ?? now;
  const fromMs = instant(q, 'from', now) ?? toMs - DEFAULT_RANGE_MS;
  if (fromMs >= toMs) throw invalid('from', 'must be before to');
  return { fromMs, toMs };
}

function tags(q: URLSearchParams): Record<string, string> | undefined {
  const all = q.getAll('tag');
  if (all.length === 0) return undefined;
  if (all.length > MAX_TAGS) throw invalid('tag', `at most ${MAX_TAGS} tags`);
  const out: Record<string, string> = {};
  for (const t of all) {
    const i = t.indexOf(':');
    const key = i > 0 ? t.slice(0, i) : '';
    const value = t.slice(i + 1);
    if (!key) throw invalid('tag', `${JSON.stringify(t.slice(0, 100))} is not key:value`);
    if (value.length > MAX_TEXT) throw invalid('tag', `values are at most ${MAX_TEXT} characters`);
    const keyError = tagKeyError(key);
    if (keyError) throw invalid('tag', keyError);
    if (hasControlChars(value)) throw invalid('tag', 'values must not contain control characters');
    if (key === 'stress' && value !== 'true' && value !== 'false') throw invalid('tag', 'stress is "true" or "false"');
    if (key in out && out[key] !== value) throw invalid('tag', `${JSON.stringify(key)} is given twice with different values`);
    out[key] = value;
  }
  return out;
}

function splits(q: URLSearchParams): SplitTag[] | undefined {
  const v = single(q, 'split');
  if (v === undefined) return undefined;
  const out: SplitTag[] = [];
  for (const part of v.split(',')) {
    const s = part.trim();
    if (!(SPLITS as readonly string[]).includes(s)) throw invalid('split', `${JSON.stringify(s.slice(0, 50))} is not one of ${SPLITS.join(', ')}`);
    if (!out.includes(s as SplitTag)) out.push(s as SplitTag);
  }
  return out;
}

function limit(q: URLSearchParams): number | undefined {
  const v = single(q, 'limit');
  if (v === undefined) return undefined;
  if (!/^\d{1,4}$/.test(v) || Number(v) < 1 || Number(v) > 1000) throw invalid('limit', 'a whole number from 1 to 1000');
  return Number(v);
}

/**
 * The APM's read API: traces, their search, RED figures, topology and the services seen. Every parameter is
 * checked before the store is asked: bad input answers 400 naming the parameter, never 500.
 */
export function registerApmQueryRoutes(router: Router, deps: ApmQueryApiDeps): void {
  const now = deps.now ?? Date.now;

  router.add('GET', '/v1/traces/:traceId', async (ctx) => {
    onlyParams(ctx.query, ['namespace']);
    const namespace = namespaceOf(ctx.query);
    const traceId = ctx.params.traceId!.toLowerCase();
    if (!TRACE_ID.test(traceId)) throw invalid('traceId', 'a trace id is 32 hex digits');
    await authorize(ctx, deps, 'get', TRACE_KIND, namespace, traceId);
    const spans = await deps.spans.trace(namespace, traceId);
    if (spans.length === 0) throw new PlinthError('NOT_FOUND', `no spans of trace ${traceId} in namespace ${namespace}`);
    sendJson(ctx.res, 200, { traceId, spans });
  });

  router.add('GET', '/v1/traces', async (ctx) => {
    const q = ctx.query;
    onlyParams(q, ['namespace', 'service', 'endpoint', 'status', 'minDurationMs', 'maxDurationMs', 'tag', 'from', 'to', 'limit']);
    const query = {
      namespace: namespaceOf(q),
      ...range(q, now()),
      service: text(q, 'service'),
      endpoint: text(q, 'endpoint'),
      status: oneOf(q, 'status', ['error', 'ok'] as const),
      minDurationMs: nonNegative(q, 'minDurationMs'),
      maxDurationMs: nonNegative(q, 'maxDurationMs'),
      tags: tags(q),
      limit: limit(q),
    };
    if (query.minDurationMs !== undefined && query.maxDurationMs !== undefined && query.minDurationMs > query.maxDurationMs) {
      throw invalid('minDurationMs', 'must not exceed maxDurationMs');
    }
    await list(ctx, query.namespace);
    sendJson(ctx.res, 200, { items: await deps.spans.searchTraces(query) });
  });

  router.add('GET', '/v1/apm/red', async (ctx) => {
    const q = ctx.query;
    onlyParams(q, ['namespace', 'service', 'group', 'split', 'from', 'to', 'includeStress']);
    const query = {
      namespace: namespaceOf(q),
      ...range(q, now()),
      service: text(q, 'service'),
      group: oneOf(q, 'group', GROUPS) ?? 'service',
      split: splits(q),
      includeStress: bool(q, 'includeStress'),
    };
    await list(ctx, query.namespace);
    sendJson(ctx.res, 200, { items: await deps.spans.red(query) });
  });

  router.add('GET', '/v1/apm/topology', async (ctx) => {
    const q = ctx.query;
    onlyParams(q, ['namespace', 'service', 'from', 'to', 'includeStress']);
    const query = { namespace: namespaceOf(q), ...range(q, now()), service: text(q, 'service'), includeStress: bool(q, 'includeStress') };
    await list(ctx, query.namespace);
    sendJson(ctx.res, 200, await deps.spans.topology(query));
  });

  router.add('GET', '/v1/apm/services', async (ctx) => {
    const q = ctx.query;
    onlyParams(q, ['namespace', 'from', 'to']);
    const namespace = text(q, 'namespace');
    const r = range(q, now());
    if (namespace !== undefined) {
      await list(ctx, namespace);
      sendJson(ctx.res, 200, { items: await deps.spans.services({ ...r, namespace }) });
      return;
    }
    // Across namespaces: only those the caller may list, as resource lists do.
    const p = principalOf(ctx);
    const items = (await deps.spans.services(r)).filter((s) => deps.identity.can(p, 'list', TRACE_KIND, s.namespace));
    sendJson(ctx.res, 200, { items });
  });

  function list(ctx: RequestContext, namespace: string): Promise<unknown> {
    return authorize(ctx, deps, 'list', TRACE_KIND, namespace);
  }
}
