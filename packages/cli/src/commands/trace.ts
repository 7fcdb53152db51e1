import type { SpanRecord, TraceSummary } from '@plinth/server';
import { InvalidArgumentError, type Command } from 'commander';
import type { PlinthClient } from '../client.js';
import { ApiError, CliError, ExitCode, UsageError } from '../errors.js';
import { formatAge, json, renderTable, yaml, type OutputFormat } from '../output.js';
import { clientOf, collect, namespaceOf, note, out, outputOf } from './common.js';

/** The fields of the server's SpanRecord the waterfall reads; JSON leaves out the ones that are undefined. */
export type WaterfallSpan = Pick<SpanRecord, 'spanId' | 'service' | 'name' | 'startMs' | 'durationMs' | 'status'> &
  Partial<Pick<SpanRecord, 'parentSpanId' | 'httpStatus' | 'lane' | 'stress'>>;

/** `GET /v1/traces/:traceId`. */
export interface TraceDocument {
  traceId: string;
  spans: (WaterfallSpan & Record<string, unknown>)[];
}

export const DEFAULT_WIDTH = 100;
/** Marks a span whose parent the server never received; it is drawn at the root level. */
export const ORPHAN_MARK = '⇢ ';
export const ERROR_MARK = '✗';
const BAR_MIN = 10;
const INDENT = '  ';
/** Deeper nesting than this is drawn at this depth: past it the indentation says nothing more. */
const MAX_INDENT_DEPTH = 16;
const FULL = '█';
/** Left-aligned partial blocks, 1/8 to 7/8 of a cell. */
const PARTIAL = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
const TRACE_ID = /^[0-9a-f]{32}$/;

/** Compact duration: 850µs, 4.20ms, 12.3ms, 845ms, 1.25s, 2m05s. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  if (ms < 1) return `${Math.round(ms * 1000)}µs`;
  if (ms < 10) return `${ms.toFixed(2)}ms`;
  if (ms < 100) return `${ms.toFixed(1)}ms`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)}s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** Span names and services come from whoever sent the spans: never let them drive the terminal. */
export function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : s.slice(0, Math.max(0, max - 1)) + '…';
}

interface Row {
  span: WaterfallSpan;
  depth: number;
  orphan: boolean;
}

const byStart = (a: WaterfallSpan, b: WaterfallSpan): number => a.startMs - b.startMs;

/**
 * Depth-first order: each span under its parent, siblings by start time. Spans whose parent is not among
 * `spans` are roots (orphans when they named a parent); spans caught in a parent cycle, which no root
 * reaches, are shown as orphans too rather than dropped.
 */
export function waterfallRows(spans: readonly WaterfallSpan[]): Row[] {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string, WaterfallSpan[]>();
  const roots: WaterfallSpan[] = [];
  for (const s of spans) {
    const p = s.parentSpanId;
    if (p !== undefined && p !== '' && p !== s.spanId && ids.has(p)) {
      let list = children.get(p);
      if (!list) children.set(p, (list = []));
      list.push(s);
    } else roots.push(s);
  }
  for (const list of children.values()) list.sort(byStart);
  const rows: Row[] = [];
  const seen = new Set<WaterfallSpan>();
  const walk = (top: WaterfallSpan[]): void => {
    // An explicit stack: a deep (or hostile) trace must not overflow the call stack.
    const stack: { span: WaterfallSpan; depth: number }[] = top
      .slice()
      .sort(byStart)
      .reverse()
      .map((span) => ({ span, depth: 0 }));
    while (stack.length > 0) {
      const { span, depth } = stack.pop()!;
      if (seen.has(span)) continue;
      seen.add(span);
      const parent = span.parentSpanId;
      rows.push({ span, depth, orphan: depth === 0 && parent !== undefined && parent !== '' });
      const kids = children.get(span.spanId);
      if (kids) for (let i = kids.length - 1; i >= 0; i--) stack.push({ span: kids[i]!, depth: depth + 1 });
    }
  };
  walk(roots);
  const unreached = spans.filter((s) => !seen.has(s));
  if (unreached.length > 0) walk(unreached);
  return rows;
}

function statusText(s: WaterfallSpan): string {
  if (s.status === 'error') return `${ERROR_MARK} ${s.httpStatus ?? 'error'}`;
  if (s.httpStatus !== undefined) return String(s.httpStatus);
  return s.status === 'ok' ? 'ok' : '';
}

function tagsText(s: WaterfallSpan): string {
  const tags: string[] = [];
  if (s.lane !== undefined && s.lane !== '') tags.push(`lane=${printable(s.lane)}`);
  if (s.stress === true) tags.push('stress');
  return tags.join(',');
}

/** `offset` and `duration` as fractions of the bar; at least an eighth of a cell, so every span shows. */
function bar(offset: number, duration: number, width: number): string {
  const eighths = width * 8;
  const start = Math.min(width - 1, Math.max(0, Math.floor(offset * width)));
  let len = Math.max(1, Math.round(duration * eighths));
  len = Math.min(len, eighths - start * 8);
  return ' '.repeat(start) + FULL.repeat(Math.floor(len / 8)) + PARTIAL[len % 8]!;
}

