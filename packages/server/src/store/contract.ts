// The one contract both store backends pass (imported by sqlite.test.ts and postgres.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AUDIT_GENESIS_HASH,
  AuditVerifier,
  auditHash,
  isPlinthError,
  matchesSelector,
  parseSelector,
  type AuditEntry,
  type AuditEntryBody,
  type AuditVerifyResult,
  type Resource,
} from '@plinth/core';
import type { PutRequest, Store, StoredChange } from './types.js';

export interface StoreFixture {
  /** A fresh, initialized, empty store. */
  store: Store;
  /** Another store on the same data, for persistence checks (close `store` first). */
  reopen?: () => Promise<Store>;
  /** A second live store on the same data at the same time, as another server process would have. */
  peer?: () => Promise<Store>;
  /** Runs SQL directly against the data, bypassing the store (tamper tests). */
  exec?: (sql: string) => Promise<void>;
  /** Closes every store the fixture opened and removes the data. */
  cleanup: () => Promise<void>;
}

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const WAIT_MS = 5000;

function put(kind: string, namespace: string, name: string, spec: unknown, extra: Partial<PutRequest> = {}): PutRequest {
  return { kind, namespace, name, labels: {}, annotations: {}, spec, ...extra };
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isPlinthError(e), `expected a PlinthError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

/** Resolves once `store` has notified a revision >= `revision`; fails after a bounded wait. */
function notified(store: Store, revision: number, ms = WAIT_MS): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no change notification for revision ${revision} within ${ms} ms`));
    }, ms);
    const off = store.onChange((r) => {
      if (r < revision) return;
      clearTimeout(timer);
      off();
      resolve(r);
    });
  });
}

async function verifyAudit(store: Store): Promise<AuditVerifyResult> {
  const v = new AuditVerifier();
  // Small pages, so that paging by seq is exercised as well.
  for (let after = 0; ; ) {
    const page = await store.readAudit(after, 3);
    for (const e of page) v.push(e);
    const last = page[page.length - 1];
    if (page.length < 3 || !last) break;
    after = last.seq;
  }
  return v.finish(await store.auditHead());
}

function auditBody(i: number, extra: Partial<AuditEntryBody> = {}): AuditEntryBody {
  return {
    time: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    actor: 'ServiceAccount:plinth-system/admin',
    action: 'update',
    kind: 'Config',
    namespace: 'retail',
    name: `c${i}`,
    outcome: 'allowed',
    source: '127.0.0.1',
    revisionBefore: i,
    revisionAfter: i + 1,
    detail: null,
    ...extra,
  };
}

function keyOrder(a: Resource, b: Resource): number {
  const cmp = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);
  return cmp(a.metadata.namespace, b.metadata.namespace) || cmp(a.metadata.name, b.metadata.name);
}

