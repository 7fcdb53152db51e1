import { Pool, type Dispatcher } from 'undici';
import type { EndpointSet } from '../balancing/endpoints.js';

interface PoolEntry {
  readonly address: string;
  readonly dispatcher: Dispatcher;
  /** Callees that list the address: the pool closes when the last one drops it. */
  readonly users: Set<string>;
}

export interface EndpointPoolsOptions {
  connectionsPerEndpoint: number;
  /** Makes the dispatcher of an origin; default an undici Pool with `connectionsPerEndpoint`, pipelining 1. */
  dispatcherFactory?: ((origin: string) => Dispatcher) | undefined;
  /** The error's text once closed ("client closed", "gateway closed"). */
  closedMessage?: string;
}

/** `host:port` (or a URL) → its origin. */
export function originOf(address: string): string {
  if (address.includes('://')) return new URL(address).origin;
  return `http://${address}`;
}

/**
 * One dispatcher (an undici Pool, pipelining 1) per upstream address, shared by every callee that lists the
 * address, kept while one does and closed (gracefully: in-flight requests finish) when the last one drops
 * it. The SDK client's transport and the gateway both hold their upstream connections here.
 */
export class EndpointPools {
  private readonly pools = new Map<string, PoolEntry>();
  /** The pool of the last lookup and the callee it was for. */
  private last: PoolEntry | undefined;
  private lastService = '';
  private closed = false;

  constructor(private readonly o: EndpointPoolsOptions) {}

  /** The dispatcher for `address` on behalf of `service`; throws once closed. */
  get(service: string, address: string): Dispatcher {
    // Calls mostly repeat the last (callee, address) pair: two string compares instead of a Map and a Set lookup.
    const hit = this.last;
    if (hit !== undefined && hit.address === address && this.lastService === service) return hit.dispatcher;
    let p = this.pools.get(address);
    if (p === undefined) {
      if (this.closed) throw new Error(this.o.closedMessage ?? 'closed');
      const origin = originOf(address);
      const dispatcher = this.o.dispatcherFactory?.(origin) ?? new Pool(origin, { connections: this.o.connectionsPerEndpoint, pipelining: 1 });
      this.pools.set(address, (p = { address, dispatcher, users: new Set() }));
    }
    // Calls spread over several instances miss the one-entry cache often: a miss allocates nothing.
    if (!p.users.has(service)) p.users.add(service);
    this.last = p;
    this.lastService = service;
    return p.dispatcher;
  }

  /** A callee's endpoints changed: pools of addresses no callee uses any more are closed. */
  endpointsChanged(service: string, prev: EndpointSet, next: EndpointSet): void {
    this.last = undefined;
    const still = new Set<string>();
    for (const ep of next.all.items) still.add(ep.address);
    for (const ep of prev.all.items) {
      if (still.has(ep.address)) continue;
      const p = this.pools.get(ep.address);
      if (p === undefined) continue;
      p.users.delete(service);
      if (p.users.size === 0) {
        this.pools.delete(ep.address);
        p.dispatcher.close().catch(() => undefined);
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.last = undefined;
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map((p) => p.dispatcher.close().catch(() => undefined)));
  }
}
