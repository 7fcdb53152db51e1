import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PlinthError, type WatchEvent } from '@plinth/core';
import { CREDENTIAL_KIND, IDENTITY_NAMESPACE } from './kinds.js';
import { IdentityService } from './identity-service.js';
import { hashSecret, parseCredential } from './credentials.js';
import { forwardChanges, openTestStore, putResource, silentLog, TestClock, testKeyring, type TestStore } from './test-helpers.js';

function rejectsWith(code: string, pattern?: RegExp) {
  return (e: unknown) => e instanceof PlinthError && e.code === code && (!pattern || pattern.test(e.message));
}

void describe('IdentityService', () => {
  let ts: TestStore;
  let clock: TestClock;
  const keyring = testKeyring();
  const started: IdentityService[] = [];
  let seen = 0;

  async function server(): Promise<IdentityService> {
    const s = await IdentityService.start({ store: ts.store, keyring, issuer: 'plinth', tokenTtlSeconds: 900, log: silentLog, now: clock.now });
    started.push(s);
    return s;
  }
  /** What the watch hub does: every committed change to every server. */
  async function sync(): Promise<void> {
    const events: WatchEvent[] = [];
    seen = await forwardChanges(ts.store, seen, (ev) => events.push(ev));
    for (const s of started) for (const ev of events) s.onChange(ev);
  }

  before(async () => {
    ts = await openTestStore();
    clock = new TestClock();
    await putResource(ts.store, 'ServiceAccount', 'retail', 'orders', {});
    await putResource(ts.store, 'ServiceAccount', 'retail', 'reader', {});
    seen = await ts.store.currentRevision();
  });
  after(async () => {
    for (const s of started) await s.close();
    await ts.close();
  });

  void it('refuses missing, malformed and unknown bearer tokens with a clear reason', async () => {
    const id = await server();
    await assert.rejects(id.authenticate(undefined), rejectsWith('unauthenticated', /missing Authorization/));
    await assert.rejects(id.authenticate('Basic abc'), rejectsWith('unauthenticated', /Bearer/));
    await assert.rejects(id.authenticate('Bearer'), rejectsWith('unauthenticated', /Bearer/));
    await assert.rejects(id.authenticate('Bearer hello'), rejectsWith('unauthenticated', /neither/));
    await assert.rejects(id.authenticate('Bearer plinth_nope'), rejectsWith('unauthenticated', /malformed credential/));
    await assert.rejects(id.authenticate('Bearer a.b.c'), rejectsWith('unauthenticated', /malformed/));
  });

  void it('issues credentials only for existing ServiceAccounts and stores only a hash', async () => {
    const id = started[0]!;
    await assert.rejects(id.issueCredential('retail', 'ghost'), rejectsWith('not_found'));
    const c = await id.issueCredential('retail', 'orders');
    assert.match(c.token, /^plinth_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    const parsed = parseCredential(c.token)!;
    assert.equal(parsed.id, c.id);
    const stored = await ts.store.get(CREDENTIAL_KIND, IDENTITY_NAMESPACE, c.id);
    const text = JSON.stringify(stored);
    assert.ok(!text.includes(parsed.secret), 'the secret itself is never stored');
    assert.ok(text.includes(hashSecret(parsed.secret)));
    assert.deepEqual(id.listCredentials('retail', 'orders').map((x) => x.id), [c.id]);
  });

  void it('authenticates a credential and exchanges it for a JWT', async () => {
    const id = started[0]!;
    const c = await id.issueCredential('retail', 'orders');
    const p = await id.authenticate(`Bearer ${c.token}`);
    assert.deepEqual(p, { subject: 'ServiceAccount:retail/orders', namespace: 'retail', name: 'orders', via: 'credential' });
    const jwt = await id.issueToken(p);
    assert.equal(jwt.expiresIn, 900);
    const viaJwt = await id.authenticate(`bearer ${jwt.token}`);
    assert.deepEqual(viaJwt, { ...p, via: 'jwt' });
  });

  void it('refuses a wrong secret, a revoked credential and an expired one', async () => {
    const id = started[0]!;
    const c = await id.issueCredential('retail', 'orders');
    const wrong = c.token.slice(0, -4) + (c.token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    await assert.rejects(id.authenticate(`Bearer ${wrong}`), rejectsWith('unauthenticated', /does not match/));
    await assert.rejects(id.revokeCredential('retail', 'reader', c.id), rejectsWith('not_found'), 'not that account’s credential');
    await assert.rejects(id.revokeCredential('retail', 'orders', 'zzz'), rejectsWith('not_found'));
    await id.authenticate(`Bearer ${c.token}`);
    const revs = await id.revokeCredential('retail', 'orders', c.id);
    assert.ok(revs.revisionAfter > revs.revisionBefore);
    await assert.rejects(id.authenticate(`Bearer ${c.token}`), rejectsWith('unauthenticated', /unknown or revoked/));
    await assert.rejects(id.revokeCredential('retail', 'orders', c.id), rejectsWith('not_found'));

    const short = await id.issueCredential('retail', 'orders', { ttlSeconds: 60 });
    await id.authenticate(`Bearer ${short.token}`);
    clock.advance(61_000);
    await assert.rejects(id.authenticate(`Bearer ${short.token}`), rejectsWith('unauthenticated', /expired/));
  });

  void it('another server learns credentials, revocations and keys through changes (and the store before they arrive)', async () => {
    const a = started[0]!;
    await sync();
    const b = await server();
    const c = await a.issueCredential('retail', 'orders');
    // Before B has seen the change: read from the store once.
    const p = await b.authenticate(`Bearer ${c.token}`);
    assert.equal(p.via, 'credential');
    await a.revokeCredential('retail', 'orders', c.id);
    await sync();
    await assert.rejects(b.authenticate(`Bearer ${c.token}`), rejectsWith('unauthenticated', /unknown or revoked/));

    const jwtFromA = await a.issueToken(p);
    await b.authenticate(`Bearer ${jwtFromA.token}`);
    const { kid } = await b.rotateSigningKey();
    await sync();
    const jwtAfter = await a.issueToken(p);
    const header = JSON.parse(Buffer.from(jwtAfter.token.split('.')[0]!, 'base64url').toString()) as { kid: string };
    assert.equal(header.kid, kid, 'A signs with the key B rotated to');
    await b.authenticate(`Bearer ${jwtAfter.token}`);
    await a.authenticate(`Bearer ${jwtFromA.token}`);
    assert.deepEqual(a.jwks(), b.jwks());
  });

  void it('refuses tokens and credentials of a deleted ServiceAccount, also after it is created again', async () => {
    const a = started[0]!;
    await putResource(ts.store, 'ServiceAccount', 'retail', 'temp', {});
    await sync();
    const c = await a.issueCredential('retail', 'temp');
    const p = await a.authenticate(`Bearer ${c.token}`);
    const jwt = await a.issueToken(p);
    await ts.store.delete('ServiceAccount', 'retail', 'temp');
    await sync();
    await assert.rejects(a.authenticate(`Bearer ${c.token}`), rejectsWith('unauthenticated', /no longer exists/));
    await assert.rejects(a.authenticate(`Bearer ${jwt.token}`), rejectsWith('unauthenticated', /no longer exists/));
    await assert.rejects(a.issueToken(p), rejectsWith('unauthenticated'));

    await putResource(ts.store, 'ServiceAccount', 'retail', 'temp', {});
    await sync();
    await assert.rejects(a.authenticate(`Bearer ${c.token}`), rejectsWith('unauthenticated', /no longer exists/));
    await assert.rejects(a.authenticate(`Bearer ${jwt.token}`), rejectsWith('unauthenticated', /no longer exists/));
    const fresh = await a.issueCredential('retail', 'temp');
    await a.authenticate(`Bearer ${fresh.token}`);
  });

  void it('follows Role and RoleBinding changes (memo invalidated)', async () => {
    const a = started[0]!;
    const reader = { subject: 'ServiceAccount:retail/reader', namespace: 'retail', name: 'reader', via: 'jwt' as const };
    assert.equal(a.can(reader, 'get', 'Config', 'retail'), false);
    await putResource(ts.store, 'Role', 'retail', 'config-reader', { rules: [{ verbs: ['get', 'list'], kinds: ['Config'], namespaces: ['retail'] }] });
    await putResource(ts.store, 'RoleBinding', 'retail', 'reader', { role: 'config-reader', subjects: [{ kind: 'ServiceAccount', namespace: 'retail', name: 'reader' }] });
    await sync();
    assert.equal(a.can(reader, 'get', 'Config', 'retail'), true);
    assert.deepEqual(a.roleRules('retail', 'config-reader')?.[0]?.verbs, ['get', 'list']);
    await putResource(ts.store, 'Role', 'retail', 'config-reader', { rules: [{ verbs: ['list'], kinds: ['Config'], namespaces: ['retail'] }] });
    await sync();
    assert.equal(a.can(reader, 'get', 'Config', 'retail'), false);
    assert.equal(a.can(reader, 'list', 'Config', 'retail'), true);
    assert.throws(() => a.assertCanGrant(reader, [{ verbs: ['get'], kinds: ['Config'], namespaces: ['retail'] }]), rejectsWith('escalation_denied'));
    // A server started now loads the same state from the store.
    const c = await server();
    assert.equal(c.can(reader, 'list', 'Config', 'retail'), true);
    assert.equal(c.can(reader, 'get', 'Config', 'retail'), false);
  });

  void it('with a change feed, subscribes before loading: a change made during the load is not lost', async () => {
    await sync();
    const listeners: ((ev: WatchEvent) => void)[] = [];
    const feed = { onChange: (fn: (ev: WatchEvent) => void) => void listeners.push(fn) };
    // Another server writes a Role and its binding after this one has listed Roles but before start() returns.
    const store = new Proxy(ts.store, {
      get(target, prop, receiver) {
        if (prop !== 'list') return Reflect.get(target, prop, receiver) as unknown;
        return async (kind: string, opts?: object) => {
          const res = await target.list(kind, opts);
          if (kind === CREDENTIAL_KIND) {
            await putResource(target, 'ServiceAccount', 'retail', 'late', {});
            await putResource(target, 'Role', 'retail', 'late', { rules: [{ verbs: ['watch'], kinds: ['Instance'], namespaces: ['retail'] }] });
            await putResource(target, 'RoleBinding', 'retail', 'late', { role: 'late', subjects: [{ kind: 'ServiceAccount', namespace: 'retail', name: 'late' }] });
            seen = await forwardChanges(target, seen, (ev) => {
              for (const fn of listeners) fn(ev);
              for (const s of started) s.onChange(ev);
            });
          }
          return res;
        };
      },
    });
    const d = await IdentityService.start({ store, keyring, issuer: 'plinth', tokenTtlSeconds: 900, log: silentLog, now: clock.now, changes: feed });
    started.push(d);
    assert.equal(listeners.length, 1);
    const late = { subject: 'ServiceAccount:retail/late', namespace: 'retail', name: 'late', via: 'jwt' as const };
    assert.equal(d.can(late, 'watch', 'Instance', 'retail'), true);
  });
});
