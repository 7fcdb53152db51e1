import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServer, type RunningServer } from '@plinth/server';
import { parse as parseYaml } from 'yaml';
import { formatPercent, formatRate } from './apm.js';
import { runCli, type Run } from '../cli.test.helpers.js';

void describe('APM figures formatting', () => {
  void it('formats rates and shares compactly, never in exponent notation', () => {
    assert.deepEqual([1234.5, 12.34, 1.5, 0.05, 0, 0.0001].map(formatRate), ['1235/s', '12.3/s', '1.50/s', '0.05/s', '0.00/s', '<0.01/s']);
    assert.deepEqual([0, 1, 0.1, 0.0005, 0.00001, 0.5].map(formatPercent), ['0%', '100%', '10.0%', '0.05%', '<0.01%', '50.0%']);
  });
});

// ---- end to end: a real server fed OTLP spans, the built CLI ----

type Attr = { key: string; value: { stringValue: string } | { intValue: string } | { boolValue: boolean } };
const attr = (key: string, v: string | number | boolean): Attr => ({
  key,
  value: typeof v === 'string' ? { stringValue: v } : typeof v === 'number' ? { intValue: String(v) } : { boolValue: v },
});

interface SpanSpec {
  name: string;
  kind: 'server' | 'client';
  startMs: number;
  durationMs: number;
  error?: boolean;
  attributes: Record<string, string | number | boolean>;
}

function otlp(service: string, namespace: string, spans: readonly SpanSpec[]): unknown {
  const nanos = (ms: number): string => (BigInt(Math.round(ms)) * 1_000_000n).toString();
  return {
    resourceSpans: [
      {
        resource: { attributes: [attr('service.name', service), attr('service.namespace', namespace)] },
        scopeSpans: [
          {
            scope: { name: 'e2e' },
            spans: spans.map((s) => ({
              traceId: randomBytes(16).toString('hex'),
              spanId: randomBytes(8).toString('hex'),
              name: s.name,
              kind: s.kind === 'server' ? 2 : 3,
              startTimeUnixNano: nanos(s.startMs),
              endTimeUnixNano: nanos(s.startMs + s.durationMs),
              attributes: Object.entries(s.attributes).map(([k, v]) => attr(k, v)),
              status: s.error ? { code: 2 } : { code: 0 },
            })),
          },
        ],
      },
    ],
  };
}

