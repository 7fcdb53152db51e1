// Helpers for this folder's tests (excluded from the package by the `*.test.*` pattern, not run as a test).
import type { Clock, Random } from './balancer.js';
import { EndpointSet, type InstanceLike } from './endpoints.js';

/** mulberry32: a tiny seeded PRNG, so distribution tests are reproducible. */
export function seeded(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FakeClock implements Clock {
  constructor(public t = 1_000_000) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

export function inst(id: string, extra: Partial<InstanceLike> = {}): readonly [string, InstanceLike] {
  return [id, { service: 'orders', version: '1.0.0', address: `10.0.0.${id.length}:8080`, ...extra }];
}

export function setOf(...instances: (readonly [string, InstanceLike])[]): EndpointSet {
  return EndpointSet.fromInstances(instances);
}

export function count<T>(n: number, f: () => T): Map<T, number> {
  const m = new Map<T, number>();
  for (let i = 0; i < n; i++) {
    const k = f();
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}
