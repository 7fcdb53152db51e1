/**
 * Wire behaviour a real server cannot be made to show on demand (a stream that goes silent, list pages read
 * at different revisions, events that overlap a list). A scripted HTTP server plays the control plane here;
 * everything else is tested against the real one in control-plane-client.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Resource } from '@plinth/core';
import { createControlPlaneClient, type ControlPlaneClientOptions } from './index.js';
import { nextEvent, recordingLogger, until } from './testing/control-plane.js';

type Handler = (req: IncomingMessage, res: ServerResponse, url: URL) => void;

async function scripted(handler: Handler): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer((req, res) => handler(req, res, new URL(req.url ?? '/', 'http://x')));
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

function res(kind: string, name: string, revision: number): Resource {
  return {
    apiVersion: 'plinth.dev/v1',
    kind,
    metadata: { namespace: 'app', name, labels: {}, annotations: {}, revision, createRevision: revision, createdAt: '', updatedAt: '' },
    spec: {},
  };
}

const json = (r: ServerResponse, body: unknown, status = 200) => r.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
const sse = (r: ServerResponse) => r.writeHead(200, { 'content-type': 'text/event-stream' });
const change = (type: string, r: Resource) => `id: ${r.metadata.revision}\nevent: ${type}\ndata: ${JSON.stringify({ type, revision: r.metadata.revision, resource: r })}\n\n`;
const bookmark = (rev: number) => `id: ${rev}\nevent: BOOKMARK\ndata: {"revision":${rev}}\n\n`;

function options(url: string, o: Partial<ControlPlaneClientOptions> = {}): ControlPlaneClientOptions {
  return { url, token: 'eyJ.test.jwt', kinds: ['Config'], backoff: { initialMs: 10, maxMs: 50 }, logger: recordingLogger(), ...o };
}

test('a watch silent for idleTimeoutMs is dropped and resumed from the last revision', async (t) => {
  const watches: string[] = [];
  const srv = await scripted((_req, r, url) => {
    if (url.pathname === '/v1/resources/Config') return json(r, { revision: 7, items: [] });
    watches.push(url.searchParams.get('since') ?? '');
    sse(r);
    r.write(bookmark(watches.length === 1 ? 9 : 10)); // ...then nothing, not even a heartbeat
  });
  t.after(() => srv.close());
  const cp = createControlPlaneClient(options(srv.url, { idleTimeoutMs: 200 }));
  t.after(() => cp.close());
  await cp.ready;
  const [info] = await nextEvent(cp, 'disconnected', undefined, 3000);
  assert.equal(info.reason, 'idle');
  assert.equal(info.error && (info.error as { code?: string }).code, 'watch_idle');
  await until(() => watches.length >= 2, 'a second watch', 3000);
  assert.deepEqual(watches.slice(0, 2), ['7', '9'], 'resumes from the last bookmark');
});

test('heartbeat comments alone keep a quiet watch alive', async (t) => {
  let watches = 0;
  const timers: NodeJS.Timeout[] = [];
  const srv = await scripted((_req, r, url) => {
    if (url.pathname === '/v1/resources/Config') return json(r, { revision: 1, items: [] });
    watches++;
    sse(r);
    r.write(bookmark(1));
    timers.push(setInterval(() => r.write(': heartbeat\n\n'), 50));
  });
  t.after(async () => {
    for (const x of timers) clearInterval(x);
    await srv.close();
  });
  const cp = createControlPlaneClient(options(srv.url, { idleTimeoutMs: 200 }));
  t.after(() => cp.close());
  let drops = 0;
  cp.on('disconnected', () => drops++);
  await cp.ready;
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(drops, 0);
  assert.equal(watches, 1);
  assert.equal(cp.connected, true);
});

test('list pages and per-kind list revisions: one watch from the oldest, overlaps applied once', async (t) => {
  const watchSince: string[] = [];
  const srv = await scripted((_req, r, url) => {
    if (url.pathname === '/v1/resources/Config') {
      // Two pages read at different revisions; the first is what is safe to follow from.
      if (url.searchParams.get('continue') === 'p2') return json(r, { revision: 12, items: [res('Config', 'b', 11)] });
      return json(r, { revision: 10, items: [res('Config', 'a', 5)], continue: 'p2' });
    }
    if (url.pathname === '/v1/resources/Instance') return json(r, { revision: 14, items: [res('Instance', 'i', 13)] });
    watchSince.push(`${url.searchParams.get('kinds')} since ${url.searchParams.get('since')}`);
    sse(r);
    r.write(
      // Instance j came and went before the Instance list (rev 14): its old event must not resurrect it.
      change('ADDED', res('Instance', 'j', 11)) +
        // Already in the Config list's second page: ignored by the per-resource revision check.
        change('MODIFIED', res('Config', 'b', 11)) +
        change('ADDED', res('Config', 'c', 13)) +
        bookmark(14),
    );
  });
  t.after(() => srv.close());
  const cp = createControlPlaneClient(options(srv.url, { kinds: ['Instance', 'Config'] }));
  t.after(() => cp.close());
  const changes: string[] = [];
  cp.on('change', (e) => changes.push(`${e.type} ${e.resource.kind}/${e.resource.metadata.name}@${e.revision}`));
  await cp.ready;
  assert.deepEqual(watchSince, ['Config,Instance since 10']);
  assert.deepEqual(cp.list('Config').map((r) => r.metadata.name).sort(), ['a', 'b', 'c']);
  assert.deepEqual(cp.list('Instance').map((r) => r.metadata.name), ['i']);
  assert.equal(cp.revision, 14);
  // The relist is swapped in whole at the bookmark, then announced once per resource.
  assert.deepEqual(changes, ['ADDED Config/a@5', 'ADDED Config/b@11', 'ADDED Config/c@13', 'ADDED Instance/i@13']);
});

test('410 revision_compacted on the watch means relist; a stream that breaks before its bookmark resumes the relist', async (t) => {
  const requests: string[] = [];
  let watchN = 0;
  const srv = await scripted((_req, r, url) => {
    if (url.pathname === '/v1/resources/Config') {
      requests.push('list');
      return json(r, { revision: 20, items: [res('Config', 'a', 20)] });
    }
    requests.push(`watch since ${url.searchParams.get('since')}`);
    watchN++;
    if (watchN === 1) return json(r, { code: 'revision_compacted', status: 410, title: 'compacted' }, 410);
    sse(r);
    if (watchN === 2) return r.end(change('ADDED', res('Config', 'b', 21))); // breaks before the bookmark
    r.write(change('ADDED', res('Config', 'c', 22)) + bookmark(22));
  });
  t.after(() => srv.close());
  // A cache file with a revision the "server" has compacted.
  const dir = mkdtempSync(join(tmpdir(), 'plinth-sdk-wire-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cacheFile = join(dir, 'c.json');
  writeFileSync(cacheFile, JSON.stringify({ version: 1, revision: 3, kinds: ['Config'], namespace: null, selector: '', items: [res('Config', 'old', 3)], savedAt: '' }));

  const cp = createControlPlaneClient(options(srv.url, { cacheFile }));
  t.after(() => cp.close());
  await cp.started;
  assert.equal(cp.source, 'cache');
  await cp.ready;
  assert.deepEqual(requests, ['watch since 3', 'list', 'watch since 20', 'watch since 21']);
  assert.deepEqual(cp.list('Config').map((r) => r.metadata.name).sort(), ['a', 'b', 'c']);
  assert.equal(cp.get('Config', 'app', 'old'), undefined);
});
