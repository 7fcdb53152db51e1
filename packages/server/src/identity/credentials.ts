import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { PlinthError, type Resource, type WatchEvent } from '@plinth/core';
import type { Store } from '../store/types.js';
import { CREDENTIAL_KIND, CredentialSpec, IDENTITY_NAMESPACE } from './kinds.js';

export const CREDENTIAL_PREFIX = 'plinth_';
const ID_RE = /^[0-9a-f]{12}$/;
/** 32 bytes, base64url without padding. */
const SECRET_RE = /^[A-Za-z0-9_-]{43}$/;

export interface IssuedCredential {
  id: string;
  /** `plinth_<id>_<secret>`: shown once, never stored. */
  token: string;
  account: { namespace: string; name: string };
  createdAt: string;
  expiresAt: string | undefined;
  /** Store revision of the Credential resource (for the audit log). */
  revision: number;
}

export interface CredentialInfo {
  id: string;
  createdAt: string;
  expiresAt: string | undefined;
}

export interface VerifiedCredential {
  id: string;
  account: { namespace: string; name: string };
  accountCreateRevision: number;
}

interface Entry {
  id: string;
  spec: CredentialSpec;
  hash: Buffer;
  expiresAt: number | undefined;
  revision: number;
}

export function formatCredential(id: string, secret: string): string {
  return `${CREDENTIAL_PREFIX}${id}_${secret}`;
}

