import type { Logger } from 'pino';
import { PlinthError, subjectId, type PolicyRule, type WatchEvent } from '@plinth/core';
import type { Keyring } from '../secrets/keyring.js';
import type { Store } from '../store/types.js';
import { AccountIndex } from './accounts.js';
import { Credentials, type CredentialInfo, type IssuedCredential } from './credentials.js';
import { CREDENTIAL_KIND, SIGNING_KEY_KIND } from './kinds.js';
import { Rbac } from './rbac.js';
import { SigningKeys, type Jwks } from './signing-keys.js';
import { Tokens, type IssuedToken } from './tokens.js';
import type { Identity, Principal } from './types.js';

/** Anything that reports every store change in revision order (the server's WatchHub). */
export interface ChangeFeed {
  onChange(fn: (ev: WatchEvent) => void): void;
}

export interface IdentityServiceDeps {
  store: Store;
  keyring: Keyring;
  /** JWT `iss`. */
  issuer: string;
  tokenTtlSeconds: number;
  log: Logger;
  /**
   * When given, the service subscribes itself before loading, so no change between its load and its
   * subscription is lost (the feed must already be started). Otherwise the caller forwards changes to
   * `onChange`.
   */
  changes?: ChangeFeed | undefined;
  /** Epoch ms; tests move time. */
  now?: (() => number) | undefined;
}

const WATCHED = new Set(['Role', 'RoleBinding', 'ServiceAccount', CREDENTIAL_KIND, SIGNING_KEY_KIND]);
const BEARER_RE = /^Bearer +(\S+) *$/i;

/**
 * Authentication (JWTs and credentials), RBAC and token-signing keys for one server. All state lives in the
 * shared store; this holds in-memory indexes of it, kept current by `onChange`, so that the per-request
 * work (verify, decide) reads no store.
 */
export class IdentityService implements Identity {
  private readonly accounts: AccountIndex;
  private readonly creds: Credentials;
  private readonly rbac: Rbac;
  private keys!: SigningKeys;
  private tokens!: Tokens;
  /** Per kind, the revision its initial load reflects: older events are already in the index. */
  private loadedAt = new Map<string, number>();
  private buffered: WatchEvent[] | undefined;

  private constructor(private readonly deps: IdentityServiceDeps & { now: () => number }) {
    this.accounts = new AccountIndex(deps.store);
    this.creds = new Credentials(deps.store, deps.now);
    this.rbac = new Rbac(deps.store, deps.log);
  }

  static async start(deps: IdentityServiceDeps): Promise<IdentityService> {
    if (!(Number.isInteger(deps.tokenTtlSeconds) && deps.tokenTtlSeconds > 0)) {
      throw new Error('tokenTtlSeconds must be a positive whole number');
    }
    const svc = new IdentityService({ ...deps, now: deps.now ?? Date.now });
    if (deps.changes) {
      svc.buffered = [];
      deps.changes.onChange((ev) => svc.onChange(ev));
    }
    const { keys, revision: keysAt } = await SigningKeys.start({
      store: deps.store,
      keyring: deps.keyring,
      log: deps.log,
      tokenTtlSeconds: deps.tokenTtlSeconds,
      now: svc.deps.now,
    });
    // Fail at start, not at the first login, when this server's secret keys cannot open the signing key
    // (e.g. servers sharing a database but not PLINTH_SECRET_KEYS).
    keys.signer();
    svc.keys = keys;
    svc.tokens = new Tokens({ keys, issuer: deps.issuer, ttlSeconds: deps.tokenTtlSeconds, now: svc.deps.now });
    const rbacAt = await svc.rbac.load();
    svc.loadedAt.set(SIGNING_KEY_KIND, keysAt);
    svc.loadedAt.set('Role', rbacAt.Role);
    svc.loadedAt.set('RoleBinding', rbacAt.RoleBinding);
    svc.loadedAt.set('ServiceAccount', await svc.accounts.load());
    svc.loadedAt.set(CREDENTIAL_KIND, await svc.creds.load());
    const pending = svc.buffered;
    svc.buffered = undefined;
    for (const ev of pending ?? []) svc.onChange(ev);
    return svc;
  }

  get tokenTtlSeconds(): number {
    return this.deps.tokenTtlSeconds;
  }

