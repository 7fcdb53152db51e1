import type { AuditEntry, AuditEntryBody, Resource, Selector, WatchEvent } from '@plinth/core';

export interface PutRequest {
  kind: string;
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** Stored form of the spec (for Secrets: already sealed). */
  spec: unknown;
  /**
   * Optimistic concurrency: the write happens only if the current revision equals this.
   * 0 means "must not exist yet" (create only). Otherwise REVISION_CONFLICT (or ALREADY_EXISTS for 0).
   */
  expectRevision?: number;
  /**
   * For Instances: create or extend the lease in the same transaction. Epoch milliseconds.
   * Applied even when the put is UNCHANGED, so re-registering an unchanged Instance revives its lease.
   */
  leaseExpiresAt?: number;
}

export interface PutResult {
  /** UNCHANGED: labels, annotations and spec equal the current ones; nothing was written. */
  type: 'ADDED' | 'MODIFIED' | 'UNCHANGED';
  resource: Resource;
  previous: Resource | undefined;
}

export interface ListOptions {
  namespace?: string | undefined;
  selector?: Selector | undefined;
  /** Page size; undefined = everything. */
  limit?: number | undefined;
  /** Resume after this key, in (namespace, name) order. */
  after?: { namespace: string; name: string } | undefined;
}

export interface ListResult {
  items: Resource[];
  /** Store revision when the page was read: watch from here to follow changes. */
  revision: number;
  /** More items follow the last one. */
  more: boolean;
}

/** A change as the log keeps it: MODIFIED changes also carry the labels before, for selector-filtered watches. */
export interface StoredChange extends WatchEvent {
  previousLabels?: Record<string, string> | undefined;
}

export interface Lease {
  namespace: string;
  name: string;
  expiresAt: number;
}

/**
 * The one store contract. Both backends (SQLite, PostgreSQL) pass the same contract suite.
 *
 * Revisions are global and strictly increasing; writes commit in revision order, so reading
 * `changesSince(r)` never skips a revision that commits later.
 */
export interface Store {
  readonly backend: 'sqlite' | 'postgres';
  init(): Promise<void>;
  close(): Promise<void>;

  get(kind: string, namespace: string, name: string): Promise<Resource | undefined>;
  list(kind: string, options?: ListOptions): Promise<ListResult>;
  put(req: PutRequest): Promise<PutResult>;
  /**
   * Deletes and returns the resource as it was, with metadata.revision set to the delete's revision.
   * Undefined when it did not exist. expectRevision as in put (REVISION_CONFLICT on mismatch).
   */
  delete(kind: string, namespace: string, name: string, options?: { expectRevision?: number }): Promise<Resource | undefined>;

  /** Changes to one resource, newest first, including deletions. */
  history(kind: string, namespace: string, name: string, options?: { limit?: number; beforeRevision?: number }): Promise<WatchEvent[]>;
  /** The change of one resource at exactly this revision, if it is still in the log. */
  atRevision(kind: string, namespace: string, name: string, revision: number): Promise<WatchEvent | undefined>;
  /** All changes with revision > `revision`, ascending, at most `limit`. */
  changesSince(revision: number, limit: number): Promise<StoredChange[]>;
  currentRevision(): Promise<number>;
  /** Changes with revision <= this are gone from the log. 0 when nothing was compacted. */
  compactedRevision(): Promise<number>;
  /** Drops log entries with revision <= `revision` (never beyond the current revision). */
  compact(revision: number): Promise<void>;
  /**
   * Called with the newest revision after commits — from this process and, for shared backends, from
   * every other process. Notifications may coalesce; listeners read `changesSince` to catch up.
   */
  onChange(listener: (revision: number) => void): () => void;

  /** Extends a live lease. False when no lease exists (the instance must register again). */
  renewLease(namespace: string, name: string, expiresAt: number): Promise<boolean>;
  getLease(namespace: string, name: string): Promise<Lease | undefined>;
  /** Leases with expiresAt < now, oldest first. */
  expiredLeases(now: number, limit: number): Promise<Lease[]>;
  /**
   * Atomically: if the lease is still expired at `now`, removes it and deletes its Instance (a DELETED change).
   * Returns the deleted Instance, or undefined when the lease was renewed meanwhile or is gone.
   */
  expireLease(namespace: string, name: string, now: number): Promise<Resource | undefined>;

  /** Appends to the hash-chained audit log (serialized across processes). */
  appendAudit(body: AuditEntryBody): Promise<AuditEntry>;
  /** Entries with seq > afterSeq, ascending. */
  readAudit(afterSeq: number, limit: number): Promise<AuditEntry[]>;
  /** Seq and hash of the newest entry ({0, genesis} when empty), kept apart from the entries. */
  auditHead(): Promise<{ seq: number; hash: string }>;
}
