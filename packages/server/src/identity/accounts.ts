import type { Resource, WatchEvent } from '@plinth/core';
import type { Store } from '../store/types.js';

export interface AccountInfo {
  namespace: string;
  name: string;
  /** Tells incarnations apart: a ServiceAccount deleted and created again is a new identity. */
  createRevision: number;
  revision: number;
}

/**
 * Which ServiceAccounts exist, so every authentication can refuse a deleted account's tokens and
 * credentials without a store read.
 */
export class AccountIndex {
  private accounts = new Map<string, AccountInfo>();
  /** Bumped by every deletion, so a store read that raced one is not cached as if the account still existed. */
  private deletions = 0;

  constructor(private readonly store: Store) {}

  async load(): Promise<number> {
    const res = await this.store.list('ServiceAccount');
    const next = new Map<string, AccountInfo>();
    for (const r of res.items) next.set(key(r.metadata.namespace, r.metadata.name), infoOf(r));
    this.accounts = next;
    return res.revision;
  }

  apply(ev: WatchEvent): void {
    const r = ev.resource;
    if (r.kind !== 'ServiceAccount') return;
    const k = key(r.metadata.namespace, r.metadata.name);
    const cur = this.accounts.get(k);
    if (cur && cur.revision >= ev.revision) return;
    if (ev.type === 'DELETED') {
      this.accounts.delete(k);
      this.deletions++;
    } else this.accounts.set(k, infoOf(r));
  }

  /**
   * Falls back to one store read when the index does not know the account: it may have been created on
   * another server a moment ago, before its change reached this one.
   */
  async lookup(namespace: string, name: string): Promise<AccountInfo | undefined> {
    const k = key(namespace, name);
    const held = this.accounts.get(k);
    if (held) return held;
    const deletions = this.deletions;
    const r = await this.store.get('ServiceAccount', namespace, name);
    if (!r) return undefined;
    const info = infoOf(r);
    const now = this.accounts.get(k);
    if (deletions === this.deletions && (!now || now.revision < info.revision)) this.accounts.set(k, info);
    return info;
  }
}

function key(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

function infoOf(r: Resource): AccountInfo {
  return {
    namespace: r.metadata.namespace,
    name: r.metadata.name,
    createRevision: r.metadata.createRevision,
    revision: r.metadata.revision,
  };
}
