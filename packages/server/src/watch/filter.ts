import { getKind, matchesSelector, type ChangeType, type Selector } from '@plinth/core';
import type { StoredChange } from '../store/types.js';

export interface WatchFilter {
  /** Undefined = every public kind. */
  kinds: ReadonlySet<string> | undefined;
  namespace: string | undefined;
  selector: Selector;
  /** RBAC: may this watcher see changes of this kind in this namespace? (memoized by the caller) */
  allowed: (kind: string, namespace: string) => boolean;
}

/**
 * What one watcher sees of one change: undefined (nothing), or the change type for it. With a selector,
 * a resource that stops matching arrives as DELETED and one that starts matching as ADDED, so the
 * watcher's view always equals a list with the same selector.
 */
export function typeFor(f: WatchFilter, ch: StoredChange): ChangeType | undefined {
  const r = ch.resource;
  const def = getKind(r.kind);
  if (!def || def.internal) return undefined;
  if (f.kinds && !f.kinds.has(r.kind)) return undefined;
  if (f.namespace !== undefined && r.metadata.namespace !== f.namespace) return undefined;
  if (!f.allowed(r.kind, r.metadata.namespace)) return undefined;
  if (f.selector.requirements.length === 0) return ch.type;
  const now = matchesSelector(f.selector, r.metadata.labels);
  if (ch.type !== 'MODIFIED') return now ? ch.type : undefined;
  const before = matchesSelector(f.selector, ch.previousLabels ?? r.metadata.labels);
  if (now) return before ? 'MODIFIED' : 'ADDED';
  return before ? 'DELETED' : undefined;
}
