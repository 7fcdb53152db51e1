// Logic both backends share, so that the SQL files only differ where the databases do.
import {
  API_VERSION,
  PlinthError,
  canonicalJson,
  matchesSelector,
  type AuditEntry,
  type AuditEntryBody,
  type ChangeType,
  type Resource,
  type Selector,
  type WatchEvent,
} from '@plinth/core';
import type { PutRequest, StoredChange } from './types.js';

/** Bumped when the table layout changes; a store refuses data written by a newer layout. */
export const SCHEMA_VERSION = 1;

/** Where a store reports trouble it must survive (lost connections, throwing listeners). */
export type StoreErrorHandler = (message: string, err: unknown) => void;

export const defaultErrorHandler: StoreErrorHandler = (message, err) => {
  process.emitWarning(`${message}: ${err instanceof Error ? err.message : String(err)}`, { code: 'PLINTH_STORE' });
};

/** What decides UNCHANGED: only what the user wrote, never what the store stamps (revisions, times). */
export function contentOf(labels: unknown, annotations: unknown, spec: unknown): string {
  return canonicalJson({ labels, annotations, spec });
}

export function describeKey(kind: string, namespace: string, name: string): string {
  return `${kind} ${namespace}/${name}`;
}

/** Optimistic concurrency, shared by put and delete: `current` is the stored revision, undefined when absent. */
export function checkExpectation(
  key: { kind: string; namespace: string; name: string },
  expect: number | undefined,
  current: number | undefined,
): void {
  if (expect === undefined) return;
  const what = describeKey(key.kind, key.namespace, key.name);
  if (expect === 0) {
    if (current !== undefined) throw new PlinthError('ALREADY_EXISTS', `${what} already exists (revision ${current})`);
    return;
  }
  if (current === undefined) throw new PlinthError('REVISION_CONFLICT', `${what} does not exist (expected revision ${expect})`);
  if (current !== expect) throw new PlinthError('REVISION_CONFLICT', `${what} is at revision ${current}, not ${expect}`);
}

/** A request's spec as stored: a missing spec is an empty one, so it compares equal to what is read back. */
export function specOf(req: PutRequest): unknown {
  return req.spec === undefined ? {} : req.spec;
}

/** The next version of a resource; createRevision and createdAt survive modifications, not deletions. */
export function nextVersion(req: PutRequest, revision: number, current: Resource | undefined, now: string): Resource {
  return {
    apiVersion: API_VERSION,
    kind: req.kind,
    metadata: {
      namespace: req.namespace,
      name: req.name,
      labels: req.labels,
      annotations: req.annotations,
      revision,
      createRevision: current?.metadata.createRevision ?? revision,
      createdAt: current?.metadata.createdAt ?? now,
      updatedAt: now,
    },
    spec: specOf(req) as Record<string, unknown>,
  };
}

/** A deleted resource is reported in its last state, stamped with the delete's revision. */
export function deletedVersion(current: Resource, revision: number): Resource {
  return { ...current, metadata: { ...current.metadata, revision } };
}

export function parseResource(doc: string): Resource {
  return JSON.parse(doc) as Resource;
}

export function toEvent(revision: number, type: string, doc: string): WatchEvent {
  return { type: type as ChangeType, revision, resource: parseResource(doc) };
}

export function toStoredChange(revision: number, type: string, doc: string, previousLabels: string | null): StoredChange {
  const ch: StoredChange = toEvent(revision, type, doc);
  if (previousLabels !== null) ch.previousLabels = JSON.parse(previousLabels) as Record<string, string>;
  return ch;
}

/**
 * Equality requirements of a selector, which both backends push down into SQL as a prefilter; the
 * full selector is still checked in JS, so the prefilter only has to never drop a true match.
 */
export function equalityLabels(selector: Selector | undefined): [string, string][] {
  const out: [string, string][] = [];
  for (const r of selector?.requirements ?? []) if (r.op === 'eq') out.push([r.key, r.value]);
  return out;
}

export interface ListRow {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  doc: string;
}

/** Largest number of rows read per query while filling a page, so a sparse selector never loads a table at once. */
export const LIST_CHUNK = 500;

export function listChunkSize(limit: number | undefined): number {
  return limit === undefined ? LIST_CHUNK : Math.min(Math.max(limit + 1, 1), LIST_CHUNK);
}

/**
 * Fills one list page from rows read in key order, chunk by chunk. It wants one match beyond the limit,
 * which is how `more` is known without a second query.
 */
export class PageCollector {
  private readonly matched: Resource[] = [];

  constructor(
    private readonly limit: number | undefined,
    private readonly selector: Selector | undefined,
  ) {}

  /** Takes one chunk; true when the page is full and reading can stop. */
  add(rows: readonly ListRow[]): boolean {
    for (const row of rows) {
      if (this.selector && !matchesSelector(this.selector, row.labels)) continue;
      this.matched.push(parseResource(row.doc));
      if (this.limit !== undefined && this.matched.length > this.limit) return true;
    }
    return false;
  }

  result(revision: number): { items: Resource[]; revision: number; more: boolean } {
    if (this.limit !== undefined && this.matched.length > this.limit) {
      return { items: this.matched.slice(0, this.limit), revision, more: true };
    }
    return { items: this.matched, revision, more: false };
  }
}

export function auditEntry(seq: number, prevHash: string, hash: string, body: AuditEntryBody): AuditEntry {
  // Built field by field so nothing a caller smuggled into `body` is returned as if it had been chained.
  return {
    seq,
    time: body.time,
    actor: body.actor,
    action: body.action,
    kind: body.kind,
    namespace: body.namespace,
    name: body.name,
    outcome: body.outcome,
    source: body.source,
    revisionBefore: body.revisionBefore,
    revisionAfter: body.revisionAfter,
    detail: body.detail,
    prevHash,
    hash,
  };
}

export interface AuditRow {
  seq: number;
  time: string;
  actor: string;
  action: string;
  kind: string;
  namespace: string;
  name: string;
  outcome: string;
  source: string;
  revision_before: number | null;
  revision_after: number | null;
  detail: string | null;
  prev_hash: string;
  hash: string;
}

export function auditFromRow(r: AuditRow): AuditEntry {
  return {
    seq: r.seq,
    time: r.time,
    actor: r.actor,
    action: r.action,
    kind: r.kind,
    namespace: r.namespace,
    name: r.name,
    outcome: r.outcome as AuditEntry['outcome'],
    source: r.source,
    revisionBefore: r.revision_before,
    revisionAfter: r.revision_after,
    detail: r.detail,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/** onChange subscribers. A throwing listener is reported, never allowed to fail the write that fired it. */
export class ChangeListeners {
  private readonly entries = new Set<{ fn: (revision: number) => void }>();

  constructor(private readonly onError: StoreErrorHandler) {}

  add(fn: (revision: number) => void): () => void {
    // Wrapped, so one function subscribed twice is two subscriptions, each removable on its own.
    const entry = { fn };
    this.entries.add(entry);
    return () => {
      this.entries.delete(entry);
    };
  }

  emit(revision: number): void {
    for (const e of [...this.entries]) {
      try {
        e.fn(revision);
      } catch (err) {
        this.onError('store change listener threw', err);
      }
    }
  }
}
