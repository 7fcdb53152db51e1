import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { EjectionView } from './balancer.js';
import { ConsistentHashBalancer } from './consistent-hash.js';
import { EndpointSet, endpointOf } from './endpoints.js';
import { OutlierDetector } from './outlier.js';
import { P2CBalancer } from './p2c.js';
import { RoundRobinBalancer } from './round-robin.js';
import { count, FakeClock, inst, seeded, setOf } from './testkit.test.helpers.js';
import { WeightedBalancer } from './weighted.js';
import { ZoneAwareBalancer } from './zone-aware.js';

/** An ejection view that ejects a fixed set of ids, to test balancers apart from the detector's cap. */
function ejecting(...ids: string[]): EjectionView {
  const s = new Set(ids);
  return { activeEjections: s.size, isEjected: (id) => s.has(id) };
}

describe('EndpointSet', () => {
  it('leaves out draining, critical and zero-weight instances and indexes lanes and zones', () => {
    const set = setOf(
      inst('c', { zone: 'z1' }),
      inst('a', { zone: 'z1', lane: 'gray' }),
      inst('b', { zone: 'z2' }),
      inst('d', { draining: true }),
      inst('e', { health: 'critical' }),
      inst('f', { weight: 0 }),
      inst('g', { health: 'warning', lane: '_base', zone: 'z2' }),
    );
    assert.equal(set.size, 4);
    assert.equal(set.excluded, 3);
    assert.deepEqual(set.all.items.map((e) => e.id), ['a', 'b', 'c', 'g']);
    assert.deepEqual(set.base.items.map((e) => e.id), ['b', 'c', 'g']);
    assert.deepEqual(set.lane('gray')?.items.map((e) => e.id), ['a']);
    assert.equal(set.lane('blue'), undefined);
    assert.deepEqual(set.base.zone('z2')?.items.map((e) => e.id), ['b', 'g']);
    assert.equal(set.base.zone('z2'), set.base.zone('z2'), 'zone lists keep their identity');
    assert.equal(set.get('d'), undefined);
    assert.equal(set.get('a')?.weight, 100);
  });

  it('builds from Instance resources', () => {
    const set = EndpointSet.fromResources([
      { metadata: { name: 'i-1' }, spec: { service: 's', version: '1', address: 'h:1', weight: 7 } },
    ]);
    assert.equal(set.get('i-1')?.weight, 7);
    assert.equal(endpointOf('x', { service: 's', version: '1', address: 'h' }).lane, undefined);
  });
});

describe('RoundRobinBalancer', () => {
  it('cycles through every endpoint in order', () => {
    const set = setOf(inst('a'), inst('b'), inst('c'));
    const rr = new RoundRobinBalancer({ random: () => 0 });
    const picks = Array.from({ length: 7 }, () => rr.pick(set.all)?.id);
    assert.deepEqual(picks, ['a', 'b', 'c', 'a', 'b', 'c', 'a']);
  });

  it('keeps one cursor per list, so interleaved lanes still rotate', () => {
    const set = setOf(inst('a'), inst('b'), inst('g1', { lane: 'gray' }), inst('g2', { lane: 'gray' }));
    const rr = new RoundRobinBalancer({ random: () => 0 });
    const gray = set.lane('gray');
    assert.ok(gray);
    const picks: (string | undefined)[] = [];
    for (let i = 0; i < 4; i++) picks.push(rr.pick(set.base)?.id, rr.pick(gray)?.id);
    assert.deepEqual(picks, ['a', 'g1', 'b', 'g2', 'a', 'g1', 'b', 'g2']);
  });

  it('skips ejected endpoints, and ignores ejection when every endpoint is ejected', () => {
    const set = setOf(inst('a'), inst('b'), inst('c'));
    const rr = new RoundRobinBalancer({ random: () => 0, ejections: ejecting('b') });
    assert.deepEqual(Array.from({ length: 4 }, () => rr.pick(set.all)?.id), ['a', 'c', 'a', 'c']);
    const panic = new RoundRobinBalancer({ random: () => 0, ejections: ejecting('a', 'b', 'c') });
    assert.deepEqual(Array.from({ length: 3 }, () => panic.pick(set.all)?.id), ['a', 'b', 'c']);
    assert.equal(rr.pick(EndpointSet.empty.all), undefined);
  });
});

