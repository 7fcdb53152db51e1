import { canonicalJson, sha256Hex } from './canonical.js';

/** One entry of the hash-chained audit log. */
export interface AuditEntry {
  seq: number;
  time: string;
  /** `ServiceAccount:namespace/name`, or `anonymous`. */
  actor: string;
  /** The verb attempted: create, update, delete, rollback, renew, login, ... */
  action: string;
  kind: string;
  namespace: string;
  name: string;
  outcome: 'allowed' | 'denied' | 'failed';
  /** Client address. */
  source: string;
  revisionBefore: number | null;
  revisionAfter: number | null;
  detail: string | null;
  prevHash: string;
  hash: string;
}

export type AuditEntryBody = Omit<AuditEntry, 'hash' | 'prevHash' | 'seq'>;

export const AUDIT_GENESIS_HASH = '0'.repeat(64);

export function auditHash(prevHash: string, seq: number, body: AuditEntryBody): string {
  const { time, actor, action, kind, namespace, name, outcome, source, revisionBefore, revisionAfter, detail } = body;
  return sha256Hex(
    prevHash +
      '\n' +
      canonicalJson({ seq, time, actor, action, kind, namespace, name, outcome, source, revisionBefore, revisionAfter, detail }),
  );
}

export interface AuditVerifyResult {
  ok: boolean;
  checked: number;
  /** The first broken entry, and why. */
  problem?: { seq: number; reason: string };
}

/**
 * Walks entries in seq order and recomputes the chain. An edited entry breaks its own hash; a removed one
 * leaves a gap in seq and a prevHash that matches nothing. `head` (kept apart from the entries) catches
 * removal of the newest entries.
 */
export class AuditVerifier {
  private prev = AUDIT_GENESIS_HASH;
  private expectSeq = 1;
  private checked = 0;
  private problem: { seq: number; reason: string } | undefined;

  push(e: AuditEntry): boolean {
    if (this.problem) return false;
    if (e.seq !== this.expectSeq) {
      this.problem = { seq: this.expectSeq, reason: `entry ${this.expectSeq} is missing (next entry found is ${e.seq})` };
      return false;
    }
    if (e.prevHash !== this.prev) {
      this.problem = { seq: e.seq, reason: `entry ${e.seq} does not follow entry ${e.seq - 1} (prevHash mismatch)` };
      return false;
    }
    const h = auditHash(e.prevHash, e.seq, e);
    if (h !== e.hash) {
      this.problem = { seq: e.seq, reason: `entry ${e.seq} was altered (hash mismatch)` };
      return false;
    }
    this.prev = e.hash;
    this.expectSeq++;
    this.checked++;
    return true;
  }

  finish(head?: { seq: number; hash: string }): AuditVerifyResult {
    if (!this.problem && head) {
      if (head.seq !== this.expectSeq - 1) {
        this.problem = {
          seq: this.expectSeq,
          reason: `the log ends at entry ${this.expectSeq - 1} but its head says ${head.seq}: entries were removed`,
        };
      } else if (head.seq > 0 && head.hash !== this.prev) {
        this.problem = { seq: head.seq, reason: `the head hash does not match entry ${head.seq}` };
      }
    }
    return this.problem ? { ok: false, checked: this.checked, problem: this.problem } : { ok: true, checked: this.checked };
  }
}
