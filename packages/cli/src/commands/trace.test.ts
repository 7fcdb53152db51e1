import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Context, type Span } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { startServer, type RunningServer } from '@plinth/server';
import { parse as parseYaml } from 'yaml';
import { formatMs, parseDurationMs, renderWaterfall, tagArg, waterfallRows, type WaterfallSpan } from './trace.js';
import { runCli, type Run } from '../cli.test.helpers.js';


const span = (spanId: string, parentSpanId: string | undefined, name: string, startMs: number, durationMs: number, extra: Partial<WaterfallSpan> = {}): WaterfallSpan => ({
  spanId,
  parentSpanId,
  service: 'svc',
  name,
  startMs,
  durationMs,
  status: 'unset',
  ...extra,
});

/** Where each column of the waterfall starts, read from its header line. */
function layout(text: string): { header: string; rows: string[]; nameCol: number; barCol: number } {
  const lines = text.split('\n');
  const header = lines[0]!;
  const barCol = header.search(/0 +\S+$/);
  assert.ok(barCol > 0, `no time axis in ${JSON.stringify(header)}`);
  return { header, rows: lines.slice(1).filter((l) => l !== '' && !l.startsWith('⇢ parent')), nameCol: header.indexOf('SPAN'), barCol };
}

/** The name cell of a row: its indentation depth and text. */
function nameCell(row: string, nameCol: number): { depth: number; name: string } {
  const cell = row.slice(nameCol);
  const indent = /^ */.exec(cell)![0].length;
  return { depth: indent / 2, name: cell.trimStart().split(/ {2,}/)[0]! };
}

