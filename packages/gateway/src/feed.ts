import type { Resource } from '@plinth/core';
import type { ControlPlaneClient } from '@plinth/sdk';

/**
 * The resources of one kind the gateway compiles (Routes, RoleBindings), read from a snapshot. Like a
 * GovernanceSource: `version` moves on every change, consumers recompile when it did, nothing on a request
 * path lists resources.
 */
export interface ResourceFeed<S = unknown> {
  readonly version: number;
  list(): readonly Resource<S>[];
  onChange(listener: () => void): () => void;
}

/** Resources set by hand: tests, and a gateway run from static configuration. */
export class StaticFeed<S = unknown> implements ResourceFeed<S> {
  private v = 0;
  private items: readonly Resource<S>[] = [];
  private readonly listeners = new Set<() => void>();

  constructor(items: readonly Resource<S>[] = []) {
    this.items = items;
  }

  get version(): number {
    return this.v;
  }

  list(): readonly Resource<S>[] {
    return this.items;
  }

  set(items: readonly Resource<S>[]): void {
    this.items = [...items];
    this.bump();
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  protected bump(): void {
    this.v++;
    for (const l of this.listeners) {
      try {
        l();
      } catch {
        // one consumer's failure must not hide the change from the others
      }
    }
  }
}

/**
 * One kind of a control-plane client's snapshot. A burst of watch events (a relist, an `apply -f`) bumps the
 * version once, on the next microtask, so the table is compiled once.
 */
export function clientFeed<S = unknown>(client: Pick<ControlPlaneClient, 'list' | 'on'>, kind: string, namespace: string): ResourceFeed<S> & { close(): void } {
  return new ClientFeed<S>(client, kind, namespace);
}

class ClientFeed<S> extends StaticFeed<S> {
  private pending = false;
  private readonly off: () => void;

  constructor(
    private readonly client: Pick<ControlPlaneClient, 'list' | 'on'>,
    private readonly kind: string,
    private readonly namespace: string,
  ) {
    super(client.list(kind, { namespace }) as Resource<S>[]);
    this.off = client.on('change', (ev) => {
      if (ev.resource.kind !== this.kind || this.pending) return;
      this.pending = true;
      queueMicrotask(() => {
        this.pending = false;
        this.set(this.client.list(this.kind, { namespace: this.namespace }) as Resource<S>[]);
      });
    });
  }

  close(): void {
    this.off();
  }
}