export function storeContract(name: string, open: () => Promise<StoreFixture>): void {
  void describe(`store contract: ${name}`, () => {
    /** Every case gets its own empty store, removed afterwards. */
    const test = (title: string, fn: (f: StoreFixture) => Promise<void>): void => {
      void it(title, async () => {
        const f = await open();
        try {
          await fn(f);
        } finally {
          await f.cleanup();
        }
      });
    };

    // ---- put -----------------------------------------------------------------------------------------

    test('put creates a resource (ADDED) at the next global revision, with the documented shape', async ({ store }) => {
      assert.equal(store.backend, name);
      assert.equal(await store.currentRevision(), 0);
      const t0 = Date.now();
      const spec = { format: 'yaml', content: 'maxItems: 50\n' };
      const r = await store.put(put('Config', 'retail', 'checkout', spec, { labels: { team: 'orders' }, annotations: { owner: 'ann' } }));
      const t1 = Date.now();
      assert.equal(r.type, 'ADDED');
      assert.equal(r.previous, undefined);
      const { createdAt } = r.resource.metadata;
      assert.match(createdAt, ISO_TIME);
      assert.ok(Date.parse(createdAt) >= t0 - 1 && Date.parse(createdAt) <= t1 + 1);
      assert.deepEqual(r.resource, {
        apiVersion: 'plinth.dev/v1',
        kind: 'Config',
        metadata: {
          namespace: 'retail',
          name: 'checkout',
          labels: { team: 'orders' },
          annotations: { owner: 'ann' },
          revision: 1,
          createRevision: 1,
          createdAt,
          updatedAt: createdAt,
        },
        spec,
      });
      assert.deepEqual(await store.get('Config', 'retail', 'checkout'), r.resource);
      assert.equal(await store.currentRevision(), 1);

      // One revision sequence for every kind and namespace.
      const other = await store.put(put('Route', 'payments', 'checkout', { x: 1 }));
      assert.equal(other.resource.metadata.revision, 2);
      assert.equal(other.resource.metadata.createRevision, 2);
      assert.equal(await store.get('Config', 'payments', 'checkout'), undefined);
      assert.equal(await store.get('Route', 'retail', 'checkout'), undefined);
      assert.equal(await store.currentRevision(), 2);
    });

    test('put replaces a resource (MODIFIED), keeping createRevision and createdAt', async ({ store }) => {
      const first = await store.put(put('Config', 'retail', 'a', { v: 1 }, { labels: { team: 'orders' } }));
      await store.put(put('Config', 'retail', 'other', { v: 1 }));
      await sleep(5);
      const second = await store.put(put('Config', 'retail', 'a', { v: 2 }, { labels: { team: 'payments' } }));
      assert.equal(second.type, 'MODIFIED');
      assert.deepEqual(second.previous, first.resource);
      const m = second.resource.metadata;
      assert.equal(m.revision, 3);
      assert.equal(m.createRevision, 1);
      assert.equal(m.createdAt, first.resource.metadata.createdAt);
      assert.match(m.updatedAt, ISO_TIME);
      assert.ok(m.updatedAt > m.createdAt, 'updatedAt moves on');
      assert.deepEqual(m.labels, { team: 'payments' });
      assert.deepEqual(second.resource.spec, { v: 2 });
      assert.deepEqual(await store.get('Config', 'retail', 'a'), second.resource);
    });

    test('put with canonically equal labels, annotations and spec is UNCHANGED and writes nothing', async ({ store }) => {
      const base = put('Config', 'retail', 'a', { x: 1, nested: { p: 1, q: [1, { r: 2, s: 3 }] } }, {
        labels: { a: '1', b: '2' },
        annotations: { n: 'x', m: 'y' },
      });
      const first = await store.put(base);
      const seen: number[] = [];
      const off = store.onChange((r) => seen.push(r));
      try {
        // Same content, keys in another order.
        const again = await store.put({
          ...base,
          labels: { b: '2', a: '1' },
          annotations: { m: 'y', n: 'x' },
          spec: { nested: { q: [1, { s: 3, r: 2 }], p: 1 }, x: 1 },
        });
        assert.equal(again.type, 'UNCHANGED');
        assert.deepEqual(again.resource, first.resource);
        assert.deepEqual(again.previous, first.resource);
        assert.equal(await store.currentRevision(), 1);
        assert.equal((await store.changesSince(0, 100)).length, 1);
        assert.equal((await store.history('Config', 'retail', 'a')).length, 1);

        // Only the content counts; any one part differing is a change.
        const byAnnotation = await store.put({ ...base, annotations: { n: 'x', m: 'z' } });
        assert.equal(byAnnotation.type, 'MODIFIED');
        assert.equal(byAnnotation.resource.metadata.revision, 2);
        const byLabel = await store.put({ ...base, annotations: { n: 'x', m: 'z' }, labels: { a: '1' } });
        assert.equal(byLabel.type, 'MODIFIED');
        const fourth = notified(store, 4);
        const bySpec = await store.put({ ...base, annotations: { n: 'x', m: 'z' }, labels: { a: '1' }, spec: { x: 1 } });
        assert.equal(bySpec.type, 'MODIFIED');
        assert.equal(bySpec.resource.metadata.revision, 4);
        await fourth;
        // The UNCHANGED put notified nothing; the three writes did (possibly coalesced).
        assert.ok(seen.length >= 1 && seen.every((r) => r >= 2 && r <= 4), `notified ${seen.join(',')}`);
      } finally {
        off();
      }
    });

    test('expectRevision: create-only, compare-and-swap, and nothing written on a conflict', async ({ store }) => {
      const k = ['Config', 'retail', 'a'] as const;
      await rejectsWith(store.put(put(...k, { v: 1 }, { expectRevision: 5 })), 'revision_conflict');
      assert.equal(await store.get(...k), undefined);
      assert.equal(await store.currentRevision(), 0);

      const created = await store.put(put(...k, { v: 1 }, { expectRevision: 0 }));
      assert.equal(created.type, 'ADDED');
      await rejectsWith(store.put(put(...k, { v: 2 }, { expectRevision: 0 })), 'already_exists');
      await rejectsWith(store.put(put(...k, { v: 2 }, { expectRevision: 7 })), 'revision_conflict');
      assert.equal(await store.currentRevision(), 1);
      assert.deepEqual(await store.get(...k), created.resource);

      const swapped = await store.put(put(...k, { v: 2 }, { expectRevision: 1 }));
      assert.equal(swapped.type, 'MODIFIED');
      assert.equal(swapped.resource.metadata.revision, 2);
      // A stale revision conflicts even when the content would be unchanged.
      await rejectsWith(store.put(put(...k, { v: 2 }, { expectRevision: 1 })), 'revision_conflict');
      assert.equal((await store.put(put(...k, { v: 2 }, { expectRevision: 2 }))).type, 'UNCHANGED');

      await rejectsWith(store.delete(...k, { expectRevision: 1 }), 'revision_conflict');
      assert.ok(await store.get(...k));
      assert.equal(await store.currentRevision(), 2);
      const gone = await store.delete(...k, { expectRevision: 2 });
      assert.equal(gone?.metadata.revision, 3);
    });

    // ---- delete --------------------------------------------------------------------------------------

    test('delete returns the last state at the delete revision, logs DELETED, and a later put starts afresh', async ({ store }) => {
      const k = ['Config', 'retail', 'a'] as const;
      const v1 = await store.put(put(...k, { v: 1 }, { labels: { team: 'orders' } }));
      await store.put(put('Config', 'retail', 'b', { v: 1 }));
      const v2 = await store.put(put(...k, { v: 2 }, { labels: { team: 'orders' } }));

      const gone = await store.delete(...k);
      assert.deepEqual(gone, { ...v2.resource, metadata: { ...v2.resource.metadata, revision: 4 } });
      assert.equal(await store.get(...k), undefined);
      assert.equal(await store.currentRevision(), 4);
      const log = await store.changesSince(3, 10);
      assert.deepEqual(log, [{ type: 'DELETED', revision: 4, resource: gone }]);

      assert.equal(await store.delete(...k), undefined);
      assert.equal(await store.delete('Config', 'nowhere', 'nothing', { expectRevision: 3 }), undefined);
      assert.equal(await store.currentRevision(), 4);

      await sleep(5);
      const again = await store.put(put(...k, { v: 3 }));
      assert.equal(again.type, 'ADDED');
      assert.equal(again.previous, undefined);
      assert.equal(again.resource.metadata.revision, 5);
      assert.equal(again.resource.metadata.createRevision, 5);
      assert.ok(again.resource.metadata.createdAt > v1.resource.metadata.createdAt);
      assert.deepEqual(
        (await store.history(...k)).map((e) => [e.type, e.revision]),
        [
          ['ADDED', 5],
          ['DELETED', 4],
          ['MODIFIED', 3],
          ['ADDED', 1],
        ],
      );
    });

    // ---- list ----------------------------------------------------------------------------------------

    test('list: (namespace, name) byte order, namespace and selector filters, exact pages and `more`', async ({ store }) => {
      const names = ['b', 'a-b', 'ab', 'a', 'a1', 'z9', 'web-2', 'web2', 'web'];
      const namespaces = ['retail', 'pay-ments', 'payments', 'a'];
      const teams = ['orders', 'payments', undefined];
      const writes: Promise<unknown>[] = [];
      let i = 0;
      for (const ns of namespaces) {
        for (const n of names) {
          const labels: Record<string, string> = {};
          const team = teams[i % 3];
          if (team) labels.team = team;
          if (i % 4 === 0) labels.tier = 'canary';
          if (i % 5 === 0) labels['plinth.dev/service'] = 'orders';
          i++;
          writes.push(store.put(put('Config', ns, n, { i }, { labels })));
        }
      }
      writes.push(store.put(put('Route', 'retail', 'a', {})));
      await Promise.all(writes);
      const all = (await store.list('Config')).items;
      assert.equal(all.length, names.length * namespaces.length);
      assert.deepEqual(
        all.map((r) => `${r.metadata.namespace}/${r.metadata.name}`),
        [...all].sort(keyOrder).map((r) => `${r.metadata.namespace}/${r.metadata.name}`),
      );
      assert.deepEqual(
        (await store.list('Config', { namespace: 'retail' })).items.map((r) => r.metadata.name),
        ['a', 'a-b', 'a1', 'ab', 'b', 'web', 'web-2', 'web2', 'z9'],
      );
      assert.deepEqual((await store.list('Route')).items.map((r) => r.kind), ['Route']);
      assert.deepEqual((await store.list('Nothing')).items, []);

      const whole = await store.list('Config');
      assert.equal(whole.revision, await store.currentRevision());
      assert.equal(whole.more, false);

      const selectors = [
        '',
        'team=orders',
        'team!=orders',
        'team in (orders,payments)',
        'team notin (orders)',
        'tier',
        '!tier',
        'team=orders,tier=canary',
        'plinth.dev/service=orders',
        'team=orders,team=payments',
        'team=nobody',
      ];
      for (const source of selectors) {
        const selector = parseSelector(source);
        for (const namespace of [undefined, 'payments']) {
          const expected = all.filter(
            (r) => matchesSelector(selector, r.metadata.labels) && (namespace === undefined || r.metadata.namespace === namespace),
          );
          const got = await store.list('Config', { selector, namespace });
          assert.deepEqual(got.items, expected, `selector ${JSON.stringify(source)} in ${namespace ?? 'all namespaces'}`);
          for (const limit of [1, 2, 3, expected.length, 100]) {
            if (limit === 0) continue;
            const pages: Resource[] = [];
            let after: { namespace: string; name: string } | undefined;
            for (let guard = 0; ; guard++) {
              assert.ok(guard <= expected.length + 1, 'pagination terminates');
              const page = await store.list('Config', { selector, namespace, limit, after });
              const remaining = expected.length - pages.length;
              assert.equal(page.items.length, Math.min(limit, remaining), `page size, ${source} limit ${limit}`);
              assert.equal(page.more, remaining > limit, `more, ${source} limit ${limit}`);
              pages.push(...page.items);
              const last = page.items[page.items.length - 1];
              if (!page.more || !last) break;
              after = { namespace: last.metadata.namespace, name: last.metadata.name };
            }
            assert.deepEqual(pages, expected, `paged ${JSON.stringify(source)} by ${limit}`);
          }
        }
      }
      // `after` needs no existing key: it is a position.
      assert.deepEqual(
        (await store.list('Config', { namespace: 'retail', after: { namespace: 'retail', name: 'aa' }, limit: 2 })).items.map((r) => r.metadata.name),
        ['ab', 'b'],
      );
      const page = await store.list('Config', { limit: 0 });
      assert.deepEqual(page.items, []);
      assert.equal(page.more, true);
    });

    test('list fills a page past many non-matching rows and reads everything without a limit', async ({ store }) => {
      const total = 1100;
      const batch: Promise<unknown>[] = [];
      for (let i = 0; i < total; i++) {
        const labels: Record<string, string> = i % 100 === 99 ? { rare: 'yes' } : {};
        batch.push(store.put(put('Config', 'bulk', `n${String(i).padStart(5, '0')}`, { i }, { labels })));
        if (batch.length === 50) await Promise.all(batch.splice(0));
      }
      await Promise.all(batch);
      const everything = await store.list('Config');
      assert.equal(everything.items.length, total);
      assert.equal(everything.more, false);
      const rare = parseSelector('!team,rare=yes');
      const first = await store.list('Config', { selector: parseSelector('rare'), limit: 4 });
      assert.deepEqual(first.items.map((r) => r.metadata.name), ['n00099', 'n00199', 'n00299', 'n00399']);
      assert.equal(first.more, true);
      const rest = await store.list('Config', { selector: rare, limit: 100, after: { namespace: 'bulk', name: 'n00399' } });
      assert.deepEqual(rest.items.map((r) => r.metadata.name), ['n00499', 'n00599', 'n00699', 'n00799', 'n00899', 'n00999', 'n01099']);
      assert.equal(rest.more, false);
      const last = await store.list('Config', { selector: rare, limit: 1, after: { namespace: 'bulk', name: 'n00999' } });
      assert.deepEqual(last.items.map((r) => r.metadata.name), ['n01099']);
      assert.equal(last.more, false);
    });

    // ---- history and the change log -------------------------------------------------------------------

    test('history is newest first with limit and beforeRevision; atRevision is exact', async ({ store }) => {
      const k = ['Config', 'retail', 'a'] as const;
      await store.put(put(...k, { v: 1 })); // 1
      await store.put(put('Config', 'retail', 'b', { v: 1 })); // 2
      await store.put(put(...k, { v: 2 })); // 3
      await store.put(put(...k, { v: 3 })); // 4
      await store.delete(...k); // 5
      await store.put(put('Config', 'retail', 'a-other', { v: 1 })); // 6
      await store.put(put(...k, { v: 4 })); // 7

      const h = await store.history(...k);
      assert.deepEqual(
        h.map((e) => [e.type, e.revision, e.resource.metadata.revision, (e.resource.spec as { v: number }).v]),
        [
          ['ADDED', 7, 7, 4],
          ['DELETED', 5, 5, 3],
          ['MODIFIED', 4, 4, 3],
          ['MODIFIED', 3, 3, 2],
          ['ADDED', 1, 1, 1],
        ],
      );
      assert.deepEqual((await store.history(...k, { limit: 2 })).map((e) => e.revision), [7, 5]);
      assert.deepEqual((await store.history(...k, { beforeRevision: 5 })).map((e) => e.revision), [4, 3, 1]);
      assert.deepEqual((await store.history(...k, { beforeRevision: 4, limit: 1 })).map((e) => e.revision), [3]);
      assert.deepEqual(await store.history('Config', 'retail', 'never'), []);

      const at3 = await store.atRevision(...k, 3);
      assert.equal(at3?.type, 'MODIFIED');
      assert.deepEqual(at3?.resource.spec, { v: 2 });
      assert.deepEqual(at3, h[3]);
      assert.equal((await store.atRevision(...k, 5))?.type, 'DELETED');
      assert.equal(await store.atRevision(...k, 2), undefined, 'revision 2 belongs to another resource');
      assert.equal(await store.atRevision(...k, 99), undefined);
    });

    test('changesSince is ascending, bounded, and carries previousLabels on MODIFIED only', async ({ store }) => {
      const k = ['Instance', 'retail', 'i1'] as const;
      await store.put(put(...k, { v: 1 }, { labels: { team: 'orders' } })); // 1
      await store.put(put(...k, { v: 2 }, { labels: { team: 'payments', lane: 'blue' } })); // 2
      await store.put(put(...k, { v: 3 }, { labels: { team: 'payments', lane: 'blue' } })); // 3
      await store.delete(...k); // 4

      const all = await store.changesSince(0, 100);
      assert.deepEqual(all.map((c) => [c.type, c.revision]), [
        ['ADDED', 1],
        ['MODIFIED', 2],
        ['MODIFIED', 3],
        ['DELETED', 4],
      ]);
      const byRev = new Map(all.map((c) => [c.revision, c] as [number, StoredChange]));
      assert.ok(!('previousLabels' in byRev.get(1)!));
      assert.deepEqual(byRev.get(2)!.previousLabels, { team: 'orders' });
      assert.deepEqual(byRev.get(2)!.resource.metadata.labels, { team: 'payments', lane: 'blue' });
      assert.deepEqual(byRev.get(3)!.previousLabels, { team: 'payments', lane: 'blue' });
      assert.ok(!('previousLabels' in byRev.get(4)!));
      assert.deepEqual(byRev.get(4)!.resource.metadata.labels, { team: 'payments', lane: 'blue' });
      for (const c of all) assert.equal(c.resource.metadata.revision, c.revision);

      assert.deepEqual((await store.changesSince(0, 2)).map((c) => c.revision), [1, 2]);
      assert.deepEqual((await store.changesSince(2, 100)).map((c) => c.revision), [3, 4]);
      assert.deepEqual(await store.changesSince(4, 100), []);
    });

    test('compact drops log entries up to min(revision, current) and never moves back', async ({ store }) => {
      const k = ['Config', 'retail', 'a'] as const;
      assert.equal(await store.compactedRevision(), 0);
      for (let v = 1; v <= 5; v++) await store.put(put(...k, { v }));
      await store.compact(3);
      assert.equal(await store.compactedRevision(), 3);
      assert.deepEqual((await store.changesSince(0, 100)).map((c) => c.revision), [4, 5]);
      assert.deepEqual((await store.history(...k)).map((e) => e.revision), [5, 4]);
      assert.equal(await store.atRevision(...k, 2), undefined);
      assert.equal((await store.atRevision(...k, 4))?.revision, 4);

      await store.compact(1);
      assert.equal(await store.compactedRevision(), 3);
      assert.deepEqual((await store.changesSince(0, 100)).map((c) => c.revision), [4, 5]);

      await store.compact(1_000_000);
      assert.equal(await store.compactedRevision(), 5, 'never beyond the current revision');
      assert.deepEqual(await store.changesSince(0, 100), []);
      assert.deepEqual(await store.history(...k), []);
      assert.deepEqual((await store.get(...k))?.spec, { v: 5 }, 'current state is not part of the log');
      assert.equal(await store.currentRevision(), 5);

      const next = await store.put(put(...k, { v: 6 }));
      assert.equal(next.resource.metadata.revision, 6);
      assert.deepEqual((await store.changesSince(5, 100)).map((c) => c.revision), [6]);
      assert.deepEqual((await store.history(...k)).map((e) => e.revision), [6]);
    });

    // ---- notifications -------------------------------------------------------------------------------

    test('onChange fires after each committed write with the newest revision; unsubscribe stops it', async ({ store }) => {
      const a: number[] = [];
      const b: number[] = [];
      const offA = store.onChange((r) => a.push(r));
      const offB = store.onChange((r) => b.push(r));
      const boom = store.onChange(() => {
        throw new Error('a broken listener must not fail the write');
      });
      try {
        const w1 = notified(store, 1);
        const r1 = await store.put(put('Config', 'retail', 'a', { v: 1 }));
        assert.equal(await w1, 1);
        // Readers told about a revision find it committed.
        assert.deepEqual((await store.changesSince(0, 10)).map((c) => c.revision), [r1.resource.metadata.revision]);

        const w2 = notified(store, 2);
        await store.delete('Config', 'retail', 'a');
        assert.equal(await w2, 2);

        offA();
        const w3 = notified(store, 3);
        await store.put(put('Instance', 'retail', 'i', {}, { leaseExpiresAt: 1 }));
        await w3;
        const w4 = notified(store, 4);
        assert.ok(await store.expireLease('retail', 'i', 2));
        await w4;
        assert.deepEqual(a, [1, 2]);
        assert.ok(b.includes(4) && b.every((r, i) => i === 0 || r > b[i - 1]!), `ascending, ends at 4: ${b.join(',')}`);
      } finally {
        offA();
        offB();
        boom();
      }
    });

    // ---- leases --------------------------------------------------------------------------------------

    test('leases: put upserts, renew extends without a revision, expiry is oldest first and atomic', async ({ store }) => {
      const inst = (name: string, leaseExpiresAt: number, v = 1) => put('Instance', 'retail', name, { v }, { leaseExpiresAt });
      await store.put(inst('i1', 1000));
      await store.put(inst('i2', 500));
      await store.put(inst('i3', 3000));
      assert.deepEqual(await store.getLease('retail', 'i1'), { namespace: 'retail', name: 'i1', expiresAt: 1000 });
      assert.equal(await store.getLease('retail', 'nope'), undefined);

      assert.deepEqual(await store.expiredLeases(2000, 10), [
        { namespace: 'retail', name: 'i2', expiresAt: 500 },
        { namespace: 'retail', name: 'i1', expiresAt: 1000 },
      ]);
      assert.deepEqual((await store.expiredLeases(2000, 1)).map((l) => l.name), ['i2']);
      assert.deepEqual(await store.expiredLeases(500, 10), [], 'expired means strictly before now');

      const rev = await store.currentRevision();
      assert.equal(await store.renewLease('retail', 'i1', 2500), true);
      assert.equal((await store.getLease('retail', 'i1'))?.expiresAt, 2500);
      assert.equal(await store.renewLease('retail', 'nope', 2500), false);
      assert.equal(await store.getLease('retail', 'nope'), undefined, 'renewing creates nothing');
      assert.equal(await store.currentRevision(), rev, 'renewals write no revision');

      // Renewed meanwhile: not expired at `now`, so nothing happens.
      assert.equal(await store.expireLease('retail', 'i1', 2000), undefined);
      assert.ok(await store.get('Instance', 'retail', 'i1'));
      assert.equal((await store.getLease('retail', 'i1'))?.expiresAt, 2500);
      assert.equal(await store.expireLease('retail', 'i3', 3000), undefined, 'a lease expiring exactly now is still live');

      const before = await store.get('Instance', 'retail', 'i2');
      const gone = await store.expireLease('retail', 'i2', 2000);
      assert.ok(gone && before);
      assert.equal(gone.metadata.revision, rev + 1);
      assert.deepEqual(gone, { ...before, metadata: { ...before.metadata, revision: rev + 1 } });
      assert.equal(await store.get('Instance', 'retail', 'i2'), undefined);
      assert.equal(await store.getLease('retail', 'i2'), undefined);
      assert.deepEqual(await store.changesSince(rev, 10), [{ type: 'DELETED', revision: rev + 1, resource: gone }]);
      assert.equal(await store.expireLease('retail', 'i2', 2000), undefined, 'idempotent');
      assert.equal(await store.currentRevision(), rev + 1);

      // An unchanged re-registration writes no revision but still revives the lease.
      const again = await store.put(inst('i1', 9000));
      assert.equal(again.type, 'UNCHANGED');
      assert.equal((await store.getLease('retail', 'i1'))?.expiresAt, 9000);
      // A modification extends it in the same transaction.
      await store.put(inst('i1', 9500, 2));
      assert.equal((await store.getLease('retail', 'i1'))?.expiresAt, 9500);

      await store.delete('Instance', 'retail', 'i3');
      assert.equal(await store.getLease('retail', 'i3'), undefined, 'deleting an Instance deletes its lease');
      assert.equal(await store.renewLease('retail', 'i3', 99_999), false);
    });

    // ---- concurrency ---------------------------------------------------------------------------------

    test('200 concurrent writes: a concurrent reader of changesSince sees 1..N once each, ascending, no gaps', async (f) => {
      const { store } = f;
      const other = f.peer ? await f.peer() : store;
      const N = 200;
      const seen: number[] = [];
      const reader = (async () => {
        let last = 0;
        const deadline = Date.now() + 60_000;
        while (last < N) {
          assert.ok(Date.now() < deadline, `reader stuck at revision ${last}`);
          const batch = await store.changesSince(last, 7);
          for (const c of batch) {
            assert.equal(c.revision, last + 1, `after ${last} the reader got ${c.revision}`);
            last = c.revision;
            seen.push(c.revision);
          }
          // Give the writers the event loop (SQLite answers synchronously).
          if (batch.length === 0) await new Promise((r) => setImmediate(r));
        }
      })();
      const writers = Array.from({ length: N }, async (_, i) => {
        await new Promise((r) => setImmediate(r));
        // 50 keys, 4 writes each, from both stores: creates race creates and updates race updates.
        const s = i % 2 === 0 ? store : other;
        return s.put(put('Config', 'load', `k${i % 50}`, { i }, { labels: { writer: String(i % 2) } }));
      });
      // Awaited together, so a failing reader is reported at once rather than as an unhandled rejection.
      const [, results] = await Promise.all([reader, Promise.all(writers)]);
      assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i + 1));
      assert.deepEqual(
        results.map((r) => r.resource.metadata.revision).sort((x, y) => x - y),
        seen,
        'every put got its own revision',
      );
      assert.equal(results.filter((r) => r.type === 'ADDED').length, 50);
      assert.equal(await store.currentRevision(), N);
      const listed = await store.list('Config', { namespace: 'load' });
      assert.equal(listed.items.length, 50);
      for (const r of listed.items) {
        const h = await store.history('Config', 'load', r.metadata.name);
        assert.deepEqual(h.map((e) => e.type), ['MODIFIED', 'MODIFIED', 'MODIFIED', 'ADDED']);
        assert.equal(r.metadata.createRevision, h[3]!.revision);
      }
    });

    test('racing creates with expectRevision 0 have exactly one winner; racing expiries delete once', async (f) => {
      const { store } = f;
      const other = f.peer ? await f.peer() : store;
      for (let round = 0; round < 10; round++) {
        const outcomes = await Promise.allSettled(
          [store, other, store, other].map((s, i) =>
            s.put(put('Instance', 'race', `r${round}`, { by: i }, { expectRevision: 0, leaseExpiresAt: 10 })),
          ),
        );
        const won = outcomes.filter((o) => o.status === 'fulfilled');
        assert.equal(won.length, 1, `round ${round}: one create wins`);
        for (const o of outcomes) if (o.status === 'rejected') assert.equal((o.reason as { code?: string }).code, 'already_exists');

        const expiries = await Promise.all([store, other, store, other].map((s) => s.expireLease('race', `r${round}`, 20)));
        assert.equal(expiries.filter((e) => e !== undefined).length, 1, `round ${round}: one expiry deletes`);
      }
      assert.equal((await store.list('Instance')).items.length, 0);
      assert.equal(await store.currentRevision(), 20);
    });

    // ---- audit ---------------------------------------------------------------------------------------

    test('audit: seq 1,2,3... chained from the genesis hash, head kept, read ascending, verifies', async ({ store }) => {
      assert.deepEqual(await store.auditHead(), { seq: 0, hash: AUDIT_GENESIS_HASH });
      assert.deepEqual(await store.readAudit(0, 10), []);
      assert.deepEqual(await verifyAudit(store), { ok: true, checked: 0 });
      const written: AuditEntry[] = [];
      for (let i = 1; i <= 7; i++) {
        const body = auditBody(i, i === 3 ? { outcome: 'denied', revisionBefore: null, revisionAfter: null, detail: 'no "update" on Config' } : {});
        const e = await store.appendAudit(body);
        assert.equal(e.seq, i);
        assert.equal(e.prevHash, i === 1 ? AUDIT_GENESIS_HASH : written[i - 2]!.hash);
        assert.equal(e.hash, auditHash(e.prevHash, e.seq, body));
        assert.deepEqual({ ...e, seq: undefined, prevHash: undefined, hash: undefined }, { ...body, seq: undefined, prevHash: undefined, hash: undefined });
        written.push(e);
      }
      assert.deepEqual(await store.auditHead(), { seq: 7, hash: written[6]!.hash });
      assert.deepEqual(await store.readAudit(0, 100), written);
      assert.deepEqual((await store.readAudit(2, 3)).map((e) => e.seq), [3, 4, 5]);
      assert.deepEqual(await store.readAudit(7, 10), []);
      assert.deepEqual(await verifyAudit(store), { ok: true, checked: 7 });
    });

    const tamper = (title: string, sql: string, reason: RegExp, seq: number): void =>
      test(`audit: ${title} is detected`, async ({ store, exec }) => {
        assert.ok(exec, 'the fixture must allow direct SQL');
        for (let i = 1; i <= 5; i++) await store.appendAudit(auditBody(i));
        assert.equal((await verifyAudit(store)).ok, true);
        await exec(sql);
        const result = await verifyAudit(store);
        assert.equal(result.ok, false);
        assert.equal(result.problem?.seq, seq);
        assert.match(result.problem?.reason ?? '', reason);
      });
    tamper('editing one field of an entry', `UPDATE audit SET actor = 'ServiceAccount:retail/mallory' WHERE seq = 2`, /altered/, 2);
    tamper('editing a nullable field', `UPDATE audit SET detail = 'harmless' WHERE seq = 4`, /altered/, 4);
    tamper('deleting a middle entry', 'DELETE FROM audit WHERE seq = 3', /missing/, 3);
    tamper('deleting the newest entry', 'DELETE FROM audit WHERE seq = 5', /removed/, 5);

    test('audit: concurrent appends (from two stores when shared) form one valid chain', async (f) => {
      const { store } = f;
      const other = f.peer ? await f.peer() : store;
      const N = 60;
      const entries = await Promise.all(Array.from({ length: N }, (_, i) => (i % 2 ? other : store).appendAudit(auditBody(i))));
      assert.deepEqual(
        entries.map((e) => e.seq).sort((a, b) => a - b),
        Array.from({ length: N }, (_, i) => i + 1),
      );
      assert.deepEqual(await verifyAudit(store), { ok: true, checked: N });
      assert.equal((await other.auditHead()).seq, N);
    });

    // ---- values --------------------------------------------------------------------------------------

    test('values round-trip as JSON, including a ~500 KB spec and awkward strings', async ({ store }) => {
      const spec = {
        big: 'x'.repeat(500 * 1024),
        unicode: 'héllo wörld 世界 😀 \u2028',
        control: 'nul\u0000tab\tnewline\n"quote"\\backslash',
        numbers: [0, -1, 1.5, -3e-7, 1e21, Number.MAX_SAFE_INTEGER],
        literals: [null, true, false],
        empty: { obj: {}, arr: [], str: '' },
        deep: { a: { b: { c: { d: [{ e: 'f' }] } } } },
      };
      const labels = { 'plinth.dev/service': 'orders', 'app.kubernetes.io/name': 'x' };
      const annotations = { 'note/text': 'multi\nline "quoted" ü' };
      const r = await store.put(put('Config', 'retail', 'big', spec, { labels, annotations }));
      assert.deepEqual(r.resource.spec, spec);
      const got = await store.get('Config', 'retail', 'big');
      assert.deepEqual(got, r.resource);
      assert.deepEqual(got?.metadata.labels, labels);
      assert.deepEqual(got?.metadata.annotations, annotations);
      assert.deepEqual(JSON.parse(JSON.stringify(got)), got);
      assert.deepEqual((await store.changesSince(0, 1))[0]?.resource, r.resource);
      assert.deepEqual((await store.list('Config', { selector: parseSelector('plinth.dev/service=orders') })).items, [r.resource]);
      assert.equal((await store.put(put('Config', 'retail', 'big', structuredClone(spec), { labels, annotations }))).type, 'UNCHANGED');
      const bigger = await store.put(put('Config', 'retail', 'big', { ...spec, big: 'y'.repeat(500 * 1024) }, { labels, annotations }));
      assert.equal(bigger.type, 'MODIFIED');
      assert.deepEqual((await store.history('Config', 'retail', 'big')).map((e) => (e.resource.spec as { big: string }).big[0]), ['y', 'x']);
    });

    test('callers get their own copies: mutating a result changes nothing stored', async ({ store }) => {
      const spec = { list: [1, 2], nested: { a: 1 } };
      const r = await store.put(put('Config', 'retail', 'a', spec, { labels: { team: 'orders' } }));
      spec.list.push(3);
      (r.resource.spec as { nested: { a: number } }).nested.a = 99;
      r.resource.metadata.labels.team = 'hacked';
      const got = await store.get('Config', 'retail', 'a');
      assert.deepEqual(got?.spec, { list: [1, 2], nested: { a: 1 } });
      assert.deepEqual(got?.metadata.labels, { team: 'orders' });
      got!.metadata.revision = 42;
      assert.equal((await store.get('Config', 'retail', 'a'))?.metadata.revision, 1);
    });

    // ---- persistence and sharing ---------------------------------------------------------------------

    test('everything survives closing and reopening the store', async (f) => {
      assert.ok(f.reopen, 'the fixture must support reopening');
      const { store } = f;
      await store.put(put('Config', 'retail', 'a', { v: 1 }, { labels: { team: 'orders' } }));
      await store.put(put('Config', 'retail', 'a', { v: 2 }, { labels: { team: 'orders' } }));
      await store.put(put('Instance', 'retail', 'i', {}, { leaseExpiresAt: 1234 }));
      await store.delete('Config', 'retail', 'a');
      await store.put(put('Config', 'retail', 'b', { v: 1 }));
      await store.compact(2);
      await store.appendAudit(auditBody(1));
      const head = await store.auditHead();
      const log = await store.changesSince(0, 100);
      const listed = await store.list('Config');
      await store.close();
      await store.close(); // closing twice is harmless

      const s2 = await f.reopen();
      assert.equal(await s2.currentRevision(), 5);
      assert.equal(await s2.compactedRevision(), 2);
      assert.deepEqual(await s2.changesSince(0, 100), log);
      assert.deepEqual((await s2.list('Config')).items, listed.items);
      assert.deepEqual(await s2.getLease('retail', 'i'), { namespace: 'retail', name: 'i', expiresAt: 1234 });
      assert.deepEqual(await s2.auditHead(), head);
      assert.equal((await s2.put(put('Config', 'retail', 'c', {}))).resource.metadata.revision, 6);
      assert.equal((await s2.appendAudit(auditBody(2))).seq, 2);
      assert.equal((await verifyAudit(s2)).ok, true);
    });

    test('a second live store on the same data sees writes and is notified of them', async (f) => {
      if (!f.peer) return; // one process owns an embedded store: there is no second one to notify
      const { store } = f;
      const other = await f.peer();
      const w = notified(store, 1);
      const r = await other.put(put('Config', 'retail', 'a', { v: 1 }));
      assert.equal(await w, 1);
      assert.deepEqual(await store.get('Config', 'retail', 'a'), r.resource);
      const w2 = notified(other, 2);
      await store.delete('Config', 'retail', 'a');
      assert.equal(await w2, 2);
      assert.equal(await other.get('Config', 'retail', 'a'), undefined);
    });
  });
}