/** The bar column's header: the trace's start and end, at its two edges. */
function axis(total: number, width: number): string {
  const left = '0';
  const right = formatMs(total);
  return width > left.length + right.length ? left + ' '.repeat(width - left.length - right.length) + right : right;
}

/**
 * The waterfall of one trace, `width` columns wide: per span its offset from the trace's start, duration,
 * service, name (indented by depth), status and a bar to scale. Pure, so its layout is tested as is.
 */
export function renderWaterfall(spans: readonly WaterfallSpan[], width: number = DEFAULT_WIDTH): string {
  if (spans.length === 0) return 'no spans';
  const rows = waterfallRows(spans);
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const s of spans) {
    t0 = Math.min(t0, s.startMs);
    t1 = Math.max(t1, s.startMs + Math.max(0, s.durationMs));
  }
  const total = t1 - t0;
  const hasTags = spans.some((s) => tagsText(s) !== '');
  const nameOf = (r: Row): string => INDENT.repeat(Math.min(r.depth, MAX_INDENT_DEPTH)) + (r.orphan ? ORPHAN_MARK : '') + printable(r.span.name);
  const cells = rows.map((r) => ({
    offset: formatMs(r.span.startMs - t0),
    duration: formatMs(r.span.durationMs),
    service: printable(r.span.service),
    name: nameOf(r),
    status: statusText(r.span),
    tags: tagsText(r.span),
  }));
  const headers = { offset: 'OFFSET', duration: 'DURATION', service: 'SERVICE', name: 'SPAN', status: 'STATUS', tags: 'TAGS' };
  const widest = (k: keyof typeof headers): number => Math.max(headers[k].length, ...cells.map((c) => c[k].length));
  const w = {
    offset: widest('offset'),
    duration: widest('duration'),
    service: Math.min(widest('service'), 24),
    name: Math.min(widest('name'), Math.max(20, Math.floor(width * 0.4))),
    status: widest('status'),
    tags: hasTags ? Math.min(widest('tags'), 24) : 0,
  };
  const GAP = 2;
  const columns = hasTags ? 6 : 5;
  const fixed = (): number => w.offset + w.duration + w.service + w.name + w.status + w.tags + GAP * columns;
  // A narrow terminal gives up name and service width before the bar drops below its minimum.
  let spare = width - fixed() - BAR_MIN;
  if (spare < 0) {
    const cut = Math.min(-spare, Math.max(0, w.name - 12));
    w.name -= cut;
    spare += cut;
  }
  if (spare < 0) w.service -= Math.min(-spare, Math.max(0, w.service - 8));
  const barWidth = Math.max(BAR_MIN, width - fixed());
  const line = (c: typeof headers, barText: string): string =>
    [
      c.offset.padStart(w.offset),
      c.duration.padStart(w.duration),
      clip(c.service, w.service).padEnd(w.service),
      clip(c.name, w.name).padEnd(w.name),
      c.status.padEnd(w.status),
      ...(hasTags ? [clip(c.tags, w.tags).padEnd(w.tags)] : []),
      barText,
    ]
      .join(' '.repeat(GAP))
      .trimEnd();
  const lines = [line(headers, axis(total, barWidth))];
  rows.forEach((r, i) => {
    const offset = total > 0 ? (r.span.startMs - t0) / total : 0;
    const duration = total > 0 ? Math.max(0, r.span.durationMs) / total : 1;
    lines.push(line(cells[i]!, bar(offset, duration, barWidth)));
  });
  if (rows.some((r) => r.orphan)) lines.push('', `${ORPHAN_MARK.trim()} parent span not received`);
  return lines.join('\n');
}

/** `250ms`, `1.5s`, `2m`, `1h`, `7d`, or a bare number of milliseconds. */
export function parseDurationMs(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a duration such as 250ms, 1.5s, 15m, 1h or 7d.');
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] ?? 'ms']!;
  const ms = Number(m[1]) * unit;
  if (!Number.isFinite(ms)) throw new InvalidArgumentError('duration out of range.');
  return ms;
}

export function limitArg(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 1000) throw new InvalidArgumentError('expected a whole number from 1 to 1000.');
  return Number(value);
}

function widthArg(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 20 || Number(value) > 1000) throw new InvalidArgumentError('expected a width from 20 to 1000 columns.');
  return Number(value);
}

/** `key=value` (or the API's own `key:value`) → `key:value`. */
export function tagArg(value: string): string {
  const i = value.search(/[=:]/);
  if (i <= 0) throw new UsageError(`--tag ${JSON.stringify(value)} is not key=value`);
  return `${value.slice(0, i)}:${value.slice(i + 1)}`;
}

/** The API's relative time (`-15m`): at most 9 digits, so long windows are said in minutes. */
export function relativeFrom(ms: number): string {
  const whole = Math.max(1, Math.round(ms));
  return whole <= 999_999_999 ? `-${whole}ms` : `-${Math.ceil(whole / 60_000)}m`;
}

