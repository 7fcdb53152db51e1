import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FaultToleranceSpec, Resource } from '@plinth/core';
import { StaticGovernance } from '../governance/source.js';
import { ManualClock } from '../ratelimit/clock.js';
import { TimerWheel } from '../resilience/timer-wheel.js';
import { InboundMetrics } from './metrics.js';
import type { OverloadSignal } from './overload.js';
import { InboundPipeline, type Admission, type InboundOptions, type InboundRequest } from './pipeline.js';
import { draws, faultInjection, faultTolerance } from './testkit.test.helpers.js';

const req = (over: Partial<InboundRequest> = {}): InboundRequest => ({
  method: 'GET',
  path: '/orders',
  headers: {},
  ip: '10.0.0.1',
  caller: undefined,
  lane: undefined,
  ...over,
});

function setup(ft: Resource<FaultToleranceSpec>[], extra: Partial<InboundOptions> = {}) {
  const governance = new StaticGovernance();
  governance.set({ faultTolerance: ft });
  const clock = new ManualClock(1_000_000);
  const pipeline = new InboundPipeline({ service: 'orders', governance, clock, ...extra });
  return { governance, clock, pipeline };
}

/** The local path must answer synchronously: a Promise here is a bug in itself. */
function sync(a: Admission | Promise<Admission>): Admission {
  assert.ok(!(a instanceof Promise), 'expected a synchronous admission');
  return a;
}

function rejected(a: Admission): Extract<Admission, { ok: false }> {
  assert.equal(a.ok, false, 'expected a rejection');
  return a as Extract<Admission, { ok: false }>;
}

const rate = (threshold: number, more: Record<string, unknown> = {}) =>
  faultTolerance('protect', { rules: [{ name: 'rl', targets: [{ service: 'orders' }], strategies: [{ type: 'rateLimit', threshold, ...more }] }] });