describe('WeightedBalancer', () => {
  it('keeps weight proportions over 10k picks', () => {
    const set = setOf(inst('a', { weight: 500 }), inst('b', { weight: 300 }), inst('c', { weight: 200 }));
    const w = new WeightedBalancer();
    const c = count(10_000, () => w.pick(set.all)?.id);
    for (const [id, share] of [['a', 0.5], ['b', 0.3], ['c', 0.2]] as const)
      assert.ok(Math.abs((c.get(id) ?? 0) / 10_000 - share) < 0.01, `${id}: ${c.get(id)}`);
  });

  it('interleaves smoothly (nginx: 5:1:1 → a a b a c a a)', () => {
    const set = setOf(inst('a', { weight: 5 }), inst('b', { weight: 1 }), inst('c', { weight: 1 }));
    const w = new WeightedBalancer();
    assert.deepEqual(Array.from({ length: 7 }, () => w.pick(set.all)?.id).join(' '), 'a a b a c a a');
  });

  it('redistributes an ejected endpoint’s share to the others', () => {
    const set = setOf(inst('a', { weight: 100 }), inst('b', { weight: 300 }), inst('c', { weight: 100 }));
    const w = new WeightedBalancer({ ejections: ejecting('b') });
    const c = count(1000, () => w.pick(set.all)?.id);
    assert.equal(c.get('b'), undefined);
    assert.equal(c.get('a'), 500);
    assert.equal(c.get('c'), 500);
    const panic = new WeightedBalancer({ ejections: ejecting('a', 'b', 'c') });
    assert.ok(panic.pick(set.all));
  });
});

describe('P2CBalancer', () => {
  const four = () => setOf(inst('a'), inst('b'), inst('c'), inst('slow'));

  it('avoids the slow endpoint', () => {
    const clock = new FakeClock();
    const set = four();
    const p = new P2CBalancer({ clock, random: seeded(1) });
    for (let i = 0; i < 20; i++) {
      for (const ep of set.all.items) p.onResult(ep, ep.id === 'slow' ? 200 : 10, true);
      clock.advance(10);
    }
    const c = count(10_000, () => p.pick(set.all)?.id);
    // The slow one is only ever compared against a faster one, so it never wins a pair.
    assert.equal(c.get('slow'), undefined);
    for (const id of ['a', 'b', 'c']) assert.ok((c.get(id) ?? 0) > 2500, `${id}: ${c.get(id)}`);
  });

  it('prefers the less loaded endpoint when latencies are equal', () => {
    const clock = new FakeClock();
    const set = setOf(inst('a'), inst('busy'));
    const p = new P2CBalancer({ clock, random: seeded(2) });
    for (const ep of set.all.items) p.onResult(ep, 20, true);
    const busy = set.get('busy');
    assert.ok(busy);
    for (let i = 0; i < 5; i++) p.onStart(busy);
    const c = count(1000, () => p.pick(set.all)?.id);
    assert.equal(c.get('a'), 1000);
    for (let i = 0; i < 5; i++) p.onEnd(busy);
    assert.equal(p.cost(busy), p.cost(set.get('a') ?? busy));
  });

  it('penalizes fresh failures, then forgives them as the penalty decays', () => {
    const clock = new FakeClock();
    const set = setOf(inst('a'), inst('b'));
    const p = new P2CBalancer({ clock, random: seeded(3), decayMs: 1000 });
    const [a, b] = set.all.items;
    assert.ok(a && b);
    p.onResult(a, 10, true);
    p.onResult(b, 10, true);
    p.onResult(b, 1, false); // a fast failure must not look fast
    assert.ok(p.cost(b) >= 50, `cost ${p.cost(b)}`);
    assert.equal(p.pick(set.all), a);
    clock.advance(5000); // b's spike decays toward zero while it gets no traffic
    p.onResult(a, 10, true);
    assert.ok(p.cost(b) < p.cost(a), `${p.cost(b)} < ${p.cost(a)}`);
    assert.equal(p.pick(set.all), b);
  });

  it('probes unmeasured endpoints but does not pile onto one with calls pending', () => {
    const set = setOf(inst('old'), inst('new'));
    const p = new P2CBalancer({ clock: new FakeClock(), random: seeded(4) });
    const [neu, old] = set.all.items;
    assert.ok(neu && old);
    p.onResult(old, 30, true);
    assert.equal(p.pick(set.all), neu);
    p.onStart(neu);
    assert.equal(p.pick(set.all), old);
  });

  it('is deterministic for a given random source and skips ejected endpoints', () => {
    const set = setOf(inst('a'), inst('b'), inst('c'), inst('d'), inst('e'));
    const run = () => {
      const p = new P2CBalancer({ clock: new FakeClock(), random: seeded(42), ejections: ejecting('c') });
      return Array.from({ length: 200 }, () => p.pick(set.all)?.id);
    };
    const first = run();
    assert.deepEqual(first, run());
    assert.ok(!first.includes('c'));
    const panic = new P2CBalancer({ random: seeded(5), ejections: ejecting('a', 'b', 'c', 'd', 'e') });
    assert.ok(panic.pick(set.all));
  });

  it('drops per-endpoint state when an endpoint leaves the snapshot', () => {
    const set = setOf(inst('a'), inst('b'));
    const p = new P2CBalancer();
    const a = set.get('a');
    assert.ok(a);
    p.onStart(a);
    p.retain(setOf(inst('b')));
    assert.equal(p.cost(a), 0);
  });

  it('starts an endpoint that left and came back from scratch, also the one it looked up last', () => {
    const set = setOf(inst('a'), inst('b'));
    const p = new P2CBalancer({ maxPenaltyMs: 1000 });
    const a = set.get('a');
    assert.ok(a);
    p.onStart(a);
    p.retain(setOf(inst('b')));
    p.retain(set);
    p.onStart(a);
    assert.equal(p.cost(a), 1001, 'one call pending (unmeasured: the penalty plus one), not two');
  });
});

