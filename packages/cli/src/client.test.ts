import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { AUDIT_GENESIS_HASH, auditHash, type AuditEntry, type WatchEvent } from '@plinth/core';
import { PlinthClient } from './client.js';
import { ApiError, ExitCode, UnreachableError } from './errors.js';
import { verifyAudit } from './commands/audit.js';
import { runWatch } from './commands/watch.js';

/** A stand-in for the documented API, so client behaviour is pinned down independently of the real server. */
type Handler = (req: IncomingMessage, res: ServerResponse, url: URL) => void;
let handler: Handler = (_req, res) => res.end();
let server: Server;
let base: string;

before(async () => {
  server = createServer((req, res) => handler(req, res, new URL(req.url ?? '/', 'http://x')));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

function problem(res: ServerResponse, status: number, code: string, detail: string, errors?: unknown[]): void {
  res.writeHead(status, { 'content-type': 'application/problem+json' });
  res.end(JSON.stringify({ type: `https://plinth.dev/problems/${code}`, title: 't', status, code, detail, ...(errors ? { errors } : {}) }));
}

function event(type: WatchEvent['type'], revision: number, name = 'c'): WatchEvent {
  return {
    type,
    revision,
    resource: {
      apiVersion: 'plinth.dev/v1',
      kind: 'Config',
      metadata: { namespace: 'ns', name, labels: {}, annotations: {}, revision, createRevision: 1, createdAt: '', updatedAt: '' },
      spec: {},
    },
  };
}

void describe('PlinthClient', () => {
  void it('sends the bearer token and maps problem+json to ApiError with field errors', async () => {
    let auth: string | undefined;
    handler = (req, res) => {
      auth = req.headers.authorization;
      problem(res, 422, 'validation_failed', 'spec.format: invalid', [{ field: 'spec.format', message: 'invalid option' }]);
    };
    const c = new PlinthClient({ url: base, token: 'tok' });
    const err = await c.putResource('Config', 'ns', 'x', {}).then(
      () => assert.fail('expected an error'),
      (e: unknown) => e,
    );
    assert.equal(auth, 'Bearer tok');
    assert.ok(err instanceof ApiError);
    assert.equal(err.code, 'validation_failed');
    assert.equal(err.exitCode, ExitCode.REFUSED);
    assert.equal(err.message, 'spec.format: invalid (validation_failed)');
    assert.deepEqual(err.details, ['spec.format: invalid option']);
  });

  void it('maps 401 and 403 to the auth exit code, and non-problem answers to a short error', async () => {
    handler = (_req, res) => problem(res, 401, 'unauthenticated', 'bad token');
    const c = new PlinthClient({ url: base, token: undefined });
    await assert.rejects(c.whoami(), (e: unknown) => e instanceof ApiError && e.exitCode === ExitCode.AUTH);
    handler = (_req, res) => problem(res, 403, 'forbidden', 'no');
    await assert.rejects(c.whoami(), (e: unknown) => e instanceof ApiError && e.exitCode === ExitCode.AUTH);
    handler = (_req, res) => {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html>bad gateway</html>');
    };
    await assert.rejects(c.whoami(), (e: unknown) => e instanceof ApiError && e.code === 'http_502' && !e.message.includes('<html>'));
  });

  void it('reports an unreachable server with exit code 3', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const c = new PlinthClient({ url: `http://127.0.0.1:${port}`, token: undefined });
    await assert.rejects(c.whoami(), (e: unknown) => e instanceof UnreachableError && e.exitCode === ExitCode.UNREACHABLE && /ECONNREFUSED/.test(e.message));
  });

  void it('reads the PUT outcome from Plinth-Result and encodes path segments', async () => {
    let path = '';
    handler = (req, res) => {
      path = req.url ?? '';
      res.writeHead(200, { 'content-type': 'application/json', 'plinth-result': 'unchanged' });
      res.end(JSON.stringify(event('ADDED', 3).resource));
    };
    const r = await new PlinthClient({ url: base, token: undefined }).putResource('Config', 'ns', 'a b', {});
    assert.equal(r.result, 'unchanged');
    assert.equal(path, '/v1/resources/Config/ns/a%20b');
  });

  void it('follows continue pages and keeps the first page revision', async () => {
    const seen: (string | null)[] = [];
    handler = (_req, res, url) => {
      const cont = url.searchParams.get('continue');
      seen.push(cont);
      const page = cont === null ? { revision: 10, items: [event('ADDED', 1, 'a').resource], continue: 'p2' } : { revision: 11, items: [event('ADDED', 2, 'b').resource] };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ apiVersion: 'plinth.dev/v1', kind: 'List', ...page }));
    };
    const r = await new PlinthClient({ url: base, token: undefined }).listAll('Config', { namespace: 'ns' });
    assert.deepEqual(seen, [null, 'p2']);
    assert.equal(r.revision, 10);
    assert.deepEqual(r.items.map((i) => i.metadata.name), ['a', 'b']);
  });
});