void describe('plinth red / topology / slo / alerts / contention against a real server', () => {
  let tmp: string;
  let server: RunningServer;
  let env: NodeJS.ProcessEnv;
  let token = '';
  const NS = 'shop';
  const cli = (args: string[]): Promise<Run> => runCli(args, env);
  const api = async (method: string, path: string, body: unknown): Promise<void> => {
    const r = await fetch(server.url + path, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${await r.text()}`);
  };
  const resource = (kind: string, name: string, spec: unknown) => api('PUT', `/v1/resources/${kind}/${NS}/${name}`, { apiVersion: 'plinth.dev/v1', kind, metadata: { namespace: NS, name }, spec });

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'plinth-cli-apm-'));
    server = await startServer({ dataDir: join(tmp, 'data'), listen: '127.0.0.1:0', logLevel: 'silent', apm: { evaluateEveryMs: 200 } });
    token = (await readFile(server.adminTokenFile!, 'utf8')).trim();
    env = { PATH: process.env['PATH'], HOME: tmp, XDG_CONFIG_HOME: join(tmp, 'xdg'), PLINTH_URL: server.url, PLINTH_TOKEN: token, PLINTH_NAMESPACE: NS };

    await resource('Service', 'pricing', { team: 'pricing', latencyBudgetMs: 100 });
    await resource('Slo', 'checkout', { target: { service: 'web', endpoint: 'GET /checkout' }, indicator: 'availability', objectivePercent: 99 });

    // The last ten minutes: web serves GET /checkout (40 calls, 4 failing, and 5 pressure-test calls), calls
    // pricing slowly (300 ms against its 100 ms budget) and PostgreSQL; pricing serves GET /price.
    const t0 = Date.now() - 10 * 60_000;
    const checkout = (i: number, stress: boolean): SpanSpec => ({
      name: 'GET /checkout',
      kind: 'server',
      startMs: t0 + i * 1000,
      durationMs: 40,
      error: !stress && i < 4,
      attributes: { 'http.request.method': 'GET', 'http.route': '/checkout', 'http.response.status_code': !stress && i < 4 ? 500 : 200, ...(stress ? { 'plinth.stress': true } : {}) },
    });
    const web: SpanSpec[] = [
      ...Array.from({ length: 40 }, (_, i) => checkout(i, false)),
      ...Array.from({ length: 5 }, (_, i) => checkout(i + 40, true)),
      ...Array.from({ length: 20 }, (_, i): SpanSpec => ({ name: 'GET pricing', kind: 'client', startMs: t0 + i * 1000 + 5, durationMs: 300, attributes: { 'peer.service': 'pricing', 'http.response.status_code': 200 } })),
      ...Array.from({ length: 10 }, (_, i): SpanSpec => ({ name: 'SELECT carts', kind: 'client', startMs: t0 + i * 1000 + 10, durationMs: 3, attributes: { 'db.system': 'postgresql', 'db.namespace': 'shop' } })),
    ];
    const pricing = Array.from({ length: 20 }, (_, i): SpanSpec => ({ name: 'GET /price', kind: 'server', startMs: t0 + i * 1000 + 6, durationMs: 280, attributes: { 'http.request.method': 'GET', 'http.route': '/price', 'http.response.status_code': 200 } }));
    await api('POST', '/v1/traces', otlp('web', NS, web));
    await api('POST', '/v1/traces', otlp('pricing', NS, pricing));

    // The figures and the alert are ready once the SLO's page alert has fired.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await fetch(`${server.url}/v1/apm/alerts?namespace=${NS}`, { headers: { authorization: `Bearer ${token}` } });
      const items = ((await r.json()) as { items?: { state: string }[] }).items ?? [];
      if (items.some((e) => e.state === 'firing')) break;
      if (Date.now() > deadline) throw new Error('the SLO alert did not fire');
      await new Promise((ok) => setTimeout(ok, 100));
    }
  });

  after(async () => {
    await server?.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  void it('red: per service by default, per endpoint and per edge on asking, pressure-test traffic only on asking', async () => {
    const bySvc = await cli(['red']);
    assert.equal(bySvc.code, 0, bySvc.stderr);
    const lines = bySvc.stdout.trim().split('\n');
    assert.match(lines[0]!, /^SERVICE\s+RATE\s+CALLS\s+ERRORS\s+P50\s+P95\s+P99\s+REJECTED$/);
    assert.match(bySvc.stdout, /^web\s+\S+\/s\s+40\s+4 \(10\.0%\)\s/m);
    assert.match(bySvc.stdout, /^pricing\s+\S+\/s\s+20\s+0 \(0%\)\s/m);

    const byEndpoint = await cli(['red', '--by', 'endpoint', '--service', 'web', '--split', 'stress', '--include-stress']);
    assert.equal(byEndpoint.code, 0, byEndpoint.stderr);
    assert.match(byEndpoint.stdout, /^SERVICE\s+ENDPOINT\s+STRESS\s+RATE/m);
    assert.match(byEndpoint.stdout, /^web\s+GET \/checkout\s+false\s+\S+\s+40\s+4 /m);
    assert.match(byEndpoint.stdout, /^web\s+GET \/checkout\s+true\s+\S+\s+5\s+0 /m);

    const edges = await cli(['red', '--by', 'edge']);
    assert.match(edges.stdout, /^CALLER\s+CALLEE\s+RATE/m);
    // Percentiles come from the rollups' latency buckets: the 300 ms calls read as the bucket holding them.
    assert.match(edges.stdout, /^web\s+pricing\s+\S+\s+20\s+0 \(0%\)\s+[23]\d\dms\s/m);
    assert.match(edges.stdout, /^web\s+postgresql\/shop\s+\S+\s+10\s+0 \(0%\)\s/m);

    const json = JSON.parse((await cli(['red', '-o', 'json'])).stdout) as { items: { service: string; count: number }[] };
    assert.deepEqual(json.items.map((r) => [r.service, r.count]).sort(), [['pricing', 20], ['web', 40]]);

    const none = await cli(['red', '-n', 'elsewhere']);
    assert.deepEqual([none.code, none.stdout], [0, '']);
    assert.match(none.stderr, /No figures in namespace elsewhere for the last hour/);
  });

  void it('topology: the edges with their figures, the database marked external', async () => {
    const r = await cli(['topology']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^CALLER\s+CALLEE\s+CALLS\s+ERRORS\s+P50\s+P95\s+P99$/m);
    assert.match(r.stdout, /^web\s+postgresql\/shop \(external\)\s+10\s+0 \(0%\)/m);
    assert.match(r.stdout, /^web\s+pricing\s+20\s+0 \(0%\)\s+[23]\d\dms/m);
    assert.match(r.stdout, /^2 services: pricing, web; external: postgresql\/shop$/m);
    const y = parseYaml((await cli(['topology', '-o', 'yaml'])).stdout) as { edges: unknown[]; nodes: { name: string; external: boolean }[] };
    assert.equal(y.edges.length, 2);
    assert.ok(y.nodes.some((n) => n.name === 'postgresql/shop' && n.external));
  });

  void it('slo: the list with budget and burn per pair; one SLO in detail; an unknown one exits 1', async () => {
    const list = await cli(['slo']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NAME\s+TARGET\s+OBJECTIVE\s+BUDGET LEFT\s+BURN \(LONG\/SHORT\)\s+FIRING$/m);
    // 4 bad of 40 against a 1 % budget: spent ten times over; every window holding the traffic (all but the
    // last 5 minutes) burns 10x, so the 6h/30m page and the 24h/2h ticket fire and 1h/5m does not.
    assert.match(list.stdout, /^checkout\s+web GET \/checkout\s+availability 99% over 30d\s+0%\s+1h\/5m 10\.0x\/0\.00x {2}6h\/30m 10\.0x\/10\.0x {2}24h\/2h 10\.0x\/10\.0x\s+(page,ticket|ticket,page)$/m);
    const all = await cli(['slo', '-A']);
    assert.match(all.stdout, /^NAMESPACE\s+NAME/m);
    assert.match(all.stdout, /^shop\s+checkout\s/m);

    const one = await cli(['slo', 'checkout']);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /^Slo shop\/checkout: web GET \/checkout, availability 99% over 30d$/m);
    assert.match(one.stdout, /^error budget: 0% left \(4 bad of 40; 0 allowed, overspent 10\.0x\)$/m);
    assert.match(one.stdout, /^1h\/5m\s+page\s+14\.4x\s+10\.0x \(4\/40\)\s+0\.00x \(0\/0\)\s+ok$/m);
    assert.match(one.stdout, /^6h\/30m\s+page\s+6\.00x\s+10\.0x \(4\/40\)\s+10\.0x \(4\/40\)\s+FIRING$/m);
    assert.match(one.stdout, /^firing \(page\) since \S+: /m);
    const doc = JSON.parse((await cli(['slo', 'checkout', '-o', 'json'])).stdout) as { name: string; errorBudget: { bad: number } };
    assert.deepEqual([doc.name, doc.errorBudget.bad], ['checkout', 4]);

    const missing = await cli(['slo', 'nothing']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: Slo shop\/nothing not found/m);
    assert.equal((await cli(['slo', 'checkout', '-A'])).code, 2);
  });

  void it('alerts: the history newest first, filtered by source; bad flags are usage errors', async () => {
    const r = await cli(['alerts', '--since', '1h']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^AGE\s+SOURCE\s+STATE\s+SEVERITY\s+NOTIFICATION\s+SUMMARY$/m);
    assert.match(r.stdout, /^\d+s\s+Slo\/checkout\s+firing\s+page\s+none\s+burn /m);
    const none = await cli(['alerts', '--source', 'AlertRule/other']);
    assert.deepEqual([none.code, none.stdout], [0, '']);
    assert.match(none.stderr, /No alerts in namespace shop/);
    const bad = await cli(['alerts', '--source', 'whatever']);
    assert.equal(bad.code, 1, 'the server refuses a malformed source');
    assert.match(bad.stderr, /source must be Slo\/<name> or AlertRule\/<name>/);
    assert.equal((await cli(['alerts', '--limit', '0'])).code, 2);
    assert.equal((await cli(['alerts', '-A', '-n', NS])).code, 2);
  });

  void it('contention: the consumer over the shared service\'s budget, with the advice', async () => {
    const r = await cli(['contention', '--since', '30m']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^SHARED SERVICE \(BUDGET\)\s+CONSUMER\s+RATE\s+P99\s+REJECTED\s+BUDGET\s+ADVICE$/m);
    assert.match(r.stdout, /^pricing \(100ms\)\s+web\s+0\.01\/s\s+[23]\d\dms\s+0\s+OVER\s+web waits on pricing synchronously at 0\.011\/s with p99 /m);
    const doc = JSON.parse((await cli(['contention', '-o', 'json'])).stdout) as { services: { service: string; overBudget: boolean }[] };
    assert.deepEqual(doc.services.map((s) => [s.service, s.overBudget]), [['pricing', true]]);
  });

  void it('bad flags exit 2 naming the flag', async () => {
    for (const args of [['red', '--by', 'host'], ['red', '--split', 'colour'], ['red', '--since', 'soon'], ['topology', '--since', '-1h']]) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /--(by|split|since)/);
    }
  });
});