describe('ConsistentHashBalancer', () => {
  const fleet = (n: number, skip?: string) =>
    setOf(...Array.from({ length: n }, (_, i) => inst(`ep-${i}`)).filter(([id]) => id !== skip));
  const keys = Array.from({ length: 10_000 }, (_, i) => `user-${i}`);

  it('maps a key to the same endpoint, also across rebuilt snapshots and balancers', () => {
    const ch = new ConsistentHashBalancer();
    const s1 = fleet(10);
    const first = keys.map((k) => ch.pick(s1.all, { hashKey: k })?.id);
    assert.deepEqual(keys.map((k) => ch.pick(s1.all, { hashKey: k })?.id), first);
    const other = new ConsistentHashBalancer();
    assert.deepEqual(keys.map((k) => other.pick(fleet(10).all, { hashKey: k })?.id), first);
    // Spread: with 160 virtual nodes each endpoint owns 10% ± a few points.
    const c = count(keys.length, (() => {
      let i = 0;
      return () => first[i++];
    })());
    for (const [id, n] of c) assert.ok(n > 600 && n < 1400, `${id}: ${n}`);
  });

  it('moves only the leaving endpoint’s keys (≈1/N) when one leaves', () => {
    const ch = new ConsistentHashBalancer();
    const before = keys.map((k) => ch.pick(fleet(10).all, { hashKey: k })?.id);
    const after = keys.map((k) => ch.pick(fleet(10, 'ep-3').all, { hashKey: k })?.id);
    let moved = 0;
    for (let i = 0; i < keys.length; i++) {
      if (before[i] === after[i]) continue;
      moved++;
      assert.equal(before[i], 'ep-3', 'only keys of the endpoint that left move');
    }
    assert.ok(moved / keys.length < 1 / 10 + 0.04, `moved ${moved}`);
  });

  it('skips an ejected endpoint by walking the ring, moving only its keys', () => {
    const set = fleet(5);
    const plain = new ConsistentHashBalancer();
    const ej = new ConsistentHashBalancer({ ejections: ejecting('ep-1') });
    for (const k of keys.slice(0, 2000)) {
      const a = plain.pick(set.all, { hashKey: k })?.id;
      const b = ej.pick(set.all, { hashKey: k })?.id;
      if (a === 'ep-1') assert.notEqual(b, 'ep-1');
      else assert.equal(b, a);
    }
  });

  it('falls back to the fallback balancer without a key', () => {
    const set = fleet(3);
    const ch = new ConsistentHashBalancer({ fallback: new RoundRobinBalancer({ random: () => 0 }) });
    assert.deepEqual([ch.pick(set.all)?.id, ch.pick(set.all, {})?.id], ['ep-0', 'ep-1']);
  });

  it('gives heavier endpoints proportionally more keys', () => {
    const set = setOf(inst('big', { weight: 300 }), inst('small', { weight: 100 }));
    const ch = new ConsistentHashBalancer();
    const c = count(keys.length, (() => {
      let i = 0;
      return () => ch.pick(set.all, { hashKey: keys[i++] ?? '' })?.id;
    })());
    const share = (c.get('big') ?? 0) / keys.length;
    assert.ok(share > 0.65 && share < 0.85, `big share ${share}`);
  });
});