describe('InboundPipeline rate limits', () => {
  it('rejects over the threshold with 429, problem+json, Retry-After and RateLimit headers, then refills', () => {
    const { pipeline, clock } = setup([rate(2)]);
    assert.equal(sync(pipeline.admit(req())).ok, true);
    assert.equal(sync(pipeline.admit(req())).ok, true);
    const r = rejected(sync(pipeline.admit(req())));
    assert.equal(r.status, 429);
    assert.equal(r.code, 'rate_limited');
    assert.equal(r.contentType, 'application/problem+json');
    assert.equal(JSON.parse(r.body).code, 'rate_limited');
    assert.equal(r.headers['Retry-After'], '1');
    assert.equal(r.headers['RateLimit-Policy'], '"rl";q=2;w=1');
    assert.match(r.headers['RateLimit'] ?? '', /^"rl";r=0;t=1$/);
    clock.advance(500); // half a second refills one of two tokens
    assert.equal(sync(pipeline.admit(req())).ok, true);
    assert.equal(sync(pipeline.admit(req())).ok, false);
  });

  it('serves the rule fallbackAction instead of the default answer', () => {
    const ft = faultTolerance('protect', {
      rules: [
        {
          name: 'rl',
          targets: [{ service: 'orders' }],
          strategies: [{ type: 'rateLimit', threshold: 1 }],
          fallbackAction: { statusCode: 503, body: '{"busy":true}', contentType: 'application/json', headers: { 'x-fallback': 'yes' } },
        },
      ],
    });
    const { pipeline } = setup([ft]);
    sync(pipeline.admit(req()));
    const r = rejected(sync(pipeline.admit(req())));
    assert.deepEqual([r.status, r.body, r.contentType, r.headers['x-fallback'], r.code], [503, '{"busy":true}', 'application/json', 'yes', 'rate_limited']);
  });

  it('keeps one bucket per header value, and one shared bucket for requests without it', () => {
    const { pipeline } = setup([rate(1, { key: { source: 'header', header: 'X-Tenant' } })]);
    const t = (tenant?: string) => sync(pipeline.admit(req({ headers: tenant === undefined ? {} : { 'x-tenant': tenant } }))).ok;
    assert.deepEqual([t('a'), t('a'), t('b'), t('b'), t(), t()], [true, false, true, false, true, false]);
  });

  it('keys by ip and by identity', () => {
    const byIp = setup([rate(1, { key: { source: 'ip' } })]).pipeline;
    assert.deepEqual([byIp.admit(req({ ip: '1.1.1.1' })), byIp.admit(req({ ip: '1.1.1.1' })), byIp.admit(req({ ip: '2.2.2.2' }))].map((a) => sync(a).ok), [true, false, true]);
    const byId = setup([rate(1, { key: { source: 'identity' } })]).pipeline;
    const id = (identity: string) => sync(byId.admit(req({ identity }))).ok;
    assert.deepEqual([id('ServiceAccount:retail/a'), id('ServiceAccount:retail/a'), id('ServiceAccount:retail/b')], [true, false, true]);
  });

  it('only applies to matching targets (endpoints, methods, callers)', () => {
    const ft = faultTolerance('protect', {
      rules: [{ name: 'rl', targets: [{ service: 'orders', endpoints: ['/orders'], methods: ['POST'], callers: ['web'] }], strategies: [{ type: 'rateLimit', threshold: 1 }] }],
    });
    const { pipeline } = setup([ft]);
    const post = (over: Partial<InboundRequest>) => sync(pipeline.admit(req({ method: 'POST', caller: 'web', ...over }))).ok;
    assert.equal(post({}), true);
    assert.equal(post({}), false);
    assert.equal(post({ caller: 'mobile' }), true);
    assert.equal(post({ caller: undefined }), true);
    assert.equal(post({ method: 'GET' }), true);
    assert.equal(post({ path: '/carts' }), true);
    // A rule for another service never applies here.
    const other = setup([faultTolerance('x', { rules: [{ name: 'rl', targets: [{ service: 'carts' }], strategies: [{ type: 'rateLimit', threshold: 1 }] }] })]).pipeline;
    assert.equal(other.admit(req()), other.admit(req()), 'untouched requests share one admission object');
  });

  it('throttle spaces requests evenly with a delay and rejects past maxQueueingTimeMs', () => {
    const { pipeline } = setup([rate(10, { behavior: 'throttle', maxQueueingTimeMs: 250 })]);
    const delays = [0, 1, 2].map(() => {
      const a = sync(pipeline.admit(req()));
      return a.ok ? a.delayMs : -1;
    });
    assert.deepEqual(delays, [0, 100, 200]);
    assert.equal(rejected(sync(pipeline.admit(req()))).code, 'rate_limited', 'a 300 ms wait exceeds maxQueueingTimeMs 250');
  });

  it('warmUp starts below the threshold after a quiet period', () => {
    const { pipeline } = setup([rate(30, { behavior: 'warmUp', warmUpPeriodSec: 10, coldFactor: 3 })]);
    let admitted = 0;
    for (let i = 0; i < 30; i++) if (sync(pipeline.admit(req())).ok) admitted++;
    assert.ok(admitted >= 9 && admitted <= 11, `cold rate ≈ 30/3 per second, got ${admitted}`);
  });

  it('globalToLocal and global without Redis count threshold / live instances locally', () => {
    for (const limitMode of ['globalToLocal', 'global'] as const) {
      const { pipeline } = setup([rate(6, { limitMode })], { instanceCount: () => 3 });
      const results = [1, 2, 3].map(() => pipeline.admit(req())).map((a) => sync(a).ok);
      assert.deepEqual(results, [true, true, false], limitMode);
    }
    // Default instance count: the governance source's endpoints for this service.
    const governance = new StaticGovernance();
    governance.set({
      faultTolerance: [rate(4, { limitMode: 'globalToLocal' })],
      instances: [
        { metadata: { name: 'o1' }, spec: { service: 'orders', version: '1', address: '10.0.0.1:80' } },
        { metadata: { name: 'o2' }, spec: { service: 'orders', version: '1', address: '10.0.0.2:80' } },
      ],
    });
    const p = new InboundPipeline({ service: 'orders', governance, clock: new ManualClock(0) });
    assert.deepEqual([1, 2, 3].map(() => sync(p.admit(req())).ok), [true, true, false]);
  });
});