void describe('renderWaterfall', () => {
  const T = 1_700_000_000_000;
  const tree = [
    span('c2', 'r', 'second child', T + 50, 25),
    span('r', undefined, 'root', T, 100),
    span('g1', 'c2', 'grandchild', T + 60, 10),
    span('c1', 'r', 'first child', T + 10, 20),
  ];

  void it('puts children under their parent, siblings by start time, indented by depth', () => {
    const { rows, nameCol } = layout(renderWaterfall(tree, 100));
    assert.deepEqual(
      rows.map((r) => nameCell(r, nameCol)),
      [
        { depth: 0, name: 'root' },
        { depth: 1, name: 'first child' },
        { depth: 1, name: 'second child' },
        { depth: 2, name: 'grandchild' },
      ],
    );
  });

  void it('draws bars to scale across the given width, with offsets and durations in columns', () => {
    for (const width of [80, 100, 160]) {
      const text = renderWaterfall(tree, width);
      const { header, rows, barCol } = layout(text);
      assert.equal(header.length, width, 'the header spans the whole width');
      for (const l of text.split('\n')) assert.ok(l.length <= width, `${l.length} > ${width}: ${l}`);
      const barWidth = width - barCol;
      const bars = rows.map((r) => r.slice(barCol));
      assert.equal(bars[0], '█'.repeat(barWidth), 'the root spans the whole trace');
      // The second child starts half way through and lasts a quarter of the trace.
      const second = bars[2]!;
      assert.equal(second.length - second.trimStart().length, Math.floor(barWidth / 2));
      const cells = second.trimStart();
      const eighths = [...cells].reduce((n, ch) => n + (ch === '█' ? 8 : ' ▏▎▍▌▋▊▉'.indexOf(ch)), 0);
      assert.equal(eighths, Math.round(barWidth * 8 * 0.25));
    }
    const { rows } = layout(renderWaterfall(tree, 100));
    assert.match(rows[0]!, /^ +0µs +100ms +svc +root/);
    assert.match(rows[3]!, /^60\.0ms +10\.0ms +svc +grandchild/);
  });

  void it('marks errors with the HTTP code, and shows lane and stress only when a span has them', () => {
    const plain = renderWaterfall(tree, 100);
    assert.doesNotMatch(plain.split('\n')[0]!, /TAGS/);
    const text = renderWaterfall(
      [
        span('r', undefined, 'GET /checkout', T, 100, { httpStatus: 200, status: 'ok' }),
        span('p', 'r', 'POST /charge', T + 10, 50, { httpStatus: 500, status: 'error', lane: 'canary', stress: true }),
        span('q', 'r', 'SELECT', T + 70, 5, { status: 'error' }),
      ],
      120,
    );
    const lines = text.split('\n');
    assert.match(lines[0]!, /STATUS +TAGS/);
    assert.match(lines[1]!, /GET \/checkout +200 /);
    assert.match(lines[2]!, /POST \/charge +✗ 500 +lane=canary,stress /);
    assert.match(lines[3]!, /SELECT +✗ error /);
  });

  void it('shows spans whose parent was not received at the root level, marked, with a legend', () => {
    const text = renderWaterfall([...tree, span('o', 'f00dfeedf00dfeed', 'async job', T + 80, 30)], 100);
    const { rows, nameCol } = layout(text);
    const last = nameCell(rows[rows.length - 1]!, nameCol);
    assert.deepEqual(last, { depth: 0, name: '⇢ async job' });
    assert.match(text, /\n\n⇢ parent span not received$/);
    // The trace ends at the orphan's end: the axis says 110ms.
    assert.match(text.split('\n')[0]!, / 110ms$/);
    assert.doesNotMatch(renderWaterfall(tree, 100), /parent span not received/);
  });

  void it('shows spans caught in a parent cycle instead of dropping them', () => {
    const rows = waterfallRows([span('a', 'b', 'a', T, 10), span('b', 'a', 'b', T + 1, 5), span('x', undefined, 'x', T, 20)]);
    assert.deepEqual(rows.map((r) => [r.span.name, r.depth]), [['x', 0], ['a', 0], ['b', 1]]);
  });

  void it('fits a narrow terminal by clipping names, and never prints control characters', () => {
    const long = span('r', undefined, `GET /${'very-long-segment/'.repeat(6)}\u001b[2J`, T, 10, { service: 'svc\u0007' });
    const text = renderWaterfall([long], 60);
    for (const l of text.split('\n')) assert.ok(l.length <= 60, l);
    assert.match(text, /…/);
    // eslint-disable-next-line no-control-regex
    for (const l of renderWaterfall([long], 400).split('\n')) assert.doesNotMatch(l, /[\u0000-\u001f]/);
    assert.match(renderWaterfall([long], 400), /svc\?.*\?\[2J/);
  });

  void it('formats durations compactly, parses flag durations and tags', () => {
    assert.deepEqual([0.25, 4.2, 12.34, 845.4, 1250, 125_000].map(formatMs), ['250µs', '4.20ms', '12.3ms', '845ms', '1.25s', '2m05s']);
    assert.deepEqual(['250ms', '1.5s', '15m', '1h', '7d', '40'].map(parseDurationMs), [250, 1500, 900_000, 3_600_000, 604_800_000, 40]);
    assert.throws(() => parseDurationMs('soon'), /duration/);
    assert.equal(tagArg('lane=canary'), 'lane:canary');
    assert.equal(tagArg('http.route=/a=b'), 'http.route:/a=b');
    assert.throws(() => tagArg('=x'), /key=value/);
  });
});

// ---- end to end: a real server, spans through the OpenTelemetry SDK's OTLP/HTTP exporter, the built CLI ----

void describe('plinth trace / traces against a real server', () => {
  let tmp: string;
  let server: RunningServer;
  let env: NodeJS.ProcessEnv;
  let traceId: string;
  const NS = 'shop';

  const cli = (args: string[]): Promise<Run> => runCli(args, env);

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'plinth-cli-trace-'));
    server = await startServer({ dataDir: join(tmp, 'data'), listen: '127.0.0.1:0', logLevel: 'silent' });
    const token = (await readFile(server.adminTokenFile!, 'utf8')).trim();
    env = { PATH: process.env['PATH'], HOME: tmp, XDG_CONFIG_HOME: join(tmp, 'xdg'), PLINTH_URL: server.url, PLINTH_TOKEN: token };

    // Three services, each its own OpenTelemetry provider (its own resource), one trace across them.
    const finished = new InMemorySpanExporter();
    const tracerOf = (service: string) =>
      new BasicTracerProvider({
        resource: resourceFromAttributes({ 'service.name': service, 'service.namespace': NS }),
        spanProcessors: [new SimpleSpanProcessor(finished)],
      }).getTracer('e2e');
    const gateway = tracerOf('gateway');
    const orders = tracerOf('orders');
    const payments = tracerOf('payments');
    const t0 = Date.now() - 5_000;
    const under = (parent: Span): Context => trace.setSpan(ROOT_CONTEXT, parent);
    const at = (tracer: ReturnType<typeof tracerOf>, name: string, kind: SpanKind, from: number, to: number, parent: Context, attributes: Record<string, string | number> = {}): Span => {
      const s = tracer.startSpan(name, { kind, startTime: t0 + from, attributes }, parent);
      (s as Span & { __end: number }).__end = t0 + to;
      return s;
    };
    const root = at(gateway, 'GET /checkout', SpanKind.SERVER, 0, 100, ROOT_CONTEXT, { 'http.request.method': 'GET', 'http.route': '/checkout', 'http.response.status_code': 200 });
    const callOrders = at(gateway, 'POST orders', SpanKind.CLIENT, 5, 90, under(root), { 'peer.service': 'orders' });
    const ordersServer = at(orders, 'POST /orders', SpanKind.SERVER, 10, 85, under(callOrders), { 'http.request.method': 'POST', 'http.route': '/orders', 'http.response.status_code': 200 });
    const select = at(orders, 'SELECT orders', SpanKind.CLIENT, 15, 30, under(ordersServer), { 'db.system': 'postgresql' });
    const callPayments = at(orders, 'POST payments', SpanKind.CLIENT, 35, 80, under(ordersServer), { 'peer.service': 'payments' });
    const charge = at(payments, 'POST /charge', SpanKind.SERVER, 40, 75, under(callPayments), {
      'http.request.method': 'POST',
      'http.route': '/charge',
      'http.response.status_code': 500,
      'plinth.lane': 'canary',
    });
    charge.setStatus({ code: SpanStatusCode.ERROR, message: 'card declined' });
    traceId = root.spanContext().traceId;
    // A span whose parent never reaches the server (its service dropped it).
    const lost = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: randomBytes(8).toString('hex'), traceFlags: TraceFlags.SAMPLED, isRemote: true });
    const orphan = at(orders, 'publish receipt', SpanKind.PRODUCER, 60, 95, lost);
    for (const s of [select, charge, callPayments, ordersServer, callOrders, root, orphan]) s.end((s as Span & { __end: number }).__end);

    const exporter = new OTLPTraceExporter({ url: `${server.url}/v1/traces`, headers: { authorization: `Bearer ${token}` } });
    const result = await new Promise<ExportResult>((r) => exporter.export(finished.getFinishedSpans() as ReadableSpan[], r));
    assert.equal(result.code, ExportResultCode.SUCCESS, String(result.error));
    await exporter.shutdown();
  });

  after(async () => {
    await server?.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  void it('trace prints the waterfall: spans under their parents, services, durations, errors, the orphan', async () => {
    const r = await cli(['trace', traceId, '-n', NS, '--width', '120']);
    assert.equal(r.code, 0, r.stderr);
    const [summary, ...rest] = r.stdout.trimEnd().split('\n');
    assert.match(summary!, new RegExp(`^trace ${traceId} in namespace shop: 7 spans, 3 services, 100ms, 1 error, started `));
    const { header, rows, nameCol } = layout(rest.join('\n'));
    assert.equal(header.length, 120);
    assert.deepEqual(
      rows.map((row) => nameCell(row, nameCol)),
      [
        { depth: 0, name: 'GET /checkout' },
        { depth: 1, name: 'POST orders' },
        { depth: 2, name: 'POST /orders' },
        { depth: 3, name: 'SELECT orders' },
        { depth: 3, name: 'POST payments' },
        { depth: 4, name: 'POST /charge' },
        { depth: 0, name: '⇢ publish receipt' },
      ],
    );
    const cols = rows.map((row) => row.trim().split(/ {2,}/));
    assert.deepEqual(
      cols.map((c) => c.slice(0, 3)),
      [
        ['0µs', '100ms', 'gateway'],
        ['5.00ms', '85.0ms', 'gateway'],
        ['10.0ms', '75.0ms', 'orders'],
        ['15.0ms', '15.0ms', 'orders'],
        ['35.0ms', '45.0ms', 'orders'],
        ['40.0ms', '35.0ms', 'payments'],
        ['60.0ms', '35.0ms', 'orders'],
      ],
    );
    assert.match(rows[0]!, /GET \/checkout +200 /);
    assert.match(rows[5]!, /POST \/charge +✗ 500 +lane=canary /);
    assert.match(r.stdout, /⇢ parent span not received\n$/);
  });

  void it('trace fits the default width of 100 columns when stdout is not a terminal', async () => {
    const r = await cli(['trace', traceId.toUpperCase(), '-n', NS]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n').slice(1);
    assert.equal(lines[0]!.length, 100);
    for (const l of lines) assert.ok(l.length <= 100, l);
  });

  void it('trace -o json and -o yaml print the spans as the server keeps them', async () => {
    const j = await cli(['trace', traceId, '-n', NS, '-o', 'json']);
    assert.equal(j.code, 0, j.stderr);
    const doc = JSON.parse(j.stdout) as { traceId: string; spans: { spanId: string; parentSpanId?: string; service: string; name: string; durationMs: number; httpStatus?: number; status: string }[] };
    assert.equal(doc.traceId, traceId);
    assert.equal(doc.spans.length, 7);
    const charge = doc.spans.find((s) => s.name === 'POST /charge')!;
    assert.deepEqual([charge.service, charge.status, charge.httpStatus, charge.durationMs], ['payments', 'error', 500, 35]);
    const caller = doc.spans.find((s) => s.spanId === charge.parentSpanId)!;
    assert.equal(caller.name, 'POST payments');
    const y = parseYaml((await cli(['trace', traceId, '-n', NS, '-o', 'yaml'])).stdout) as { spans: unknown[] };
    assert.equal(y.spans.length, 7);
  });

  void it('trace of an unknown id, or in the wrong namespace, is not found (exit 1); a malformed id is a usage error (exit 2)', async () => {
    const missing = randomBytes(16).toString('hex');
    const a = await cli(['trace', missing, '-n', NS]);
    assert.equal(a.code, 1);
    assert.match(a.stderr, new RegExp(`^error: trace ${missing} not found in namespace shop \\(not_found\\)$`, 'm'));
    const b = await cli(['trace', traceId, '-n', 'elsewhere']);
    assert.equal(b.code, 1);
    assert.match(b.stderr, /not found in namespace elsewhere/);
    for (const bad of ['xyz', traceId.slice(1), '0'.repeat(32)]) {
      const c = await cli(['trace', bad, '-n', NS]);
      assert.equal(c.code, 2, bad);
      assert.match(c.stderr, /is not a trace id/);
    }
  });

  void it('traces lists summaries, and filters by service, status, tag and duration', async () => {
    const t = await cli(['traces', '-n', NS]);
    assert.equal(t.code, 0, t.stderr);
    const lines = t.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^TRACE +AGE +DURATION +SPANS +ERRORS +ROOT +SERVICES$/);
    assert.match(lines[1]!, new RegExp(`^${traceId} +\\d+s +100ms +7 +1 +gateway: GET /checkout +gateway,orders,payments$`));

    const ids = async (...args: string[]): Promise<string[]> => {
      const r = await cli(['traces', '-n', NS, '-o', 'json', ...args]);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { items: { traceId: string }[] }).items.map((i) => i.traceId);
    };
    assert.deepEqual(await ids('--service', 'payments', '--status', 'error'), [traceId]);
    assert.deepEqual(await ids('--tag', 'lane=canary', '--since', '10m', '--limit', '5'), [traceId]);
    assert.deepEqual(await ids('--status', 'ok', '--service', 'payments'), []);
    assert.deepEqual(await ids('--status', 'ok', '--service', 'orders'), [traceId]);
    assert.deepEqual(await ids('--min-duration', '1s'), []);
    assert.deepEqual(await ids('--min-duration', '99ms', '--endpoint', 'GET /checkout'), [traceId]);

    const none = await cli(['traces', '-n', NS, '--service', 'nobody']);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /^No traces found in namespace shop\.$/m);

    assert.equal((await cli(['traces', '--status', 'bogus'])).code, 2);
    assert.equal((await cli(['traces', '--min-duration', 'soon'])).code, 2);
    assert.equal((await cli(['traces', '--limit', '0'])).code, 2);
    assert.equal((await cli(['traces', '--tag', 'novalue'])).code, 2);
  });
});