describe('ZoneAwareBalancer', () => {
  const zoned = () =>
    setOf(inst('a1', { zone: 'a' }), inst('a2', { zone: 'a' }), inst('b1', { zone: 'b' }), inst('b2', { zone: 'b' }), inst('c1', { zone: 'c' }));

  it('keeps calls in the local zone', () => {
    const set = zoned();
    const z = new ZoneAwareBalancer({ localZone: 'a', inner: new RoundRobinBalancer() });
    const c = count(100, () => z.pick(set.all)?.id);
    assert.deepEqual([...c.keys()].sort(), ['a1', 'a2']);
    assert.equal(z.name, 'zone-aware(round-robin)');
  });

  it('spills over when the local zone is too small, absent or unknown', () => {
    const set = zoned();
    const thin = new ZoneAwareBalancer({ localZone: 'c', inner: new RoundRobinBalancer(), minHealthy: 2 });
    assert.equal(count(100, () => thin.pick(set.all)?.id).size, 5);
    const elsewhere = new ZoneAwareBalancer({ localZone: 'x', inner: new RoundRobinBalancer() });
    assert.equal(elsewhere.select(set.all), set.all);
    const nowhere = new ZoneAwareBalancer({ localZone: undefined, inner: new RoundRobinBalancer() });
    assert.equal(nowhere.select(set.all), set.all);
  });

  it('spills over when too much of the local zone is ejected', () => {
    const set = zoned();
    const ej = ejecting('a1');
    const half = new ZoneAwareBalancer({ localZone: 'a', inner: new RoundRobinBalancer({ ejections: ej }), ejections: ej });
    // One of two ejected is 50%, not above the default 0.5 limit: stay local, on the healthy one.
    assert.equal(half.select(set.all), set.all.zone('a'));
    assert.deepEqual([...count(10, () => half.pick(set.all)?.id).keys()], ['a2']);
    const strict = new ZoneAwareBalancer({ localZone: 'a', inner: new RoundRobinBalancer({ ejections: ej }), ejections: ej, maxEjectedFraction: 0.25 });
    assert.equal(strict.select(set.all), set.all);
    const both = ejecting('a1', 'a2');
    const dead = new ZoneAwareBalancer({ localZone: 'a', inner: new RoundRobinBalancer({ ejections: both }), ejections: both });
    const c = count(100, () => dead.pick(set.all)?.id);
    assert.ok(!c.has('a1') && !c.has('a2') && c.size === 3);
  });

  it('forwards call reports to the inner balancer', () => {
    const set = setOf(inst('a1', { zone: 'a' }), inst('a2', { zone: 'a' }));
    const inner = new P2CBalancer({ clock: new FakeClock(), random: seeded(9) });
    const z = new ZoneAwareBalancer({ localZone: 'a', inner });
    const a1 = set.get('a1');
    assert.ok(a1);
    z.onResult(a1, 100, true);
    z.onStart(a1);
    assert.ok(inner.cost(a1) >= 200);
    z.onEnd(a1);
    assert.equal(inner.cost(a1), 100);
  });
});