describe('InboundPipeline live rule changes', () => {
  it('applies a pushed rule on the next request, and keeps buckets of unchanged rules', () => {
    const other = faultTolerance('other', { rules: [{ name: 'c', targets: [{ service: 'orders', endpoints: ['/carts'] }], strategies: [{ type: 'rateLimit', threshold: 5 }] }] });
    const { pipeline, governance } = setup([rate(1), other]);
    assert.equal(sync(pipeline.admit(req())).ok, true);
    assert.equal(sync(pipeline.admit(req())).ok, false);
    // Unrelated change (the other resource): the drained bucket stays drained.
    governance.set({ faultTolerance: [rate(1), faultTolerance('other', { rules: [{ name: 'c', targets: [{ service: 'orders', endpoints: ['/carts'] }], strategies: [{ type: 'rateLimit', threshold: 6 }] }] })] });
    assert.equal(sync(pipeline.admit(req())).ok, false);
    // The rule itself changes: it takes effect at once.
    governance.set({ faultTolerance: [rate(3)] });
    assert.deepEqual([1, 2, 3, 4].map(() => sync(pipeline.admit(req())).ok), [true, true, true, false]);
    governance.set({ faultTolerance: [] });
    assert.equal(sync(pipeline.admit(req())).ok, true);
  });

  it('skips an invalid rule and applies the valid ones', () => {
    const bad = faultTolerance('protect', { rules: [{ name: 'rl', targets: [{ service: 'orders' }], strategies: [{ type: 'rateLimit', threshold: 1 }] }] });
    (bad.spec.rules as unknown[]).push({ name: 'broken', targets: [{ service: 'orders' }], strategies: [{ type: 'rateLimit', threshold: -1 }] });
    const { pipeline } = setup([bad]);
    assert.deepEqual([1, 2].map(() => sync(pipeline.admit(req())).ok), [true, false]);
  });
});

describe('InboundPipeline in one of several processes (a gateway\'s workers)', () => {
  const admitted = (p: InboundPipeline, n: number): number => Array.from({ length: n }, () => sync(p.admit(req()))).filter((a) => a.ok).length;

  it('counts 1/n of a local rate limit, and 1/n of the instance share of globalToLocal', () => {
    assert.equal(admitted(setup([rate(10)], { processes: 2 }).pipeline, 20), 5);
    assert.equal(admitted(setup([rate(12, { limitMode: 'globalToLocal' })], { processes: 2, instanceCount: () => 3 }).pipeline, 20), 2);
    assert.equal(admitted(setup([rate(10)]).pipeline, 20), 10, 'one process counts the whole threshold');
  });

  it('holds 1/n of an inbound concurrency limit and its queue, at least one slot', () => {
    const limit = (maxConcurrency: number, maxQueue?: number) =>
      faultTolerance('conc', { rules: [{ name: 'cl', targets: [{ service: 'orders' }], strategies: [{ type: 'concurrencyLimit', maxConcurrency, ...(maxQueue !== undefined ? { maxQueue } : {}) }] }] });
    const { pipeline } = setup([limit(8, 4)], { processes: 4 });
    const answers = Array.from({ length: 5 }, () => pipeline.admit(req()));
    assert.deepEqual(
      answers.map((a) => (a instanceof Promise ? 'queued' : a.ok ? 'in' : 'refused')),
      ['in', 'in', 'queued', 'refused', 'refused'],
    );
    assert.equal(admitted(setup([limit(2)], { processes: 4 }).pipeline, 3), 1, 'fewer slots than processes still leaves each one');
  });
});