export async function fetchTrace(client: PlinthClient, traceId: string, namespace: string): Promise<TraceDocument> {
  const id = traceId.toLowerCase();
  if (!TRACE_ID.test(id) || /^0+$/.test(id)) throw new UsageError(`${JSON.stringify(traceId)} is not a trace id (32 hex digits, not all zero)`);
  try {
    return (await client.request<TraceDocument>('GET', `/v1/traces/${id}`, { query: { namespace } })).body;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) throw new CliError(`trace ${id} not found in namespace ${namespace} (${e.code})`, ExitCode.REFUSED);
    throw e;
  }
}

function traceHeader(doc: TraceDocument, namespace: string): string {
  const spans = doc.spans;
  const services = new Set(spans.map((s) => s.service)).size;
  const errors = spans.filter((s) => s.status === 'error').length;
  const t0 = Math.min(...spans.map((s) => s.startMs));
  const t1 = Math.max(...spans.map((s) => s.startMs + s.durationMs));
  return (
    `trace ${doc.traceId} in namespace ${namespace}: ${spans.length} span${spans.length === 1 ? '' : 's'}, ` +
    `${services} service${services === 1 ? '' : 's'}, ${formatMs(t1 - t0)}` +
    (errors > 0 ? `, ${errors} error${errors === 1 ? '' : 's'}` : '') +
    `, started ${new Date(t0).toISOString()}`
  );
}

export function tracesTable(items: readonly TraceSummary[], now: number = Date.now()): string {
  return renderTable(
    ['TRACE', 'AGE', 'DURATION', 'SPANS', 'ERRORS', 'ROOT', 'SERVICES'],
    items.map((t) => [
      t.traceId,
      formatAge(new Date(t.startMs).toISOString(), now),
      formatMs(t.durationMs),
      String(t.spanCount),
      String(t.errorCount),
      printable(`${t.rootService}: ${t.rootName}`),
      printable(t.services.join(',')),
    ]),
  );
}

export function printDocument(value: unknown, format: OutputFormat): void {
  out(format === 'json' ? json(value) : yaml(value));
}

interface TraceOptions {
  namespace?: string;
  width?: number;
}

interface TracesOptions {
  namespace?: string;
  service?: string;
  endpoint?: string;
  status?: string;
  minDuration?: number;
  tag: string[];
  since?: number;
  limit?: number;
}

export function registerTrace(program: Command): void {
  program
    .command('trace')
    .description("show one trace's spans as a waterfall")
    .argument('<traceId>', 'trace id (32 hex digits)')
    .option('-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")')
    .option('--width <columns>', 'output width (default: the terminal width, else 100)', widthArg)
    .action(async (traceId: string, opts: TraceOptions, cmd: Command) => {
      const format = outputOf(cmd);
      const namespace = namespaceOf(opts.namespace);
      const doc = await fetchTrace(await clientOf(cmd), traceId, namespace);
      if (format !== 'table') return printDocument(doc, format);
      out(traceHeader(doc, namespace));
      out(renderWaterfall(doc.spans, opts.width ?? (process.stdout.columns || DEFAULT_WIDTH)));
    });

  program
    .command('traces')
    .description('search traces, newest first: a trace is listed when one of its spans matches every filter')
    .option('-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")')
    .option('--service <name>', 'traces with a span of this service')
    .option('--endpoint <endpoint>', 'traces with a server span of this endpoint, e.g. "GET /orders/:id"')
    .option('--status <status>', 'error: a span that failed; ok: a span that did not')
    .option('--min-duration <duration>', 'traces at least this long, e.g. 250ms, 1.5s', parseDurationMs)
    .option('--tag <key=value>', 'a span attribute (or lane, region, version, stress) to match; repeatable', collect, [])
    .option('--since <duration>', 'traces started within this long before now (default 1h)', parseDurationMs)
    .option('--limit <N>', 'at most N traces (1 to 1000; default 20)', limitArg)
    .action(async (opts: TracesOptions, cmd: Command) => {
      const format = outputOf(cmd);
      if (opts.status !== undefined && opts.status !== 'error' && opts.status !== 'ok') {
        throw new UsageError(`--status ${JSON.stringify(opts.status)}: expected error or ok`);
      }
      const namespace = namespaceOf(opts.namespace);
      const tags = opts.tag.map(tagArg);
      const client = await clientOf(cmd);
      // Relative times are resolved by the server's clock: a skewed laptop clock cannot shift the window.
      const query = {
        namespace,
        service: opts.service,
        endpoint: opts.endpoint,
        status: opts.status,
        minDurationMs: opts.minDuration !== undefined ? Number(opts.minDuration.toFixed(3)) : undefined,
        from: opts.since !== undefined ? relativeFrom(opts.since) : undefined,
        limit: opts.limit,
      };
      const path = tags.length === 0 ? '/v1/traces' : `/v1/traces?${tags.map((t) => `tag=${encodeURIComponent(t)}`).join('&')}`;
      const items = (await client.request<{ items: TraceSummary[] }>('GET', path, { query })).body.items ?? [];
      if (format !== 'table') return printDocument({ items }, format);
      if (items.length === 0) {
        note(`No traces found in namespace ${namespace}.`);
        return;
      }
      out(tracesTable(items));
    });
}