describe('OutlierDetector', () => {
  it('starts the failure streak afresh for an endpoint that left and came back', () => {
    const od = new OutlierDetector({ clock: new FakeClock(), consecutiveFailures: 3 });
    const both = setOf(inst('a'), inst('bb'));
    od.retain(both);
    od.record('a', false);
    od.record('a', false);
    od.retain(setOf(inst('bb')));
    od.retain(both);
    assert.equal(od.record('a', false), false, 'one failure since it came back');
    assert.equal(od.record('a', false), false);
    assert.equal(od.record('a', false), true);
  });

  it('ejects after consecutive failures, for exponentially longer each time, capped', () => {
    const clock = new FakeClock();
    const od = new OutlierDetector({ clock, consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 3000 });
    od.setPopulation(4);
    const failTimes = (n: number) => {
      let ejected = false;
      for (let i = 0; i < n; i++) ejected = od.record('x', false);
      return ejected;
    };
    assert.equal(failTimes(2), false);
    od.record('x', true); // a success breaks the streak
    assert.equal(failTimes(2), false);
    assert.equal(failTimes(1), true);
    assert.ok(od.isEjected('x', clock.now()));
    const durations: number[] = [];
    for (let round = 0; round < 4; round++) {
      const start = clock.now();
      if (round > 0) assert.equal(failTimes(3), true);
      let t = start;
      while (od.isEjected('x', t)) t += 100;
      durations.push(t - start);
      clock.t = t;
    }
    assert.deepEqual(durations, [1000, 2000, 3000, 3000]);
    assert.equal(od.activeEjections, 0);
  });

  it('forgives: the multiplier decays while the endpoint stays healthy', () => {
    const clock = new FakeClock();
    const od = new OutlierDetector({ clock, consecutiveFailures: 1, baseEjectionMs: 1000, maxEjectionMs: 60_000 });
    od.setPopulation(3);
    od.record('x', false);
    clock.advance(1000);
    od.record('x', false); // second in a row: 2 s
    assert.ok(od.isEjected('x', clock.now() + 1999) && !od.isEjected('x', clock.now() + 2000));
    clock.advance(2000 + 10_000); // long healthy stretch
    od.record('x', false);
    assert.ok(!od.isEjected('x', clock.now() + 1000), 'back to the base duration');
  });

  it('never ejects more than the max percent, nor the last endpoint', () => {
    const clock = new FakeClock();
    const od = new OutlierDetector({ clock, consecutiveFailures: 1, maxEjectionPercent: 50 });
    od.retain(setOf(...Array.from({ length: 10 }, (_, i) => inst(`e${i}`))));
    const results = Array.from({ length: 10 }, (_, i) => od.record(`e${i}`, false));
    assert.equal(results.filter(Boolean).length, 5);
    assert.equal(od.ejectedCount(), 5);
    assert.equal(od.eject('e9', clock.now() + 1000), false);
    assert.equal(od.eject('e0', clock.now() + 999_999), true, 'extending an ejection is allowed');

    const tiny = new OutlierDetector({ clock, consecutiveFailures: 1, maxEjectionPercent: 10 });
    tiny.setPopulation(1);
    assert.equal(tiny.record('only', false), false, 'a single endpoint is never ejected');
    tiny.setPopulation(3);
    assert.equal(tiny.record('only', false), true, 'at least one of several may be ejected');
    assert.equal(tiny.record('other', false), false);
    assert.deepEqual(tiny.ejectedIds(), ['only']);
  });

  it('ejects when the instance breaker opens, and feeds the balancers', () => {
    const clock = new FakeClock();
    const od = new OutlierDetector({ clock });
    const set = setOf(inst('a'), inst('b'), inst('c'));
    od.retain(set);
    od.onBreakerStateChange('b', 'open');
    assert.ok(od.isEjected('b', clock.now()));
    for (const bal of [
      new RoundRobinBalancer({ clock, ejections: od }),
      new WeightedBalancer({ clock, ejections: od }),
      new P2CBalancer({ clock, ejections: od, random: seeded(7) }),
    ])
      assert.ok(!count(300, () => bal.pick(set.all)?.id).has('b'), bal.name);
    od.uneject('b');
    assert.equal(od.activeEjections, 0);
    od.retain(setOf(inst('a')));
    assert.equal(od.maxEjected(), 0);
  });
});
