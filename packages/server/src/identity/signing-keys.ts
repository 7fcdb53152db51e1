import { createPrivateKey, createPublicKey, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto';
import { exportJWK, generateKeyPair } from 'jose';
import type { Logger } from 'pino';
import { PlinthError, type Resource, type WatchEvent } from '@plinth/core';
import type { Keyring } from '../secrets/keyring.js';
import type { Store } from '../store/types.js';
import { IDENTITY_NAMESPACE, PublicEcJwk, SIGNING_KEY_KIND, SigningKeySpec, signingKeyAad } from './kinds.js';

export interface PublicSigningJwk extends PublicEcJwk {
  kid: string;
  alg: 'ES256';
  use: 'sig';
}

export interface Jwks {
  keys: PublicSigningJwk[];
}

interface KeyEntry {
  kid: string;
  revision: number;
  /** Global order of creation: the newest live key signs, on every server alike (clocks may differ, revisions don't). */
  createRevision: number;
  spec: SigningKeySpec;
  publicKey: KeyObject;
  /** Epoch ms; undefined while the key is (or may become) the signer. */
  retireAt: number | undefined;
  /** Unsealed on first use: only the signer's private half is ever needed. */
  privateKey: KeyObject | undefined;
}

export interface SigningKeysOptions {
  store: Store;
  keyring: Keyring;
  log: Logger;
  tokenTtlSeconds: number;
  now: () => number;
}

const KID_RE = /^[0-9a-f]{16}$/;
/** After rotation an old key stays published this long beyond the last token it may have signed. */
export const RETIRE_GRACE_MS = 60_000;

/**
 * The server's ES256 signing keys, persisted as internal SigningKey resources so every server sharing the
 * store signs and verifies with the same set. Kept in memory; `apply` follows other servers' changes.
 */
export class SigningKeys {
  private keys = new Map<string, KeyEntry>();
  private fetching = new Map<string, Promise<KeyObject | undefined>>();
  private sweeping: Promise<void> | undefined;

  private constructor(private readonly o: SigningKeysOptions) {}

  /** Loads the stored keys, creating the first one when there is none. */
  static async start(o: SigningKeysOptions): Promise<{ keys: SigningKeys; revision: number }> {
    const keys = new SigningKeys(o);
    let revision = await keys.load();
    if (!keys.signerEntry()) {
      // Two servers starting on an empty database may both get here; both keys are kept and both
      // servers pick the same signer (highest createRevision), so nothing breaks.
      await keys.create();
      revision = await keys.load();
    }
    keys.sweepSoon();
    return { keys, revision };
  }

  /** Replaces the in-memory set with the stored one. Returns the store revision it reflects. */
  async load(): Promise<number> {
    const res = await this.o.store.list(SIGNING_KEY_KIND, { namespace: IDENTITY_NAMESPACE });
    const next = new Map<string, KeyEntry>();
    for (const r of res.items) {
      const e = this.entryOf(r);
      if (!e) continue;
      const prev = this.keys.get(e.kid);
      if (prev?.privateKey) e.privateKey = prev.privateKey;
      next.set(e.kid, e);
    }
    this.keys = next;
    return res.revision;
  }

  /** Follows a change from the watch hub (this server's writes and other servers'). */
  apply(ev: WatchEvent): void {
    const r = ev.resource;
    if (r.kind !== SIGNING_KEY_KIND || r.metadata.namespace !== IDENTITY_NAMESPACE) return;
    const cur = this.keys.get(r.metadata.name);
    if (cur && cur.revision >= ev.revision) return;
    if (ev.type === 'DELETED') {
      this.keys.delete(r.metadata.name);
      return;
    }
    this.upsert(r);
  }

  /** The key new tokens are signed with. */
  signer(): { kid: string; key: KeyObject } {
    const e = this.signerEntry();
    if (!e) throw new PlinthError('UNAVAILABLE', 'no token-signing key is available');
    if (!e.privateKey) {
      let jwk: unknown;
      try {
        jwk = JSON.parse(this.o.keyring.unseal(e.spec.privateKey, signingKeyAad(e.kid)).toString('utf8'));
      } catch (err) {
        throw new PlinthError('INTERNAL', `signing key ${e.kid} cannot be unsealed with this server's secret keys`, { cause: err });
      }
      e.privateKey = createPrivateKey({ key: jwk as JsonWebKey, format: 'jwk' });
    }
    return { kid: e.kid, key: e.privateKey };
  }

  /** Public key for a kid, if it is held and not retired. */
  verificationKey(kid: string): KeyObject | undefined {
    const e = this.keys.get(kid);
    if (!e) return undefined;
    if (e.retireAt !== undefined && e.retireAt <= this.o.now()) {
      this.sweepSoon();
      return undefined;
    }
    return e.publicKey;
  }

  /**
   * A kid this server does not hold: another server may have just rotated and its change not reached us yet.
   * One point read per unknown kid (concurrent requests share it); kids not shaped like ours are not looked up.
   */
  async fetch(kid: string): Promise<KeyObject | undefined> {
    if (!KID_RE.test(kid)) return undefined;
    const held = this.verificationKey(kid);
    if (held) return held;
    let p = this.fetching.get(kid);
    if (!p) {
      p = (async () => {
        try {
          const r = await this.o.store.get(SIGNING_KEY_KIND, IDENTITY_NAMESPACE, kid);
          if (r) this.upsert(r);
          return this.verificationKey(kid);
        } finally {
          this.fetching.delete(kid);
        }
      })();
      this.fetching.set(kid, p);
    }
    return p;
  }

  jwks(): Jwks {
    const now = this.o.now();
    const live = [...this.keys.values()].filter((e) => e.retireAt === undefined || e.retireAt > now);
    if (live.length < this.keys.size) this.sweepSoon();
    live.sort((a, b) => b.createRevision - a.createRevision);
    return { keys: live.map((e) => ({ ...e.spec.publicJwk, kid: e.kid, alg: 'ES256', use: 'sig' })) };
  }

  /**
   * A new key signs from now on. Older keys stay published until every token they signed has expired
   * (retireAfter = now + token TTL + grace), then they are deleted lazily.
   */
  async rotate(): Promise<{ kid: string; retired: string[] }> {
    await this.load();
    const fresh = await this.create();
    const retireAt = this.o.now() + this.o.tokenTtlSeconds * 1000 + RETIRE_GRACE_MS;
    const retired: string[] = [];
    for (const e of [...this.keys.values()]) {
      if (e.kid === fresh.kid || (e.retireAt !== undefined && e.retireAt <= retireAt)) continue;
      const spec: SigningKeySpec = { ...e.spec, retireAfter: new Date(retireAt).toISOString() };
      // Another server may have changed or removed it meanwhile (a concurrent rotation): its view wins.
      if (await this.replaceSpec(e, spec)) retired.push(e.kid);
      else this.o.log.warn({ kid: e.kid }, 'signing key changed during rotation; left as it is');
    }
    this.o.log.info({ kid: fresh.kid, retired }, 'token-signing key rotated');
    this.sweepSoon();
    return { kid: fresh.kid, retired };
  }

  /**
   * Re-seals private keys sealed with a Keyring key other than the primary one, so that a secret-key
   * rotation can retire old Keyring keys without losing the signing keys. Returns how many were re-sealed.
   */
  async reseal(): Promise<number> {
    await this.load();
    let n = 0;
    for (const e of [...this.keys.values()]) {
      if (e.spec.privateKey.kid === this.o.keyring.primary) continue;
      const aad = signingKeyAad(e.kid);
      const plain = this.o.keyring.unseal(e.spec.privateKey, aad);
      const spec: SigningKeySpec = { ...e.spec, privateKey: this.o.keyring.seal(plain, aad) };
      // Changed meanwhile: the caller runs reseal again until it returns 0.
      if (await this.replaceSpec(e, spec)) n++;
      else this.o.log.warn({ kid: e.kid }, 'signing key changed while re-sealing; run the re-seal again');
    }
    return n;
  }

  /** Held kids, newest first (for tests and diagnostics). */
  kids(): string[] {
    return [...this.keys.values()].sort((a, b) => b.createRevision - a.createRevision).map((e) => e.kid);
  }

  private signerEntry(): KeyEntry | undefined {
    let best: KeyEntry | undefined;
    let fallback: KeyEntry | undefined;
    const now = this.o.now();
    for (const e of this.keys.values()) {
      if (e.retireAt === undefined) {
        if (!best || e.createRevision > best.createRevision) best = e;
      } else if (e.retireAt > now && (!fallback || e.createRevision > fallback.createRevision)) {
        fallback = e;
      }
    }
    return best ?? fallback;
  }

  private async create(): Promise<KeyEntry> {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const pub = await exportJWK(publicKey);
    const priv = await exportJWK(privateKey);
    const kid = randomBytes(8).toString('hex');
    const spec: SigningKeySpec = {
      kid,
      alg: 'ES256',
      publicJwk: PublicEcJwk.parse({ kty: pub.kty, crv: pub.crv, x: pub.x, y: pub.y }),
      privateKey: this.o.keyring.seal(JSON.stringify(priv), signingKeyAad(kid)),
      createdAt: new Date(this.o.now()).toISOString(),
    };
    const res = await this.o.store.put({
      kind: SIGNING_KEY_KIND,
      namespace: IDENTITY_NAMESPACE,
      name: kid,
      labels: {},
      annotations: {},
      spec,
      expectRevision: 0,
    });
    const e = this.upsert(res.resource);
    if (!e) throw new PlinthError('INTERNAL', `signing key ${kid} was stored but cannot be read back`);
    this.o.log.info({ kid }, 'created a token-signing key');
    return e;
  }

  /** Writes a new spec for a held key if nobody changed it since we read it; false on a lost race. */
  private async replaceSpec(e: KeyEntry, spec: SigningKeySpec): Promise<boolean> {
    try {
      const res = await this.o.store.put({
        kind: SIGNING_KEY_KIND,
        namespace: IDENTITY_NAMESPACE,
        name: e.kid,
        labels: {},
        annotations: {},
        spec,
        expectRevision: e.revision,
      });
      this.upsert(res.resource);
      return true;
    } catch (err) {
      if (!isConflict(err)) throw err;
      return false;
    }
  }

  private upsert(r: Resource): KeyEntry | undefined {
    const e = this.entryOf(r);
    if (!e) return undefined;
    const prev = this.keys.get(e.kid);
    // A kid's key pair never changes (re-sealing only re-wraps it), so the unsealed half stays valid.
    if (prev?.privateKey) e.privateKey = prev.privateKey;
    this.keys.set(e.kid, e);
    return e;
  }

  private entryOf(r: Resource): KeyEntry | undefined {
    const parsed = SigningKeySpec.safeParse(r.spec);
    if (!parsed.success || parsed.data.kid !== r.metadata.name) {
      this.o.log.warn({ name: r.metadata.name }, 'ignoring a malformed SigningKey resource');
      return undefined;
    }
    const spec = parsed.data;
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey({ key: { ...spec.publicJwk }, format: 'jwk' });
    } catch {
      this.o.log.warn({ kid: spec.kid }, 'ignoring a SigningKey whose public key is invalid');
      return undefined;
    }
    return {
      kid: spec.kid,
      revision: r.metadata.revision,
      createRevision: r.metadata.createRevision,
      spec,
      publicKey,
      retireAt: spec.retireAfter === undefined ? undefined : Date.parse(spec.retireAfter),
      privateKey: undefined,
    };
  }

  /** Deletes keys past retireAfter from the store, in the background; one sweep at a time. */
  private sweepSoon(): void {
    if (this.sweeping) return;
    const now = this.o.now();
    const due = [...this.keys.values()].filter((e) => e.retireAt !== undefined && e.retireAt <= now);
    if (due.length === 0) return;
    this.sweeping = (async () => {
      try {
        for (const e of due) {
          try {
            await this.o.store.delete(SIGNING_KEY_KIND, IDENTITY_NAMESPACE, e.kid, { expectRevision: e.revision });
          } catch (err) {
            if (!isConflict(err)) throw err;
          }
          // Removed here too, so a server whose change feed lags (or a tool without one) still converges.
          if (this.keys.get(e.kid)?.revision === e.revision) this.keys.delete(e.kid);
          this.o.log.info({ kid: e.kid }, 'removed a retired token-signing key');
        }
      } catch (err) {
        this.o.log.warn({ err }, 'could not remove retired signing keys; will retry');
      } finally {
        this.sweeping = undefined;
      }
    })();
  }

  /** Resolves once a background sweep (if any) has finished: for orderly shutdown and tests. */
  async idle(): Promise<void> {
    await this.sweeping;
  }
}

function isConflict(err: unknown): boolean {
  return err instanceof PlinthError && (err.code === 'revision_conflict' || err.code === 'not_found' || err.code === 'already_exists');
}