void describe('runWatch', () => {
  void it('prints events, and after a dropped connection resumes from the last id it saw', async () => {
    const lastIds: (string | undefined)[] = [];
    let connections = 0;
    handler = (req, res) => {
      connections++;
      lastIds.push(req.headers['last-event-id'] as string | undefined);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (connections === 1) {
        res.write(`id: 5\nevent: ADDED\ndata: ${JSON.stringify(event('ADDED', 5))}\n\n`);
        res.write('id: 7\nevent: BOOKMARK\ndata: {"revision":7}\n\n');
        // Drop the connection mid-stream, as a restarting server or a flaky network would.
        setTimeout(() => res.destroy(), 20);
      } else {
        res.write(`id: 8\nevent: MODIFIED\ndata: ${JSON.stringify(event('MODIFIED', 8))}\n\n`);
      }
    };
    const got: WatchEvent[] = [];
    const stop = new AbortController();
    await runWatch(
      new PlinthClient({ url: base, token: undefined }),
      { kinds: ['Config'], namespace: 'ns', selector: undefined, since: 4 },
      {
        signal: stop.signal,
        minDelayMs: 10,
        onEvent: (e) => {
          got.push(e);
          if (got.length === 2) stop.abort();
        },
      },
    );
    assert.deepEqual(got.map((e) => `${e.type} ${e.revision}`), ['ADDED 5', 'MODIFIED 8']);
    assert.deepEqual(lastIds, ['4', '7']);
  });

  void it('follows on from the server revision after a RESYNC, and stops on refusals', async () => {
    const lastIds: (string | undefined)[] = [];
    handler = (req, res) => {
      lastIds.push(req.headers['last-event-id'] as string | undefined);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (lastIds.length === 1) res.end('event: RESYNC\ndata: {"revision":50,"compactedRevision":40}\n\n');
    };
    const notes: string[] = [];
    const stop = new AbortController();
    const done = runWatch(new PlinthClient({ url: base, token: undefined }), { kinds: [], namespace: undefined, selector: undefined, since: 3 }, {
      signal: stop.signal,
      minDelayMs: 10,
      onEvent: () => undefined,
      onNote: (n) => notes.push(n),
    });
    while (lastIds.length < 2) await new Promise((r) => setTimeout(r, 10));
    stop.abort();
    await done;
    assert.deepEqual(lastIds, ['3', '50']);
    assert.ok(notes.some((n) => n.startsWith('resync')));

    handler = (_req, res) => problem(res, 401, 'unauthenticated', 'bad token');
    await assert.rejects(
      runWatch(new PlinthClient({ url: base, token: 'x' }), { kinds: [], namespace: undefined, selector: undefined, since: undefined }, { signal: new AbortController().signal, onEvent: () => undefined }),
      (e: unknown) => e instanceof ApiError && e.exitCode === ExitCode.AUTH,
    );
  });
});

void describe('verifyAudit', () => {
  function chain(n: number): AuditEntry[] {
    const out: AuditEntry[] = [];
    let prev = AUDIT_GENESIS_HASH;
    for (let seq = 1; seq <= n; seq++) {
      const body = { time: `2026-01-01T00:00:${String(seq).padStart(2, '0')}Z`, actor: 'ServiceAccount:plinth-system/admin', action: 'update', kind: 'Config', namespace: 'ns', name: 'c', outcome: 'allowed' as const, source: '127.0.0.1', revisionBefore: seq - 1, revisionAfter: seq, detail: null };
      const hash = auditHash(prev, seq, body);
      out.push({ seq, ...body, prevHash: prev, hash });
      prev = hash;
    }
    return out;
  }

  function serve(entries: AuditEntry[], head: { seq: number; hash: string }, pageSize = 2): void {
    handler = (_req, res, url) => {
      const after = Number(url.searchParams.get('after') ?? 0);
      const items = entries.filter((e) => e.seq > after).slice(0, pageSize);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ items, head }));
    };
  }

  void it('accepts an intact chain read over several pages', async () => {
    const entries = chain(5);
    serve(entries, { seq: 5, hash: entries[4]!.hash });
    const r = await verifyAudit(new PlinthClient({ url: base, token: undefined }));
    assert.equal(r.ok, true);
    assert.equal(r.checked, 5);
  });

  void it('finds an edited entry, a removed entry, and removed newest entries', async () => {
    const c = new PlinthClient({ url: base, token: undefined });
    const edited = chain(5);
    edited[2] = { ...edited[2]!, actor: 'someone-else' };
    serve(edited, { seq: 5, hash: edited[4]!.hash });
    assert.deepEqual((await verifyAudit(c)).problem, { seq: 3, reason: 'entry 3 was altered (hash mismatch)' });

    const gap = chain(5).filter((e) => e.seq !== 2);
    serve(gap, { seq: 5, hash: gap[3]!.hash });
    assert.equal((await verifyAudit(c)).problem?.seq, 2);

    const truncated = chain(5);
    serve(truncated.slice(0, 3), { seq: 5, hash: truncated[4]!.hash });
    const r = await verifyAudit(c);
    assert.equal(r.ok, false);
    assert.match(r.problem?.reason ?? '', /entries were removed/);
  });
});
