import { PROTOCOL_METADATA } from '@plinth/core';
import { buildConnector, Pool, type Dispatcher } from 'undici';
import type { EndpointSet } from '../balancing/endpoints.js';
import { guardedConnector } from './h2-close-guard.js';

/** How an upstream origin is spoken to: HTTP/1.1 (or what ALPN picks over TLS), or cleartext HTTP/2. */
export type UpstreamProtocol = 'http' | 'h2c';

interface PoolEntry {
  readonly address: string;
  readonly dispatcher: Dispatcher;
  /** Callees that list the address: the pool closes when the last one drops it. */
  readonly users: Set<string>;
}

export interface EndpointPoolsOptions {
  connectionsPerEndpoint: number;
  /**
   * Makes the dispatcher of an origin; default an undici Pool with `connectionsPerEndpoint`, pipelining 1
   * (HTTP/2 with prior knowledge for `h2c`).
   */
  dispatcherFactory?: ((origin: string, protocol: UpstreamProtocol) => Dispatcher) | undefined;
  /** The error's text once closed ("client closed", "gateway closed"). */
  closedMessage?: string;
}

/** The protocol an endpoint's metadata names for its plain address (PROTOCOL_METADATA). */
export function protocolOf(metadata: Readonly<Record<string, string>> | undefined): UpstreamProtocol {
  return metadata?.[PROTOCOL_METADATA] === 'h2c' ? 'h2c' : 'http';
}

/** An undici Pool for `origin`: HTTP/1.1 with pipelining 1, or cleartext HTTP/2 for `h2c` (many streams per connection). */
export function defaultPool(origin: string, protocol: UpstreamProtocol, connections: number): Pool {
  if (protocol === 'h2c' && origin.startsWith('http:')) {
    // A Pool builds its connector without useH2c (which marks a plain socket as h2, prior knowledge), so it
    // is given one; undici's types do not list the option yet.
    const connect = guardedConnector(buildConnector({ allowH2: true, useH2c: true } as buildConnector.BuildOptions));
    return new Pool(origin, { connections, allowH2: true, connect });
  }
  return new Pool(origin, { connections, pipelining: 1 });
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

  /**
   * The dispatcher for `address` on behalf of `service`; throws once closed. `metadata` (the endpoint's) is
   * read only when the pool is made, for its protocol.
   */
  get(service: string, address: string, metadata?: Readonly<Record<string, string>>): Dispatcher {
    // Calls mostly repeat the last (callee, address) pair: two string compares instead of a Map and a Set lookup.
    const hit = this.last;
    if (hit !== undefined && hit.address === address && this.lastService === service) return hit.dispatcher;
    let p = this.pools.get(address);
    if (p === undefined) {
      if (this.closed) throw new Error(this.o.closedMessage ?? 'closed');
      const origin = originOf(address);
      const protocol = protocolOf(metadata);
      const dispatcher = this.o.dispatcherFactory?.(origin, protocol) ?? defaultPool(origin, protocol, this.o.connectionsPerEndpoint);
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

  /**
   * Closes every pool: what is in flight finishes, then the connections close. A request undici holds that no
   * caller waits for any more (it queues requests again when an HTTP/2 connection goes away, and one whose
   * body was stopped is never sent) would hold a graceful close forever: after `graceMs` the pools are destroyed.
   */
  async close(graceMs = 2000): Promise<void> {
    this.closed = true;
    this.last = undefined;
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map((p) => closeWithin(p.dispatcher, graceMs)));
  }
}

async function closeWithin(d: Dispatcher, graceMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(() => resolve(d.destroy().catch(() => undefined)), graceMs);
  });
  await Promise.race([d.close().catch(() => undefined), late]);
  clearTimeout(timer);
}