/** Splits a credential into id and secret; undefined when it is not shaped like one. */
export function parseCredential(token: string): { id: string; secret: string } | undefined {
  if (!token.startsWith(CREDENTIAL_PREFIX)) return undefined;
  const rest = token.slice(CREDENTIAL_PREFIX.length);
  // The secret's alphabet includes '_', so split at the first '_' only; the id has a fixed shape.
  const sep = rest.indexOf('_');
  if (sep < 0) return undefined;
  const id = rest.slice(0, sep);
  const secret = rest.slice(sep + 1);
  if (!ID_RE.test(id) || !SECRET_RE.test(secret)) return undefined;
  return { id, secret };
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/**
 * Creates a credential for an existing ServiceAccount. A standalone function because bootstrap mints the
 * admin's credential before any IdentityService runs.
 */
export async function mintCredential(
  store: Store,
  account: { namespace: string; name: string },
  options: { now: number; ttlSeconds?: number | undefined },
): Promise<{ credential: IssuedCredential; resource: Resource }> {
  const sa = await store.get('ServiceAccount', account.namespace, account.name);
  if (!sa) throw new PlinthError('NOT_FOUND', `ServiceAccount ${account.namespace}/${account.name} does not exist`);
  if (options.ttlSeconds !== undefined && !(Number.isInteger(options.ttlSeconds) && options.ttlSeconds > 0)) {
    throw new PlinthError('BAD_REQUEST', 'credential lifetime must be a positive whole number of seconds');
  }
  const createdAt = new Date(options.now).toISOString();
  const expiresAt = options.ttlSeconds === undefined ? undefined : new Date(options.now + options.ttlSeconds * 1000).toISOString();
  // 48 random bits of id: a collision is unlikely but possible, and then simply retried.
  for (let attempt = 0; ; attempt++) {
    const id = randomBytes(6).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const spec: CredentialSpec = {
      account: { namespace: account.namespace, name: account.name },
      accountCreateRevision: sa.metadata.createRevision,
      secretHash: hashSecret(secret),
      createdAt,
      ...(expiresAt === undefined ? {} : { expiresAt }),
    };
    try {
      const res = await store.put({
        kind: CREDENTIAL_KIND,
        namespace: IDENTITY_NAMESPACE,
        name: id,
        labels: {},
        annotations: {},
        spec,
        expectRevision: 0,
      });
      const credential: IssuedCredential = {
        id,
        token: formatCredential(id, secret),
        account: spec.account,
        createdAt,
        expiresAt,
        revision: res.resource.metadata.revision,
      };
      return { credential, resource: res.resource };
    } catch (err) {
      if (attempt < 3 && err instanceof PlinthError && err.code === 'already_exists') continue;
      throw err;
    }
  }
}

/**
 * Credentials by id, in memory (the store holds only hashes; the cache follows every server's changes),
 * so that verifying one is a map lookup, a hash and a constant-time compare.
 */
export class Credentials {
  private byId = new Map<string, Entry>();
  /** See AccountIndex.deletions: a read that raced a revocation must not resurrect the credential. */
  private deletions = 0;

  constructor(
    private readonly store: Store,
    private readonly now: () => number,
  ) {}

  async load(): Promise<number> {
    const res = await this.store.list(CREDENTIAL_KIND, { namespace: IDENTITY_NAMESPACE });
    const next = new Map<string, Entry>();
    for (const r of res.items) {
      const e = entryOf(r);
      if (e) next.set(e.id, e);
    }
    this.byId = next;
    return res.revision;
  }

  apply(ev: WatchEvent): void {
    const r = ev.resource;
    if (r.kind !== CREDENTIAL_KIND || r.metadata.namespace !== IDENTITY_NAMESPACE) return;
    const cur = this.byId.get(r.metadata.name);
    if (cur && cur.revision >= ev.revision) return;
    if (ev.type === 'DELETED') {
      this.byId.delete(r.metadata.name);
      this.deletions++;
      return;
    }
    const e = entryOf(r);
    if (e) this.byId.set(e.id, e);
  }

  async issue(namespace: string, name: string, options: { ttlSeconds?: number | undefined } = {}): Promise<IssuedCredential> {
    const { credential, resource } = await mintCredential(this.store, { namespace, name }, { now: this.now(), ttlSeconds: options.ttlSeconds });
    this.upsert(resource);
    return credential;
  }

  /** Revokes one credential of the account. NOT_FOUND when the account holds no credential with that id. */
  async revoke(namespace: string, name: string, id: string): Promise<{ revisionBefore: number; revisionAfter: number }> {
    const r = ID_RE.test(id) ? await this.store.get(CREDENTIAL_KIND, IDENTITY_NAMESPACE, id) : undefined;
    const e = r ? entryOf(r) : undefined;
    if (!r || !e || e.spec.account.namespace !== namespace || e.spec.account.name !== name) {
      throw new PlinthError('NOT_FOUND', `ServiceAccount ${namespace}/${name} has no credential ${id}`);
    }
    const gone = await this.store.delete(CREDENTIAL_KIND, IDENTITY_NAMESPACE, id, { expectRevision: r.metadata.revision });
    this.byId.delete(id);
    this.deletions++;
    if (!gone) throw new PlinthError('NOT_FOUND', `ServiceAccount ${namespace}/${name} has no credential ${id}`);
    return { revisionBefore: r.metadata.revision, revisionAfter: gone.metadata.revision };
  }

  /** The account's credentials (ids and dates only). */
  list(namespace: string, name: string): CredentialInfo[] {
    const out: CredentialInfo[] = [];
    for (const e of this.byId.values()) {
      if (e.spec.account.namespace === namespace && e.spec.account.name === name) {
        out.push({ id: e.id, createdAt: e.spec.createdAt, expiresAt: e.spec.expiresAt });
      }
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  /** Throws UNAUTHENTICATED. The account's existence is checked by the caller. */
  async verify(token: string): Promise<VerifiedCredential> {
    const parsed = parseCredential(token);
    if (!parsed) throw new PlinthError('UNAUTHENTICATED', 'malformed credential: expected plinth_<id>_<secret>');
    let e = this.byId.get(parsed.id);
    if (!e) e = await this.fetch(parsed.id);
    if (!e) throw new PlinthError('UNAUTHENTICATED', 'unknown or revoked credential');
    const given = createHash('sha256').update(parsed.secret, 'utf8').digest();
    if (!timingSafeEqual(given, e.hash)) throw new PlinthError('UNAUTHENTICATED', 'credential secret does not match');
    if (e.expiresAt !== undefined && e.expiresAt <= this.now()) throw new PlinthError('UNAUTHENTICATED', 'credential expired');
    return { id: e.id, account: e.spec.account, accountCreateRevision: e.spec.accountCreateRevision };
  }

  /** A credential issued on another server a moment ago may not have reached this cache yet. */
  private async fetch(id: string): Promise<Entry | undefined> {
    const deletions = this.deletions;
    const r = await this.store.get(CREDENTIAL_KIND, IDENTITY_NAMESPACE, id);
    if (!r) return undefined;
    const e = entryOf(r);
    if (!e) return undefined;
    if (deletions === this.deletions) this.upsert(r);
    return e;
  }

  private upsert(r: Resource): void {
    const e = entryOf(r);
    if (!e) return;
    const cur = this.byId.get(e.id);
    if (!cur || cur.revision < e.revision) this.byId.set(e.id, e);
  }
}

function entryOf(r: Resource): Entry | undefined {
  const parsed = CredentialSpec.safeParse(r.spec);
  if (!parsed.success) return undefined;
  return {
    id: r.metadata.name,
    spec: parsed.data,
    hash: Buffer.from(parsed.data.secretHash, 'hex'),
    expiresAt: parsed.data.expiresAt === undefined ? undefined : Date.parse(parsed.data.expiresAt),
    revision: r.metadata.revision,
  };
}
