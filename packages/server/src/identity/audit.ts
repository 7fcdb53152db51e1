import type { Logger } from 'pino';
import { PlinthError, type AuditEntryBody } from '@plinth/core';
import type { Store } from '../store/types.js';
import type { AuditRecord, AuditRecorder } from './types.js';

/**
 * Writes audit entries through the store, which chains them (serialized across servers). A failed append
 * throws UNAVAILABLE so the caller answers 503: a change is never acknowledged without its entry.
 */
export class Auditor implements AuditRecorder {
  constructor(
    private readonly store: Store,
    private readonly log?: Logger | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  async record(r: AuditRecord): Promise<void> {
    const body: AuditEntryBody = {
      time: new Date(this.now()).toISOString(),
      actor: r.principal?.subject ?? 'anonymous',
      action: r.action,
      kind: r.kind,
      namespace: r.namespace,
      name: r.name,
      outcome: r.outcome,
      source: r.source,
      revisionBefore: r.revisionBefore ?? null,
      revisionAfter: r.revisionAfter ?? null,
      detail: r.detail ?? null,
    };
    try {
      await this.store.appendAudit(body);
    } catch (err) {
      this.log?.error({ err, audit: body }, 'audit log append failed');
      throw new PlinthError('UNAVAILABLE', 'the audit log cannot be written right now; try again later', { cause: err });
    }
  }
}