describe('InboundPipeline concurrency limits', () => {
  const conc = (maxConcurrency: number, more: Record<string, unknown> = {}) =>
    faultTolerance('conc', { rules: [{ name: 'cl', targets: [{ service: 'orders' }], strategies: [{ type: 'concurrencyLimit', maxConcurrency, ...more }] }] });

  it('refuses with 429 concurrency_limited when full; release frees the slot exactly once', () => {
    const { pipeline } = setup([conc(1)]);
    const first = sync(pipeline.admit(req()));
    assert.equal(first.ok, true);
    const r = rejected(sync(pipeline.admit(req())));
    assert.deepEqual([r.status, r.code, JSON.parse(r.body).code], [429, 'concurrency_limited', 'concurrency_limited']);
    if (first.ok) {
      first.release();
      first.release();
    }
    const second = sync(pipeline.admit(req()));
    assert.equal(second.ok, true);
    assert.equal(sync(pipeline.admit(req())).ok, false, 'a double release must not widen the limit');
  });

  it('queues up to maxQueue; a release admits the oldest waiter, the queue times out on the wheel', async () => {
    const clock = new ManualClock(0);
    const wheel = new TimerWheel({ clock, schedule: () => ({}) });
    const { pipeline } = setup([conc(1, { maxQueue: 1, queueTimeoutMs: 100 })], { clock, wheel });
    const first = sync(pipeline.admit(req()));
    const queued = pipeline.admit(req());
    assert.ok(queued instanceof Promise);
    const full = await pipeline.admit(req());
    assert.equal(rejected(full).code, 'concurrency_limited');
    if (first.ok) first.release();
    const got = await queued;
    assert.equal(got.ok, true);
    const timedOut = pipeline.admit(req());
    clock.advance(150);
    wheel.advance();
    assert.equal(rejected(await timedOut).code, 'concurrency_limited');
  });

  it('a later strategy refusing gives back the slot an earlier one took', () => {
    const ft = faultTolerance('both', {
      rules: [
        { name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'concurrencyLimit', maxConcurrency: 1 }] },
        { name: 'z', targets: [{ service: 'orders' }], strategies: [{ type: 'rateLimit', threshold: 1 }] },
      ],
    });
    const { pipeline } = setup([ft]);
    const a = sync(pipeline.admit(req()));
    if (a.ok) a.release();
    assert.equal(rejected(sync(pipeline.admit(req()))).code, 'rate_limited');
    // concurrency_limited here would mean the refused request kept its slot.
    assert.equal(rejected(sync(pipeline.admit(req()))).code, 'rate_limited');
  });

  it('a changed maxConcurrency applies to the live limiter without forgetting who is in flight', () => {
    const { pipeline, governance } = setup([conc(1)]);
    const held = sync(pipeline.admit(req()));
    governance.set({ faultTolerance: [conc(2)] });
    const second = sync(pipeline.admit(req()));
    assert.equal(second.ok, true);
    assert.equal(sync(pipeline.admit(req())).ok, false, 'both holders still count');
    if (held.ok) held.release();
    assert.equal(sync(pipeline.admit(req())).ok, true);
  });
});

describe('InboundPipeline adaptive overload', () => {
  const signal = { eventLoopDelayMs: 0, cpuPercent: 0 };
  const overload = (more: Record<string, unknown>) =>
    faultTolerance('ovl', { rules: [{ name: 'ao', targets: [{ service: 'orders' }], strategies: [{ type: 'adaptiveOverload', triggerThreshold: 100, ...more }] }] });

  it('strategy none sheds every request while the metric is above the threshold', () => {
    const s: OverloadSignal & { eventLoopDelayMs: number } = { ...signal };
    const { pipeline } = setup([overload({ adaptiveStrategy: 'none' })], { overloadSignal: s });
    assert.equal(sync(pipeline.admit(req())).ok, true);
    s.eventLoopDelayMs = 150;
    const r = rejected(sync(pipeline.admit(req())));
    assert.deepEqual([r.status, r.code], [503, 'overloaded']);
    s.eventLoopDelayMs = 50;
    assert.equal(sync(pipeline.admit(req())).ok, true);
  });

  it('bbr sheds only when over the threshold AND in flight exceeds max throughput × min latency', () => {
    const s: OverloadSignal & { cpuPercent: number } = { ...signal };
    const { pipeline, clock } = setup([overload({ metricType: 'cpuPercentage', triggerThreshold: 80 })], { overloadSignal: s });
    // One 100 ms bucket with 10 completions of 20 ms each: capacity = ceil(10 × 20 / 100) = 2.
    const batch = Array.from({ length: 10 }, () => sync(pipeline.admit(req())));
    assert.ok(batch.every((a) => a.ok), 'below the threshold nothing is shed');
    clock.advance(20);
    for (const a of batch) if (a.ok) a.release();
    clock.advance(100); // that bucket is complete now
    s.cpuPercent = 95;
    const [a1, a2, a3] = [1, 2, 3].map(() => sync(pipeline.admit(req())));
    assert.deepEqual([a1?.ok, a2?.ok], [true, true]);
    assert.deepEqual(a3 && !a3.ok && [a3.status, a3.code], [503, 'overloaded']);
    // Back under the threshold, capacity still rules for a second after the last shed (no flapping) ...
    s.cpuPercent = 10;
    assert.equal(sync(pipeline.admit(req())).ok, false);
    clock.advance(1000);
    // ... then nothing is shed, whatever is in flight.
    assert.deepEqual([1, 2, 3].map(() => sync(pipeline.admit(req())).ok), [true, true, true]);
  });
});

