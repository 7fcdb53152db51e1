/**
 * The APM's figures in the terminal: RED per service, endpoint or edge (`plinth red`), the service graph
 * (`plinth topology`), SLOs with their burn rates and error budget (`plinth slo`), the alert history
 * (`plinth alerts`) and the shared-capability contention report (`plinth contention`). Each prints a table,
 * or with `-o json|yaml` the API's own document. Relative windows are resolved by the server's clock.
 */
import type { AlertEvent, ContentionReport, RedRow, SloStatus, Topology } from '@plinth/server';
import { InvalidArgumentError, type Command } from 'commander';
import { ApiError, CliError, ExitCode, UsageError } from '../errors.js';
import { formatAge, renderTable } from '../output.js';
import { clientOf, namespaceOf, note, out, outputOf } from './common.js';
import { formatMs, limitArg, parseDurationMs, printable, printDocument, relativeFrom } from './trace.js';

const GROUPS = ['service', 'endpoint', 'edge'] as const;
const SPLITS = ['lane', 'stress', 'region', 'version'] as const;
type Split = (typeof SPLITS)[number];

/** `/v1/apm/alerts` items: the stored event with its time as RFC 3339. */
export type AlertItem = Omit<AlertEvent, 'details'> & { at: string };

/** 1234.5/s, 12.3/s, 0.05/s: three significant figures at most, no exponent. */
export function formatRate(perSec: number): string {
  if (!Number.isFinite(perSec) || perSec < 0) return '?';
  if (perSec >= 100) return `${Math.round(perSec)}/s`;
  if (perSec >= 10) return `${perSec.toFixed(1)}/s`;
  if (perSec >= 0.01 || perSec === 0) return `${perSec.toFixed(2)}/s`;
  return '<0.01/s';
}

/** A share as a percentage: 0%, 0.05%, 12.5%, 100%. */
export function formatPercent(share: number): string {
  if (!Number.isFinite(share)) return '?';
  const p = share * 100;
  if (p === 0 || p === 100) return `${p}%`;
  if (p < 0.01) return '<0.01%';
  return `${p < 10 ? p.toFixed(2) : p.toFixed(1)}%`;
}

/** `12.3x`; a burn over an empty window is 0. */
function formatBurn(burn: number): string {
  return Number.isFinite(burn) ? `${burn < 10 ? burn.toFixed(2) : burn.toFixed(1)}x` : '?';
}

function splitArg(value: string): Split[] {
  const out: Split[] = [];
  for (const part of value.split(',')) {
    const s = part.trim();
    if (!(SPLITS as readonly string[]).includes(s)) throw new InvalidArgumentError(`expected a comma-separated list of ${SPLITS.join(', ')}.`);
    if (!out.includes(s as Split)) out.push(s as Split);
  }
  return out;
}

