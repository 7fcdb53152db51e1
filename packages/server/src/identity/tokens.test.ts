import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, SignJWT } from 'jose';
import { PlinthError } from '@plinth/core';
import { Keyring } from '../secrets/keyring.js';
import { IDENTITY_NAMESPACE, SIGNING_KEY_KIND } from './kinds.js';
import { RETIRE_GRACE_MS, SigningKeys } from './signing-keys.js';
import { openTestStore, silentLog, TestClock, testKeyring, type TestStore } from './test-helpers.js';
import { CLOCK_TOLERANCE_SECONDS, TOKEN_AUDIENCE, Tokens } from './tokens.js';

const TTL = 900;
const ACCOUNT = { namespace: 'retail', name: 'orders', createRevision: 7 };

function unauthenticated(pattern: RegExp) {
  return (e: unknown) => e instanceof PlinthError && e.code === 'unauthenticated' && pattern.test(e.message);
}

void describe('tokens', () => {
  let ts: TestStore;
  let clock: TestClock;
  let keys: SigningKeys;
  let tokens: Tokens;
  const keyring = testKeyring();

  before(async () => {
    ts = await openTestStore();
    clock = new TestClock();
    ({ keys } = await SigningKeys.start({ store: ts.store, keyring, log: silentLog, tokenTtlSeconds: TTL, now: clock.now }));
    tokens = new Tokens({ keys, issuer: 'plinth-test', ttlSeconds: TTL, now: clock.now });
  });
  after(async () => {
    await keys.idle();
    await ts.close();
  });

  void it('creates one signing key on first start, private half sealed', async () => {
    const stored = await ts.store.list(SIGNING_KEY_KIND, { namespace: IDENTITY_NAMESPACE });
    assert.equal(stored.items.length, 1);
    const spec = stored.items[0]!.spec as { privateKey: { data: string }; publicJwk: Record<string, string> };
    assert.equal(spec.publicJwk.d, undefined);
    assert.doesNotMatch(JSON.stringify(spec), /"d":/, 'the private scalar is never stored in clear');
    // A second start on the same store reuses it.
    const again = await SigningKeys.start({ store: ts.store, keyring, log: silentLog, tokenTtlSeconds: TTL, now: clock.now });
    assert.deepEqual(again.keys.kids(), keys.kids());
  });

  void it('issues ES256 JWTs with the documented claims and verifies them', async () => {
    const issued = await tokens.issue(ACCOUNT);
    const header = decodeProtectedHeader(issued.token);
    assert.equal(header.alg, 'ES256');
    assert.equal(header.kid, keys.kids()[0]);
    const claims = decodeJwt(issued.token);
    assert.equal(claims.iss, 'plinth-test');
    assert.equal(claims.sub, 'ServiceAccount:retail/orders');
    assert.equal(claims.aud, TOKEN_AUDIENCE);
    assert.equal(claims.exp! - claims.iat!, TTL);
    assert.equal(typeof claims.jti, 'string');
    const v = await tokens.verify(issued.token);
    assert.deepEqual([v.namespace, v.name, v.accountRevision], ['retail', 'orders', 7]);
    const other = await tokens.issue(ACCOUNT);
    assert.notEqual(decodeJwt(other.token).jti, claims.jti);
  });

  void it('verifies offline from the published JWKS alone', async () => {
    const issued = await tokens.issue(ACCOUNT);
    const jwks = JSON.parse(JSON.stringify(keys.jwks())) as ReturnType<SigningKeys['jwks']>;
    for (const k of jwks.keys) {
      assert.equal(k.use, 'sig');
      assert.equal(k.alg, 'ES256');
      assert.equal((k as unknown as Record<string, unknown>).d, undefined);
    }
    const { payload } = await jwtVerify(issued.token, createLocalJWKSet(jwks), {
      issuer: 'plinth-test',
      audience: 'plinth',
      currentDate: new Date(clock.now()),
    });
    assert.equal(payload.sub, 'ServiceAccount:retail/orders');
  });

  void it('refuses expired tokens, allowing 30 s of clock skew', async () => {
    const c = new TestClock(clock.t);
    const t = new Tokens({ keys, issuer: 'plinth-test', ttlSeconds: 60, now: c.now });
    const issued = await t.issue(ACCOUNT);
    c.advance((60 + CLOCK_TOLERANCE_SECONDS - 2) * 1000);
    await t.verify(issued.token);
    c.advance(4000);
    await assert.rejects(t.verify(issued.token), unauthenticated(/expired/));
    // Also when the token was verified (and cached) before.
    const fresh = await t.issue(ACCOUNT);
    await t.verify(fresh.token);
    c.advance((60 + CLOCK_TOLERANCE_SECONDS + 1) * 1000);
    await assert.rejects(t.verify(fresh.token), unauthenticated(/expired/));
  });

  void it('refuses a wrong audience or issuer, even when properly signed', async () => {
    const { kid, key } = keys.signer();
    const iat = Math.floor(clock.now() / 1000);
    const base = () =>
      new SignJWT({ sa_rev: 7 })
        .setProtectedHeader({ alg: 'ES256', kid })
        .setSubject('ServiceAccount:retail/orders')
        .setIssuedAt(iat)
        .setExpirationTime(iat + 60)
        .setJti('x');
    const wrongAud = await base().setIssuer('plinth-test').setAudience('someone-else').sign(key);
    await assert.rejects(tokens.verify(wrongAud), unauthenticated(/audience/));
    const wrongIss = await base().setIssuer('elsewhere').setAudience('plinth').sign(key);
    await assert.rejects(tokens.verify(wrongIss), unauthenticated(/issuer/));
    const noAccountRevision = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid })
      .setIssuer('plinth-test')
      .setAudience('plinth')
      .setSubject('someone')
      .setIssuedAt(iat)
      .setExpirationTime(iat + 60)
      .setJti('y')
      .sign(key);
    await assert.rejects(tokens.verify(noAccountRevision), unauthenticated(/service account/));
  });

  void it('refuses tampered tokens, foreign algorithms and unknown keys', async () => {
    const issued = await tokens.issue(ACCOUNT);
    const [h, p, s] = issued.token.split('.') as [string, string, string];
    const flipped = s.slice(0, 10) + (s[10] === 'A' ? 'B' : 'A') + s.slice(11);
    await assert.rejects(tokens.verify(`${h}.${p}.${flipped}`), unauthenticated(/signature/));
    const claims = decodeJwt(issued.token);
    const forged = Buffer.from(JSON.stringify({ ...claims, sub: 'ServiceAccount:plinth-system/admin' })).toString('base64url');
    await assert.rejects(tokens.verify(`${h}.${forged}.${s}`), unauthenticated(/signature/));

    const none = Buffer.from(JSON.stringify({ alg: 'none', kid: keys.kids()[0] })).toString('base64url');
    await assert.rejects(tokens.verify(`${none}.${p}.`), unauthenticated(/algorithm/));
    const hs = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: keys.kids()[0]! }).sign(new Uint8Array(32));
    await assert.rejects(tokens.verify(hs), unauthenticated(/algorithm/));
    const unknownKid = Buffer.from(JSON.stringify({ alg: 'ES256', kid: '0123456789abcdef' })).toString('base64url');
    await assert.rejects(tokens.verify(`${unknownKid}.${p}.${s}`), unauthenticated(/unknown or retired key/));
    await assert.rejects(tokens.verify('not.a.jwt'), unauthenticated(/malformed/));
  });

  void it('rotation: new tokens use the new kid, old ones stay valid until retireAfter', async () => {
    const oldKid = keys.kids()[0]!;
    const before = await tokens.issue(ACCOUNT);
    const { kid: newKid, retired } = await keys.rotate();
    assert.notEqual(newKid, oldKid);
    assert.deepEqual(retired, [oldKid]);
    const afterRotation = await tokens.issue(ACCOUNT);
    assert.equal(decodeProtectedHeader(afterRotation.token).kid, newKid);
    assert.deepEqual(keys.jwks().keys.map((k) => k.kid), [newKid, oldKid], 'both published, newest first');
    await tokens.verify(before.token);

    const stored = await ts.store.get(SIGNING_KEY_KIND, IDENTITY_NAMESPACE, oldKid);
    const retireAfter = Date.parse((stored!.spec as { retireAfter: string }).retireAfter);
    assert.equal(retireAfter, clock.now() + TTL * 1000 + RETIRE_GRACE_MS);

    clock.advance(TTL * 1000 + RETIRE_GRACE_MS - 1000);
    assert.ok(keys.jwks().keys.some((k) => k.kid === oldKid), 'still published just before retireAfter');
    clock.advance(2000);
    assert.deepEqual(keys.jwks().keys.map((k) => k.kid), [newKid], 'gone after retireAfter');
    await keys.idle();
    assert.equal(await ts.store.get(SIGNING_KEY_KIND, IDENTITY_NAMESPACE, oldKid), undefined, 'deleted from the store lazily');
    await assert.rejects(tokens.verify(before.token), unauthenticated(/expired|unknown/));
    const later = await tokens.issue(ACCOUNT);
    assert.equal((await tokens.verify(later.token)).kid, newKid, 'the new key keeps signing and verifying');
  });

  void it('another server rotating: an unknown kid is read from the store once', async () => {
    const other = (await SigningKeys.start({ store: ts.store, keyring, log: silentLog, tokenTtlSeconds: TTL, now: clock.now })).keys;
    const otherTokens = new Tokens({ keys: other, issuer: 'plinth-test', ttlSeconds: TTL, now: clock.now });
    const { kid } = await other.rotate();
    const issued = await otherTokens.issue(ACCOUNT);
    assert.equal(decodeProtectedHeader(issued.token).kid, kid);
    assert.ok(!keys.kids().includes(kid));
    const v = await tokens.verify(issued.token);
    assert.equal(v.kid, kid);
    assert.ok(keys.kids().includes(kid));
    await other.idle();
  });

  void it('re-seals private keys under a new Keyring primary', async () => {
    const own = await openTestStore();
    try {
      const ring = Keyring.fromFile(join(own.dir, 'secret.keys'), true);
      const sk = (await SigningKeys.start({ store: own.store, keyring: ring, log: silentLog, tokenTtlSeconds: TTL, now: clock.now })).keys;
      await sk.rotate();
      ring.rotate();
      assert.equal(await sk.reseal(), 2);
      assert.equal(await sk.reseal(), 0);
      ring.retireOthers();
      const fresh = (await SigningKeys.start({ store: own.store, keyring: ring, log: silentLog, tokenTtlSeconds: TTL, now: clock.now })).keys;
      const t = new Tokens({ keys: fresh, issuer: 'i', ttlSeconds: TTL, now: clock.now });
      await t.verify((await t.issue(ACCOUNT)).token);
      await sk.idle();
    } finally {
      await own.close();
    }
  });
});