  /** Every change the server sees (its own writes and other servers'). Never throws. */
  onChange(ev: WatchEvent): void {
    if (this.buffered) {
      this.buffered.push(ev);
      return;
    }
    const kind = ev.resource.kind;
    if (!WATCHED.has(kind)) return;
    if (ev.revision <= (this.loadedAt.get(kind) ?? 0)) return;
    try {
      switch (kind) {
        case 'Role':
        case 'RoleBinding':
          this.rbac.apply(ev);
          break;
        case 'ServiceAccount':
          this.accounts.apply(ev);
          break;
        case CREDENTIAL_KIND:
          this.creds.apply(ev);
          break;
        case SIGNING_KEY_KIND:
          this.keys.apply(ev);
          if (ev.type === 'DELETED') this.tokens.forgetKey(ev.resource.metadata.name);
          break;
      }
    } catch (err) {
      this.deps.log.error({ err, kind, revision: ev.revision }, 'identity index could not apply a change');
    }
  }

  async authenticate(authorization: string | undefined): Promise<Principal> {
    if (authorization === undefined || authorization.trim() === '') {
      throw new PlinthError('UNAUTHENTICATED', 'missing Authorization header: send "Authorization: Bearer <token>"');
    }
    const m = BEARER_RE.exec(authorization);
    if (!m) throw new PlinthError('UNAUTHENTICATED', 'the Authorization header must be "Bearer <token>"');
    const token = m[1]!;
    if (token.startsWith('plinth_')) {
      const c = await this.creds.verify(token);
      const acct = await this.accounts.lookup(c.account.namespace, c.account.name);
      if (!acct || acct.createRevision !== c.accountCreateRevision) {
        throw new PlinthError('UNAUTHENTICATED', `the credential's ServiceAccount ${c.account.namespace}/${c.account.name} no longer exists`);
      }
      return principal(c.account.namespace, c.account.name, 'credential');
    }
    if (token.split('.').length === 3) {
      const t = await this.tokens.verify(token);
      const acct = await this.accounts.lookup(t.namespace, t.name);
      if (!acct || acct.createRevision !== t.accountRevision) {
        throw new PlinthError('UNAUTHENTICATED', `the token's ServiceAccount ${t.namespace}/${t.name} no longer exists`);
      }
      return principal(t.namespace, t.name, 'jwt');
    }
    throw new PlinthError('UNAUTHENTICATED', 'the bearer token is neither a Plinth JWT nor a plinth_ credential');
  }

  can(p: Principal, verb: string, kind: string, namespace: string): boolean {
    return this.rbac.can(p.subject, verb, kind, namespace);
  }

  assertCanGrant(p: Principal, rules: readonly PolicyRule[]): void {
    this.rbac.assertCanGrant(p.subject, rules);
  }

  /** Rules of a Role (undefined when absent), e.g. to check a RoleBinding's grant with assertCanGrant. */
  roleRules(namespace: string, name: string): readonly PolicyRule[] | undefined {
    return this.rbac.roleRules(namespace, name);
  }

  /** A short-lived JWT for the principal's ServiceAccount (which must still exist). */
  async issueToken(p: Pick<Principal, 'namespace' | 'name'>): Promise<IssuedToken> {
    const acct = await this.accounts.lookup(p.namespace, p.name);
    if (!acct) throw new PlinthError('UNAUTHENTICATED', `ServiceAccount ${p.namespace}/${p.name} no longer exists`);
    return this.tokens.issue(acct);
  }

  jwks(): Jwks {
    return this.keys.jwks();
  }

  rotateSigningKey(): Promise<{ kid: string; retired: string[] }> {
    return this.keys.rotate();
  }

  /** For a secret-key (Keyring) rotation: re-seal signing keys under the new primary. Returns how many. */
  resealSigningKeys(): Promise<number> {
    return this.keys.reseal();
  }

  /** NOT_FOUND when the ServiceAccount does not exist. */
  issueCredential(namespace: string, name: string, options: { ttlSeconds?: number | undefined } = {}): Promise<IssuedCredential> {
    return this.creds.issue(namespace, name, options);
  }

  /** NOT_FOUND when the account has no credential with that id. */
  revokeCredential(namespace: string, name: string, id: string): Promise<{ revisionBefore: number; revisionAfter: number }> {
    return this.creds.revoke(namespace, name, id);
  }

  listCredentials(namespace: string, name: string): CredentialInfo[] {
    return this.creds.list(namespace, name);
  }

  /** Waits for background work (retired-key cleanup) before the store closes. */
  async close(): Promise<void> {
    await this.keys.idle();
  }
}

function principal(namespace: string, name: string, via: Principal['via']): Principal {
  return { subject: subjectId({ namespace, name }), namespace, name, via };
}