function groupArg(value: string): (typeof GROUPS)[number] {
  if (!(GROUPS as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${GROUPS.join(', ')}.`);
  return value as (typeof GROUPS)[number];
}

const sinceOption = ['--since <duration>', 'the window: this long before now (default 1h)', parseDurationMs] as const;
const namespaceOption = ['-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")'] as const;

function windowText(since: number | undefined): string {
  return since === undefined ? 'the last hour' : `the last ${formatMs(since)}`;
}

/** Rows of `/v1/apm/red` as a table: the group's key columns, one column per split tag, then the figures. */
export function redTable(rows: readonly RedRow[], by: (typeof GROUPS)[number], split: readonly Split[]): string {
  const keys = by === 'edge' ? ['CALLER', 'CALLEE'] : by === 'endpoint' ? ['SERVICE', 'ENDPOINT'] : ['SERVICE'];
  return renderTable(
    [...keys, ...split.map((t) => t.toUpperCase()), 'RATE', 'CALLS', 'ERRORS', 'P50', 'P95', 'P99', 'REJECTED'],
    rows.map((r) => [
      printable(r.service),
      ...(by === 'edge' ? [printable(r.peer ?? '')] : by === 'endpoint' ? [printable(r.endpoint ?? '')] : []),
      ...split.map((t) => printable(r.tags[t] ?? '-')),
      formatRate(r.ratePerSec),
      String(r.count),
      `${r.errors} (${formatPercent(r.errorRate)})`,
      formatMs(r.p50Ms),
      formatMs(r.p95Ms),
      formatMs(r.p99Ms),
      String(r.rejections),
    ]),
  );
}

/** The service graph as its edges, callers first; external callees (databases, partner APIs) marked. */
export function topologyTable(t: Topology): string {
  const edges = [...t.edges].sort((a, b) => (a.caller < b.caller ? -1 : a.caller > b.caller ? 1 : a.callee < b.callee ? -1 : a.callee > b.callee ? 1 : 0));
  const table = renderTable(
    ['CALLER', 'CALLEE', 'CALLS', 'ERRORS', 'P50', 'P95', 'P99'],
    edges.map((e) => [
      printable(e.caller),
      printable(e.callee) + (e.external ? ' (external)' : ''),
      String(e.count),
      `${e.errors} (${formatPercent(e.count > 0 ? e.errors / e.count : 0)})`,
      formatMs(e.p50Ms),
      formatMs(e.p95Ms),
      formatMs(e.p99Ms),
    ]),
  );
  const services = t.nodes.filter((n) => !n.external).map((n) => printable(n.name));
  const external = t.nodes.filter((n) => n.external).map((n) => printable(n.name));
  return `${table}\n\n${services.length} service${services.length === 1 ? '' : 's'}: ${services.join(', ')}` + (external.length > 0 ? `; external: ${external.join(', ')}` : '');
}

function sloTarget(s: SloStatus): string {
  const t = s.spec.target;
  const what = t.journey !== undefined ? `${t.service} journey ${t.journey.name}` : t.endpoint !== undefined ? `${t.service} ${t.endpoint}` : t.service;
  return printable(what);
}

function sloObjective(s: SloStatus): string {
  const kind = s.spec.indicator === 'latency' ? `latency ≤ ${formatMs(s.spec.thresholdMs ?? 0)}` : 'availability';
  return `${kind} ${s.spec.objectivePercent}% over ${s.spec.windowDays}d`;
}

/** Every SLO on a line: its budget left and, per burn-rate pair, the long and short windows' burn. */
export function slosTable(items: readonly SloStatus[], withNamespace: boolean): string {
  return renderTable(
    [...(withNamespace ? ['NAMESPACE'] : []), 'NAME', 'TARGET', 'OBJECTIVE', 'BUDGET LEFT', 'BURN (LONG/SHORT)', 'FIRING'],
    items.map((s) => [
      ...(withNamespace ? [s.namespace] : []),
      s.name,
      sloTarget(s),
      sloObjective(s),
      formatPercent(s.errorBudget.remaining),
      s.burnRates.map((b) => `${b.longWindow}/${b.shortWindow} ${formatBurn(b.long.burnRate)}/${formatBurn(b.short.burnRate)}`).join('  '),
      s.firing.length === 0 ? '-' : s.firing.map((f) => f.severity).join(','),
    ]),
  );
}

/** One SLO: its objective, the budget's figures, each pair against its threshold, and what fires. */
export function sloDetail(s: SloStatus): string {
  const b = s.errorBudget;
  const lines = [
    `Slo ${s.namespace}/${s.name}: ${sloTarget(s)}, ${sloObjective(s)}`,
    `error budget: ${formatPercent(b.remaining)} left (${b.bad} bad of ${b.total}; ${Math.floor(b.allowedBad)} allowed${b.consumed > 1 ? `, overspent ${formatBurn(b.consumed)}` : ''})`,
    '',
    renderTable(
      ['PAIR', 'SEVERITY', 'THRESHOLD', 'LONG', 'SHORT', 'STATE'],
      s.burnRates.map((p) => [
        `${p.longWindow}/${p.shortWindow}`,
        p.severity,
        formatBurn(p.burnRate),
        `${formatBurn(p.long.burnRate)} (${p.long.bad}/${p.long.total})`,
        `${formatBurn(p.short.burnRate)} (${p.short.bad}/${p.short.total})`,
        p.firing ? 'FIRING' : p.tooFewRequests ? 'too few requests' : 'ok',
      ]),
    ),
  ];
  for (const f of s.firing) lines.push('', `firing (${f.severity}) since ${f.since}: ${printable(f.summary)}; notification ${printable(f.notification)}`);
  return lines.join('\n');
}

export function alertsTable(items: readonly AlertItem[], withNamespace: boolean, now: number = Date.now()): string {
  return renderTable(
    ['AGE', ...(withNamespace ? ['NAMESPACE'] : []), 'SOURCE', 'STATE', 'SEVERITY', 'NOTIFICATION', 'SUMMARY'],
    items.map((e) => [formatAge(e.at, now), ...(withNamespace ? [e.namespace] : []), e.source, e.state, e.severity, printable(e.notification), printable(e.summary)]),
  );
}

/** Each shared service with its budget, then its consumers, the ones over budget first, with the advice. */
export function contentionTable(doc: ContentionReport): string {
  const rows: string[][] = [];
  for (const s of doc.services) {
    for (const c of s.consumers) {
      rows.push([
        `${printable(s.service)} (${formatMs(s.latencyBudgetMs)})`,
        printable(c.consumer),
        formatRate(c.ratePerSec),
        formatMs(c.p99Ms),
        String(c.rejections),
        c.overBudget ? 'OVER' : 'ok',
        printable(c.advice ?? ''),
      ]);
    }
    if (s.consumers.length === 0) rows.push([`${printable(s.service)} (${formatMs(s.latencyBudgetMs)})`, '-', '', '', '', '', 'no calls in the window']);
  }
  return renderTable(['SHARED SERVICE (BUDGET)', 'CONSUMER', 'RATE', 'P99', 'REJECTED', 'BUDGET', 'ADVICE'], rows);
}

interface WindowOptions {
  namespace?: string;
  since?: number;
}

interface ScopeOptions {
  namespace?: string;
  allNamespaces?: boolean;
}

/** `-n` or `-A` (every namespace the caller may read), not both. */
function scopeOf(opts: ScopeOptions): string | undefined {
  if (opts.allNamespaces && opts.namespace !== undefined) throw new UsageError('use either --namespace or --all-namespaces');
  return opts.allNamespaces ? undefined : namespaceOf(opts.namespace);
}

export function registerApm(program: Command): void {
  program
    .command('red')
    .description('rate, errors and latency (p50/p95/p99) per service, endpoint or service-to-service edge')
    .option(...namespaceOption)
    .option('--service <name>', 'only this service (with --by edge: its calls in and out)')
    .option('--by <group>', 'service (default), endpoint or edge', groupArg)
    .option('--split <tags>', 'a row per value of these tags: lane, stress, region, version (comma-separated)', splitArg)
    .option('--include-stress', 'count pressure-test traffic in (by default it is kept out)')
    .option(...sinceOption)
    .action(async (opts: WindowOptions & { service?: string; by?: (typeof GROUPS)[number]; split?: Split[]; includeStress?: boolean }, cmd: Command) => {
      const format = outputOf(cmd);
      const namespace = namespaceOf(opts.namespace);
      const by = opts.by ?? 'service';
      const split = opts.split ?? [];
      const query = {
        namespace,
        service: opts.service,
        group: by,
        split: split.length > 0 ? split.join(',') : undefined,
        includeStress: opts.includeStress ? true : undefined,
        from: opts.since !== undefined ? relativeFrom(opts.since) : undefined,
      };
      const items = (await (await clientOf(cmd)).request<{ items: RedRow[] }>('GET', '/v1/apm/red', { query })).body.items ?? [];
      if (format !== 'table') return printDocument({ items }, format);
      if (items.length === 0) return note(`No figures in namespace ${namespace} for ${windowText(opts.since)}.`);
      out(redTable(items, by, split));
    });

  program
    .command('topology')
    .description('the service graph: who calls whom, with each edge’s figures, external dependencies included')
    .option(...namespaceOption)
    .option('--service <name>', 'only this service, its callers and its callees')
    .option('--include-stress', 'count pressure-test traffic in (by default it is kept out)')
    .option(...sinceOption)
    .action(async (opts: WindowOptions & { service?: string; includeStress?: boolean }, cmd: Command) => {
      const format = outputOf(cmd);
      const namespace = namespaceOf(opts.namespace);
      const query = { namespace, service: opts.service, includeStress: opts.includeStress ? true : undefined, from: opts.since !== undefined ? relativeFrom(opts.since) : undefined };
      const doc = (await (await clientOf(cmd)).request<Topology>('GET', '/v1/apm/topology', { query })).body;
      if (format !== 'table') return printDocument(doc, format);
      if (doc.nodes.length === 0) return note(`No calls seen in namespace ${namespace} for ${windowText(opts.since)}.`);
      out(topologyTable(doc));
    });

  program
    .command('slo')
    .description('SLOs with their error budget left and burn rates; with a name, one in detail')
    .argument('[name]', 'one Slo')
    .option(...namespaceOption)
    .option('-A, --all-namespaces', 'every namespace you may read')
    .action(async (name: string | undefined, opts: ScopeOptions, cmd: Command) => {
      const format = outputOf(cmd);
      const client = await clientOf(cmd);
      if (name !== undefined) {
        if (opts.allNamespaces) throw new UsageError('--all-namespaces lists SLOs; it cannot be used with a name');
        const namespace = namespaceOf(opts.namespace);
        let status: SloStatus;
        try {
          status = (await client.request<SloStatus>('GET', `/v1/apm/slos/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`)).body;
        } catch (e) {
          if (e instanceof ApiError && e.status === 404) throw new CliError(`Slo ${namespace}/${name} not found (${e.code})`, ExitCode.REFUSED);
          throw e;
        }
        if (format !== 'table') return printDocument(status, format);
        return out(sloDetail(status));
      }
      const namespace = scopeOf(opts);
      const items = (await client.request<{ items: SloStatus[] }>('GET', '/v1/apm/slos', { query: { namespace } })).body.items ?? [];
      if (format !== 'table') return printDocument({ items }, format);
      if (items.length === 0) return note(namespace === undefined ? 'No SLOs found.' : `No SLOs found in namespace ${namespace}.`);
      out(slosTable(items, namespace === undefined));
    });

  program
    .command('alerts')
    .description('the alert history, newest first: SLO burn-rate alerts and alert rules, firing and resolved')
    .option(...namespaceOption)
    .option('-A, --all-namespaces', 'every namespace you may read')
    .option('--source <Kind/name>', 'one alert source, e.g. Slo/checkout or AlertRule/orders-p99')
    .option('--since <duration>', 'events within this long before now (default: all kept)', parseDurationMs)
    .option('--limit <N>', 'at most N events (1 to 1000; default 100)', limitArg)
    .action(async (opts: ScopeOptions & { source?: string; since?: number; limit?: number }, cmd: Command) => {
      const format = outputOf(cmd);
      const namespace = scopeOf(opts);
      const query = { namespace, source: opts.source, from: opts.since !== undefined ? relativeFrom(opts.since) : undefined, limit: opts.limit };
      const items = (await (await clientOf(cmd)).request<{ items: AlertItem[] }>('GET', '/v1/apm/alerts', { query })).body.items ?? [];
      if (format !== 'table') return printDocument({ items }, format);
      if (items.length === 0) return note(namespace === undefined ? 'No alerts.' : `No alerts in namespace ${namespace}.`);
      out(alertsTable(items, namespace === undefined));
    });

  program
    .command('contention')
    .description("each shared service's consumers against its latency budget, with advice for those over it")
    .option(...namespaceOption)
    .option(...sinceOption)
    .action(async (opts: WindowOptions, cmd: Command) => {
      const format = outputOf(cmd);
      const namespace = namespaceOf(opts.namespace);
      const query = { namespace, from: opts.since !== undefined ? relativeFrom(opts.since) : undefined };
      const doc = (await (await clientOf(cmd)).request<ContentionReport>('GET', '/v1/apm/contention', { query })).body;
      if (format !== 'table') return printDocument(doc, format);
      if (doc.services.length === 0) return note(`No shared services in namespace ${namespace} (a Service declares latencyBudgetMs to be one).`);
      out(contentionTable(doc));
    });
}
