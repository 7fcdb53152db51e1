import type { Logger } from 'pino';
import { PlinthError, type InstanceSpec } from '@plinth/core';
import type { AuditRecorder, Principal } from '../identity/types.js';
import type { Store, StoredChange } from '../store/types.js';

const SYSTEM: Principal = { subject: 'system:registry', namespace: 'plinth-system', name: 'registry', via: 'credential' };

/**
 * Instance leases. A renewal extends the lease row only: no revision, no watch event, so thousands of
 * instances renewing every few seconds cost watchers nothing. Expiry deletes the Instance through the
 * store (one DELETED change) and every server may run the sweep: `expireLease` is atomic and idempotent.
 */
export class Leases {
  /** TTL per instance, fed by the change stream, so a renewal needs no read of the Instance. */
  private ttl = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;
  expired = 0;

  constructor(
    private readonly store: Store,
    private readonly audit: AuditRecorder,
    private readonly log: Logger,
    private readonly sweepMs = 1000,
    private readonly onExpired: () => void = () => {},
  ) {}

  onChange(ch: StoredChange): void {
    if (ch.resource.kind !== 'Instance') return;
    const key = `${ch.resource.metadata.namespace}/${ch.resource.metadata.name}`;
    if (ch.type === 'DELETED') this.ttl.delete(key);
    else this.ttl.set(key, (ch.resource.spec as unknown as InstanceSpec).leaseTtlSeconds);
  }

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.sweepMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  async renew(namespace: string, name: string): Promise<{ expiresAt: number; ttlSeconds: number }> {
    const key = `${namespace}/${name}`;
    let ttl = this.ttl.get(key);
    if (ttl === undefined) {
      const inst = await this.store.get('Instance', namespace, name);
      if (!inst) throw new PlinthError('LEASE_NOT_FOUND', `Instance ${namespace}/${name} is not registered; register it again`);
      ttl = (inst.spec as unknown as InstanceSpec).leaseTtlSeconds;
      this.ttl.set(key, ttl);
    }
    const expiresAt = Date.now() + ttl * 1000;
    if (!(await this.store.renewLease(namespace, name, expiresAt))) {
      throw new PlinthError('LEASE_NOT_FOUND', `the lease of Instance ${namespace}/${name} lapsed; register it again`);
    }
    return { expiresAt, ttlSeconds: ttl };
  }

  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const now = Date.now();
      for (const lease of await this.store.expiredLeases(now, 500)) {
        const gone = await this.store.expireLease(lease.namespace, lease.name, now);
        if (!gone) continue;
        this.expired++;
        this.onExpired();
        this.log.info({ instance: `${lease.namespace}/${lease.name}` }, 'instance lease expired; instance removed');
        await this.audit.record({
          principal: SYSTEM,
          action: 'expire',
          kind: 'Instance',
          namespace: lease.namespace,
          name: lease.name,
          outcome: 'allowed',
          source: 'server',
          revisionAfter: gone.metadata.revision,
        });
      }
    } catch (e) {
      this.log.warn({ err: e }, 'lease sweep failed; retrying');
    } finally {
      this.sweeping = false;
    }
  }
}
