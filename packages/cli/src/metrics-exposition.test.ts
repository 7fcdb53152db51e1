/**
 * Every component's Prometheus exposition must pass `promtool check metrics` (Debian package prometheus),
 * the linter Prometheus itself ships: names, help, types, label syntax and histogram shapes. Each component
 * serves real traffic first so that labelled series exist, not only their help lines.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Registry } from 'prom-client';
import { request } from 'undici';
import { createClient, StaticGovernance } from '@plinth/sdk';
import { InboundMetrics, plinth } from '@plinth/sdk/middleware';
import { startServer } from '@plinth/server';
import { promtool } from './cli.test.helpers.js';

const hasPromtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;
const skip = hasPromtool ? false : 'promtool is not installed (Debian package prometheus)';
if (!hasPromtool && process.env.CI === 'true') throw new Error('CI=true but promtool is missing: .ci/run installs the prometheus package');
if (skip) console.log(`# skipping exposition checks: ${skip}`);

async function assertClean(component: string, text: string, mustContain: string[]): Promise<void> {
  for (const name of mustContain) assert.ok(text.includes(name), `${component} exposes ${name}`);
  const r = await promtool(text);
  assert.equal(r.code, 0, `promtool check metrics on ${component}:\n${r.output}`);
  assert.equal(r.output.trim(), '', `promtool has no complaints about ${component}:\n${r.output}`);
}

const tmp = mkdtempSync(join(tmpdir(), 'plinth-metrics-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('the server’s /metrics passes promtool', { skip }, async (t) => {
  const server = await startServer({ dataDir: join(tmp, 'server'), listen: '127.0.0.1:0', logLevel: 'silent' });
  t.after(() => server.close());
  const { readFileSync } = await import('node:fs');
  const token = readFileSync(join(tmp, 'server', 'admin.token'), 'utf8').trim();
  const auth = { authorization: `Bearer ${token}` };
  await request(`${server.url}/v1/resources/Config/default/a`, {
    method: 'PUT',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ spec: { format: 'text', content: 'x' } }),
  }).then((r) => r.body.dump());
  await request(`${server.url}/v1/resources/Config?namespace=default`, { headers: auth }).then((r) => r.body.dump());
  const res = await request(`${server.url}/metrics`, { headers: auth });
  assert.equal(res.statusCode, 200);
  await assertClean('plinth server', await res.body.text(), ['plinth_server_http_requests_total', 'plinth_server_watch_streams']);
});

test('an SDK service’s inbound and outbound metrics pass promtool', { skip }, async (t) => {
  const upstream = createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => upstream.close(() => r())));
  const governance = new StaticGovernance();
  governance.set({
    instances: [{ metadata: { name: 'payments-1' }, spec: { service: 'payments', version: '1', address: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` } }],
  });
  const registry = new Registry();
  const metrics = new InboundMetrics({ registry });
  const client = createClient({ self: 'orders', governance, metrics: registry });
  t.after(() => client.close());
  const listener = plinth(
    async (_req: IncomingMessage, res: ServerResponse) => {
      const r = await client.request('payments', { path: '/charge' });
      res.end(r.body);
    },
    { service: 'orders', governance, metrics, route: () => '/checkout' },
  );
  const svc = createServer(listener);
  await new Promise<void>((r) => svc.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => svc.close(() => r())));
  const url = `http://127.0.0.1:${(svc.address() as AddressInfo).port}`;
  for (const headers of [{}, { baggage: 'plinth.stress=1', 'plinth-caller': 'loadgen' }]) {
    const r = await request(`${url}/checkout`, { headers });
    assert.equal(r.statusCode, 200);
    await r.body.dump();
  }
  await assertClean('SDK service', await registry.metrics(), ['plinth_inbound_requests_total', 'plinth_outbound_requests_total']);
});