describe('InboundPipeline fault injection', () => {
  const fi = (rule: Record<string, unknown>, expiresAt?: string) =>
    faultInjection('chaos', { ...(expiresAt === undefined ? {} : { expiresAt }), rules: [{ name: 'f', targets: [{ service: 'orders' }], ...rule }] });

  function withFaults(faults: ReturnType<typeof fi>[], extra: Partial<InboundOptions> = {}) {
    const governance = new StaticGovernance();
    governance.set({ faultInjections: faults });
    return { governance, pipeline: new InboundPipeline({ service: 'orders', governance, clock: new ManualClock(0), ...extra }) };
  }

  it('aborts by percentage with the configured status and fault_injected', () => {
    const { pipeline } = withFaults([fi({ abort: { statusCode: 503, percentage: 50 } })], { random: draws(0.3, 0.7) });
    const r = rejected(sync(pipeline.admit(req())));
    assert.deepEqual([r.status, r.code, JSON.parse(r.body).code], [503, 'fault_injected', 'fault_injected']);
    assert.equal(sync(pipeline.admit(req())).ok, true, '0.7 × 100 is not under 50');
  });

  it('serves the abort body as text when one is given', () => {
    const { pipeline } = withFaults([fi({ abort: { statusCode: 500, body: 'boom' } })]);
    const r = rejected(sync(pipeline.admit(req())));
    assert.deepEqual([r.status, r.body, r.contentType], [500, 'boom', 'text/plain; charset=utf-8']);
  });

  it('matches lanes ("base" = no lane) and headers', () => {
    const { pipeline } = withFaults([fi({ match: { lanes: ['gray'], headers: { 'x-chaos': { exact: 'on' } } }, abort: { statusCode: 500 } })]);
    const on = { 'x-chaos': 'on' };
    assert.equal(sync(pipeline.admit(req({ lane: 'gray', headers: on }))).ok, false);
    assert.equal(sync(pipeline.admit(req({ lane: 'gray' }))).ok, true);
    assert.equal(sync(pipeline.admit(req({ lane: undefined, headers: on }))).ok, true);
    const base = withFaults([fi({ match: { lanes: ['base'] }, abort: { statusCode: 500 } })]).pipeline;
    assert.equal(sync(base.admit(req())).ok, false);
    assert.equal(sync(base.admit(req({ lane: 'gray' }))).ok, true);
  });

  it('delays by percentage, adding to any throttle wait', () => {
    const { pipeline } = withFaults([fi({ delay: { fixedDelayMs: 300, percentage: 50 } })], { random: draws(0.1, 0.9) });
    const a = sync(pipeline.admit(req()));
    assert.deepEqual(a.ok && a.delayMs, 300);
    const b = sync(pipeline.admit(req()));
    assert.deepEqual(b.ok && b.delayMs, 0);
  });

  it('ignores an expired experiment, and one that expires while running', () => {
    const expired = withFaults([fi({ abort: { statusCode: 500 } }, '2000-01-01T00:00:00Z')]).pipeline;
    assert.equal(sync(expired.admit(req())).ok, true);
    const wall = new ManualClock(Date.parse('2030-01-01T00:00:00Z') - 1000);
    const soon = withFaults([fi({ abort: { statusCode: 500 } }, '2030-01-01T00:00:00Z')], { wallClock: wall }).pipeline;
    assert.equal(sync(soon.admit(req())).ok, false);
    wall.advance(1000);
    assert.equal(sync(soon.admit(req())).ok, true);
  });

  it('counts rejections by reason and stress', async () => {
    const metrics = new InboundMetrics();
    const { pipeline } = withFaults([fi({ abort: { statusCode: 500 } })], { metrics });
    assert.equal(sync(pipeline.admit(req())).ok, false);
    assert.equal(sync(pipeline.admit(req({ stress: true }))).ok, false);
    const text = await metrics.registry.metrics();
    assert.match(text, /plinth_inbound_rejections_total\{service="orders",reason="fault_injected",stress="false"\} 1/);
    assert.match(text, /plinth_inbound_rejections_total\{service="orders",reason="fault_injected",stress="true"\} 1/);
  });
});
