import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Idempotency, type Decision, type IdempotentRequest } from './idempotency.js';
import { MemoryIdempotencyStore } from './memory-store.js';
import type { IdempotencyStore, StoredResponse } from './types.js';

const quiet = { warn: () => {}, debug: () => {} };
const req = (over: Partial<IdempotentRequest> = {}): IdempotentRequest => ({ method: 'POST', target: '/orders', key: 'k1', body: Buffer.from('{"n":1}'), ...over });
const ok: StoredResponse = { status: 201, headers: { 'content-type': 'application/json', connection: 'keep-alive', 'transfer-encoding': 'chunked' }, body: Buffer.from('{"id":1}') };

function execution(d: Decision) {
  assert.equal(d.kind, 'execute');
  return (d as Extract<Decision, { kind: 'execute' }>).execution;
}
function response(d: Decision): StoredResponse {
  assert.equal(d.kind, 'respond');
  return (d as Extract<Decision, { kind: 'respond' }>).response;
}
const problemCode = (r: StoredResponse) => (JSON.parse(r.body.toString()) as { code: string }).code;

describe('Idempotency', () => {
  it('applies to POST and PATCH with a key, and passes everything else through', () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore() });
    assert.equal(idem.keyOf('POST', 'k'), 'k');
    assert.equal(idem.keyOf('patch', 'k'), 'k');
    assert.equal(idem.keyOf('GET', 'k'), undefined);
    assert.equal(idem.keyOf('PUT', 'k'), undefined);
    assert.equal(idem.keyOf('POST', undefined), undefined);
    assert.equal(new Idempotency({ store: new MemoryIdempotencyStore(), methods: ['put'] }).keyOf('PUT', 'k'), 'k');
  });

  it('replays a stored response without hop-by-hop fields and marked as a replay', async () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore() });
    await execution(await idem.begin(undefined, req())).finish(ok);
    const r = response(await idem.begin(undefined, req()));
    assert.equal(r.status, 201);
    assert.deepEqual(r.headers, { 'content-type': 'application/json', 'idempotent-replayed': 'true' });
    assert.equal(r.body.toString(), '{"id":1}');
  });

  it('fingerprints method, target and body: any difference is a 422', async () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore() });
    await execution(await idem.begin(undefined, req())).finish(ok);
    for (const other of [req({ body: Buffer.from('{"n":2}') }), req({ target: '/orders?x=1' }), req({ method: 'PATCH' })]) {
      const r = response(await idem.begin(undefined, other));
      assert.equal(r.status, 422);
      assert.equal(problemCode(r), 'idempotency_key_reused');
      assert.equal(r.headers['content-type'], 'application/problem+json');
    }
  });

  it('answers 400 problem+json for a malformed key', async () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore() });
    const r = response(await idem.begin(undefined, req({ key: 'x'.repeat(256) })));
    assert.equal(r.status, 400);
    assert.equal(problemCode(r), 'idempotency_key_invalid');
  });

  it('keeps scopes apart: the same key from two tenants runs twice and never leaks a response', async () => {
    const idem = new Idempotency<{ tenant: string }>({ store: new MemoryIdempotencyStore(), scope: (r) => r.tenant });
    await execution(await idem.begin({ tenant: 'a' }, req())).finish(ok);
    const b = execution(await idem.begin({ tenant: 'b' }, req()));
    await b.finish({ ...ok, body: Buffer.from('{"id":2}') });
    assert.equal(response(await idem.begin({ tenant: 'a' }, req())).body.toString(), '{"id":1}');
    assert.equal(response(await idem.begin({ tenant: 'b' }, req())).body.toString(), '{"id":2}');
  });

  it('does not store 5xx answers or failures, so a retry runs again', async () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore() });
    await execution(await idem.begin(undefined, req())).finish({ ...ok, status: 503 });
    await execution(await idem.begin(undefined, req())).finish(undefined);
    await execution(await idem.begin(undefined, req())).finish(ok);
  });

  it('stores 4xx answers unless told not to', async () => {
    const stores = new Idempotency({ store: new MemoryIdempotencyStore() });
    await execution(await stores.begin(undefined, req())).finish({ ...ok, status: 404 });
    assert.equal(response(await stores.begin(undefined, req())).status, 404);
    const skips = new Idempotency({ store: new MemoryIdempotencyStore(), storeClientErrors: false });
    await execution(await skips.begin(undefined, req())).finish({ ...ok, status: 404 });
    execution(await skips.begin(undefined, req()));
  });

  it('counts only the first finish', async () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore() });
    const e = execution(await idem.begin(undefined, req()));
    await e.finish(ok);
    await e.finish(undefined);
    assert.equal(response(await idem.begin(undefined, req())).status, 201);
  });

  it("rejects a duplicate of a running request at once in 'reject' mode", async () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore(), concurrent: 'reject' });
    const first = execution(await idem.begin(undefined, req()));
    const r = response(await idem.begin(undefined, req()));
    assert.equal(r.status, 409);
    assert.equal(problemCode(r), 'idempotency_key_in_use');
    await first.finish(ok);
  });

  it("makes a duplicate wait for the first's response in 'wait' mode", async () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore() });
    const first = execution(await idem.begin(undefined, req()));
    const waiting = idem.begin(undefined, req());
    await first.finish(ok);
    const r = response(await waiting);
    assert.equal(r.status, 201);
    assert.equal(r.headers['idempotent-replayed'], 'true');
  });

  it('lets a waiting duplicate execute when the first released its key', async () => {
    const idem = new Idempotency({ store: new MemoryIdempotencyStore() });
    const first = execution(await idem.begin(undefined, req()));
    const waiting = idem.begin(undefined, req());
    await first.finish({ ...ok, status: 500 });
    execution(await waiting);
  });

  it('gives up waiting after waitMs with a 409, also for an executor in another instance', async () => {
    const store = new MemoryIdempotencyStore();
    // Two instances over one store: the second cannot see the first's local execution and polls the store.
    const a = new Idempotency({ store });
    const b = new Idempotency({ store, waitMs: 30 });
    execution(await a.begin(undefined, req()));
    const r = response(await b.begin(undefined, req()));
    assert.equal(r.status, 409);
    assert.equal(r.headers['retry-after'], '1');
  });

  it('sees a completion in another instance by polling the store', async () => {
    const store = new MemoryIdempotencyStore();
    const a = new Idempotency({ store });
    const b = new Idempotency({ store });
    const first = execution(await a.begin(undefined, req()));
    const waiting = b.begin(undefined, req());
    await new Promise((r) => setTimeout(r, 30));
    await first.finish(ok);
    assert.equal(response(await waiting).status, 201);
  });

  it('refuses with 503 rather than executing when the store fails', async () => {
    const broken: IdempotencyStore = {
      begin: () => Promise.reject(new Error('down')),
      complete: () => Promise.reject(new Error('down')),
      abandon: () => Promise.reject(new Error('down')),
    };
    const idem = new Idempotency({ store: broken, logger: quiet });
    const r = response(await idem.begin(undefined, req()));
    assert.equal(r.status, 503);
    assert.equal(problemCode(r), 'idempotency_unavailable');
  });

  it('does not reject finish when the store fails after the answer went out', async () => {
    const store = new MemoryIdempotencyStore();
    const warned: string[] = [];
    const idem = new Idempotency({ store: { begin: (k, f, l) => store.begin(k, f, l), complete: () => Promise.reject(new Error('down')), abandon: () => Promise.resolve() }, logger: { warn: (m) => warned.push(m), debug: () => {} } });
    await execution(await idem.begin(undefined, req())).finish(ok);
    assert.equal(warned.length, 1);
  });

  it('refuses nonsensical options', () => {
    const store = new MemoryIdempotencyStore();
    assert.throws(() => new Idempotency({ store, ttlMs: 0 }), RangeError);
    assert.throws(() => new Idempotency({ store, leaseMs: -1 }), RangeError);
    assert.throws(() => new Idempotency({ store, waitMs: Number.NaN }), RangeError);
  });
});
