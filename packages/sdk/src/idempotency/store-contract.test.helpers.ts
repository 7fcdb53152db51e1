import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { IdempotencyStore, StoredResponse } from './types.js';

export interface StoreFixture {
  store: IdempotencyStore;
  /** A second store on the same backing data (another connection or client), for races across instances. */
  peer: IdempotencyStore;
  cleanup(): Promise<void>;
}

const LEASE = 60_000;
const TTL = 60_000;
const SHORT = 80;

const response: StoredResponse = {
  status: 201,
  headers: { 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'], location: '/orders/7' },
  body: Buffer.from([0, 1, 2, 255, 0x7b, 0x7d]),
};

function token(r: Awaited<ReturnType<IdempotencyStore['begin']>>): string {
  assert.equal(r.kind, 'execute');
  return (r as { token: string }).token;
}

/** The behaviour every store must have; run against each backend with its own fixture. */
export function storeContract(name: string, open: () => Promise<StoreFixture>): void {
  describe(`${name} idempotency store contract`, () => {
    let f: StoreFixture;
    before(async () => {
      f = await open();
    });
    after(async () => {
      await f?.cleanup();
    });
    const key = () => `k-${randomUUID()}`;

    it('executes a new key once and replays its stored response byte for byte', async () => {
      const k = key();
      const t = token(await f.store.begin(k, 'fp', LEASE));
      await f.store.complete(k, t, response, TTL);
      for (const s of [f.store, f.peer]) {
        const r = await s.begin(k, 'fp', LEASE);
        assert.equal(r.kind, 'replay');
        assert.deepEqual(r.kind === 'replay' && { ...r.response, body: Buffer.from(r.response.body) }, response);
      }
    });

    it('reports a key still executing as in flight, and a different fingerprint as a mismatch', async () => {
      const k = key();
      token(await f.store.begin(k, 'fp', LEASE));
      assert.deepEqual(await f.peer.begin(k, 'fp', LEASE), { kind: 'inFlight' });
      assert.deepEqual(await f.peer.begin(k, 'other', LEASE), { kind: 'mismatch' });
    });

    it('reports a different fingerprint for a completed key as a mismatch', async () => {
      const k = key();
      const t = token(await f.store.begin(k, 'fp', LEASE));
      await f.store.complete(k, t, response, TTL);
      assert.deepEqual(await f.peer.begin(k, 'other', LEASE), { kind: 'mismatch' });
    });

    it('grants exactly one of many racing begins', async () => {
      const k = key();
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? f.peer : f.store).begin(k, 'fp', LEASE)));
      assert.equal(results.filter((r) => r.kind === 'execute').length, 1);
      assert.equal(results.filter((r) => r.kind === 'inFlight').length, 19);
    });

    it('keeps keys apart', async () => {
      const a = key();
      const b = key();
      token(await f.store.begin(a, 'fp', LEASE));
      token(await f.store.begin(b, 'fp', LEASE));
    });

    it('frees a key on abandon, but only for the token that owns it', async () => {
      const k = key();
      const t = token(await f.store.begin(k, 'fp', LEASE));
      await f.store.abandon(k, 'not-the-token');
      assert.deepEqual(await f.store.begin(k, 'fp', LEASE), { kind: 'inFlight' });
      await f.store.abandon(k, t);
      // After release the key is free for any request, a corrected payload included.
      const t2 = token(await f.peer.begin(k, 'corrected', LEASE));
      assert.notEqual(t2, t);
    });

    it('lets a duplicate take over once the lease lapses, and ignores the late first executor', async () => {
      const k = key();
      const first = token(await f.store.begin(k, 'fp', SHORT));
      await sleep(SHORT * 2.5);
      const second = token(await f.peer.begin(k, 'fp', LEASE));
      assert.notEqual(second, first);
      await f.store.complete(k, first, { ...response, status: 299 }, TTL);
      await f.store.abandon(k, first);
      assert.deepEqual(await f.store.begin(k, 'fp', LEASE), { kind: 'inFlight' });
      await f.peer.complete(k, second, response, TTL);
      const r = await f.store.begin(k, 'fp', LEASE);
      assert.equal(r.kind === 'replay' && r.response.status, 201);
    });

    it('forgets a completed key after its TTL', async () => {
      const k = key();
      const t = token(await f.store.begin(k, 'fp', LEASE));
      await f.store.complete(k, t, response, SHORT);
      assert.equal((await f.store.begin(k, 'fp', LEASE)).kind, 'replay');
      await sleep(SHORT * 2.5);
      token(await f.peer.begin(k, 'another request', LEASE));
    });

    it('stores an empty body and no headers', async () => {
      const k = key();
      const t = token(await f.store.begin(k, 'fp', LEASE));
      await f.store.complete(k, t, { status: 204, headers: {}, body: Buffer.alloc(0) }, TTL);
      const r = await f.peer.begin(k, 'fp', LEASE);
      assert.equal(r.kind, 'replay');
      if (r.kind === 'replay') {
        assert.equal(r.response.status, 204);
        assert.deepEqual(r.response.headers, {});
        assert.equal(r.response.body.length, 0);
      }
    });
  });
}

/** A test that fails under CI=true and otherwise skips, saying why, when a service URL is unset. */
export function requireService(envVar: string, what: string, example: string): string | undefined {
  const url = process.env[envVar];
  if (url) return url;
  if (process.env.CI === 'true') {
    it(`${what} idempotency store contract`, () => {
      assert.fail(`CI=true but ${envVar} is not set: the ${what} idempotency store cannot be tested`);
    });
  } else {
    const reason = `${envVar} is not set (e.g. ${example})`;
    console.log(`# skipping the ${what} idempotency store tests: ${reason}`);
    it(`${what} idempotency store contract`, { skip: reason }, () => {});
  }
  return undefined;
}
