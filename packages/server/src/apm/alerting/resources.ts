import type { Logger } from 'pino';
import { AlertRuleSpec, ServiceSpec, SloSpec, type Resource } from '@plinth/core';
import type { Store, StoredChange } from '../../store/types.js';

/** The kinds alerting reads, with their parsed specs. */
export interface AlertingKinds {
  Slo: SloSpec;
  AlertRule: AlertRuleSpec;
  Service: ServiceSpec;
}
export type AlertingKind = keyof AlertingKinds;

export interface Named<T> {
  namespace: string;
  name: string;
  revision: number;
  spec: T;
}

/** What alerting needs of the resource store: the current Slos, AlertRules and Services. */
export interface AlertResources {
  list<K extends AlertingKind>(kind: K, namespace?: string): Promise<Named<AlertingKinds[K]>[]>;
  get<K extends AlertingKind>(kind: K, namespace: string, name: string): Promise<Named<AlertingKinds[K]> | undefined>;
}

const SCHEMAS = { Slo: SloSpec, AlertRule: AlertRuleSpec, Service: ServiceSpec } as const;

function isAlertingKind(kind: string): kind is AlertingKind {
  return kind === 'Slo' || kind === 'AlertRule' || kind === 'Service';
}

/**
 * The alerting kinds held in memory, fed by the watch hub's change stream (like the registry's lease TTLs),
 * so an evaluation every 30 s reads no resource table. Specs are parsed once per change: a stored spec that
 * an older schema accepted and this one refuses is skipped with a warning, never evaluated half-understood.
 */
export class AlertResourceCache implements AlertResources {
  private readonly byKind = new Map<AlertingKind, Map<string, Named<unknown>>>([
    ['Slo', new Map()],
    ['AlertRule', new Map()],
    ['Service', new Map()],
  ]);

  constructor(private readonly log?: Logger) {}

  /** Seeds from the store; call before following changes (changes at or below a held revision are ignored). */
  async load(store: Store): Promise<void> {
    for (const kind of Object.keys(SCHEMAS) as AlertingKind[]) {
      let after: { namespace: string; name: string } | undefined;
      for (;;) {
        const page = await store.list(kind, { limit: 1000, after });
        for (const r of page.items) this.apply('ADDED', r);
        const last = page.items[page.items.length - 1];
        if (!page.more || !last) break;
        after = { namespace: last.metadata.namespace, name: last.metadata.name };
      }
    }
  }

  /** For `hub.onChange`. Must not throw. */
  onChange(ch: StoredChange): void {
    this.apply(ch.type, ch.resource);
  }

  private apply(type: string, r: Resource): void {
    if (!isAlertingKind(r.kind)) return;
    const map = this.byKind.get(r.kind)!;
    const key = `${r.metadata.namespace}/${r.metadata.name}`;
    const held = map.get(key);
    if (held && held.revision > r.metadata.revision) return;
    if (type === 'DELETED') {
      map.delete(key);
      return;
    }
    const parsed = SCHEMAS[r.kind].safeParse(r.spec);
    if (!parsed.success) {
      map.delete(key);
      this.log?.warn({ kind: r.kind, resource: key, revision: r.metadata.revision }, 'stored spec no longer valid; not evaluated');
      return;
    }
    map.set(key, { namespace: r.metadata.namespace, name: r.metadata.name, revision: r.metadata.revision, spec: parsed.data });
  }

  list<K extends AlertingKind>(kind: K, namespace?: string): Promise<Named<AlertingKinds[K]>[]> {
    const out: Named<AlertingKinds[K]>[] = [];
    for (const n of this.byKind.get(kind)!.values()) if (namespace === undefined || n.namespace === namespace) out.push(n as Named<AlertingKinds[K]>);
    out.sort((a, b) => (a.namespace === b.namespace ? cmp(a.name, b.name) : cmp(a.namespace, b.namespace)));
    return Promise.resolve(out);
  }

  get<K extends AlertingKind>(kind: K, namespace: string, name: string): Promise<Named<AlertingKinds[K]> | undefined> {
    return Promise.resolve(this.byKind.get(kind)!.get(`${namespace}/${name}`) as Named<AlertingKinds[K]> | undefined);
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
