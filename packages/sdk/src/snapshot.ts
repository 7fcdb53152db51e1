import { keyOf, type Resource, type WatchEvent } from '@plinth/core';

/**
 * The resources a client holds, indexed kind → namespace → name so that `get` is three map lookups and a
 * namespace-scoped `list` touches only that namespace.
 *
 * Resources are stored as received and handed out without copying: readers must treat them as immutable.
 */
export class Snapshot {
  private readonly byKind = new Map<string, Map<string, Map<string, Resource>>>();
  private count = 0;

  static of(items: Iterable<Resource>): Snapshot {
    const s = new Snapshot();
    for (const r of items) s.put(r);
    return s;
  }

  get size(): number {
    return this.count;
  }

  get(kind: string, namespace: string, name: string): Resource | undefined {
    return this.byKind.get(kind)?.get(namespace)?.get(name);
  }

  /** Resources of a kind, in one namespace or all; in no particular order. */
  list(kind: string, namespace?: string): Resource[] {
    const byNs = this.byKind.get(kind);
    if (!byNs) return [];
    if (namespace !== undefined) return [...(byNs.get(namespace)?.values() ?? [])];
    const out: Resource[] = [];
    for (const names of byNs.values()) for (const r of names.values()) out.push(r);
    return out;
  }

  *all(): IterableIterator<Resource> {
    for (const byNs of this.byKind.values()) for (const names of byNs.values()) yield* names.values();
  }

  /** Stores a resource (a list item), replacing whatever was held under its key. */
  put(r: Resource): void {
    let byNs = this.byKind.get(r.kind);
    if (!byNs) this.byKind.set(r.kind, (byNs = new Map()));
    let names = byNs.get(r.metadata.namespace);
    if (!names) byNs.set(r.metadata.namespace, (names = new Map()));
    if (!names.has(r.metadata.name)) this.count++;
    names.set(r.metadata.name, r);
  }

  private remove(kind: string, namespace: string, name: string): void {
    const byNs = this.byKind.get(kind);
    const names = byNs?.get(namespace);
    if (!byNs || !names?.delete(name)) return;
    this.count--;
    // Empty maps are dropped so a namespace that comes and goes does not leave garbage behind.
    if (names.size === 0) byNs.delete(namespace);
    if (byNs.size === 0) this.byKind.delete(kind);
  }

  /**
   * Applies one watch event idempotently: an event no newer than the held version (revision ≤ the held
   * resource's metadata.revision) is ignored, and so is a DELETED for something not held. That makes replays
   * after a resume or overlapping list/watch windows harmless.
   *
   * Returns the change as this snapshot saw it (ADDED when it was not held before, MODIFIED when it was,
   * whatever the server called it), or undefined when nothing changed.
   */
  apply(ev: WatchEvent): WatchEvent | undefined {
    const { kind, metadata } = ev.resource;
    const held = this.get(kind, metadata.namespace, metadata.name);
    if (held && ev.revision <= held.metadata.revision) return undefined;
    if (ev.type === 'DELETED') {
      if (!held) return undefined;
      this.remove(kind, metadata.namespace, metadata.name);
      return ev;
    }
    this.put(ev.resource);
    const type = held ? 'MODIFIED' : 'ADDED';
    return type === ev.type ? ev : { type, revision: ev.revision, resource: ev.resource };
  }

  /**
   * The changes that turn this snapshot into `next`, for replacing one with the other in a single step
   * (after a relist). A resource counts as changed when its revision differs; a deletion is reported at
   * `revision` (the one `next` is current at), since the real delete revision is no longer known.
   */
  diff(next: Snapshot, revision: number): WatchEvent[] {
    const changes: WatchEvent[] = [];
    for (const r of next.all()) {
      const held = this.get(r.kind, r.metadata.namespace, r.metadata.name);
      if (!held) changes.push({ type: 'ADDED', revision: r.metadata.revision, resource: r });
      else if (held.metadata.revision !== r.metadata.revision) changes.push({ type: 'MODIFIED', revision: r.metadata.revision, resource: r });
    }
    // Revision order, as a watch would have delivered them; ties (same write) by key, so the order is stable.
    changes.sort((a, b) => a.revision - b.revision || keyOf(a.resource).localeCompare(keyOf(b.resource)));
    for (const r of this.all()) {
      if (!next.get(r.kind, r.metadata.namespace, r.metadata.name)) changes.push({ type: 'DELETED', revision, resource: r });
    }
    return changes;
  }
}
