/**
 * The policy core without HTTP: the gateway drives the same engine with its own transport, so the engine
 * must work with any `send`. Upstream behaviour here is a function of the endpoint.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../balancing/endpoints.js';
import { ManualClock } from '../ratelimit/clock.js';
import { CallError } from './errors.js';
import { OutboundEngine, outboundCall, type EngineResult, type OutboundCall, type OutboundMetrics, type SendCallback, type TryContext, type TryOutcome } from './engine.js';
import { ft, governance, RecordingWheel, tp } from './testkit.test.helpers.js';

const call = (o: Partial<OutboundCall> = {}): OutboundCall => outboundCall({ method: 'GET', path: '/', ...o });

const answer = (status: number): TryOutcome<number> => ({ status, retryAfter: undefined, response: status, error: undefined, timedOut: false });
const inst = (name: string) => ({ metadata: { name }, spec: { service: 'orders', version: '1.0.0', address: `${name}.invalid:80` } });

describe('OutboundEngine', () => {
  it('runs retries, per-try deadlines and breakers over any transport', async () => {
    const clock = new ManualClock(1000);
    const wheel = new RecordingWheel({ clock });
    const gov = governance({
      instances: [inst('a'), inst('b')],
      trafficPolicies: [tp('lb', { loadBalancing: [{ service: 'orders', policy: 'roundRobin' }] })],
      faultTolerance: [
        ft('r', {
          rules: [{ name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'retry' }, { type: 'timeout', timeoutMs: 200 }, { type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 1 }] }],
        }),
      ],
    });
    const engine = new OutboundEngine({ self: 'gw', governance: gov, clock, wheel, random: () => 0 });
    const tries: TryContext[] = [];
    const send = (t: TryContext): Promise<TryOutcome<number>> => {
      tries.push(t);
      clock.advance(10);
      return Promise.resolve(answer(t.endpoint.id === 'a' ? 502 : 200));
    };
    const r = await engine.call('orders', call(), send);
    assert.equal(r.kind, 'response');
    assert.deepEqual(
      tries.map((t) => [t.endpoint.id, t.attempt, t.deadlineAt, t.remainingMs]),
      [
        ['a', 1, 1200, 200],
        ['b', 2, 1210, 200],
      ],
      'each try gets the per-try timeout from its own start',
    );
    assert.equal(engine.inspect('orders').breakers.find((b) => b.upstream === 'a')?.state.kind, 'open');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const x = await engine.call('orders', call(), (t) => (ids.push(t.endpoint.id), send(t)));
      assert.equal(x.kind === 'response' && (x.endpoint as Endpoint).id, 'b');
    }
    assert.deepEqual(ids, ['b', 'b', 'b'], 'the open instance breaker keeps calls away from a');
  });

  it('tries a call marked not retryable once, with the same breakers and balancer as every other call', async () => {
    const clock = new ManualClock(1000);
    const wheel = new RecordingWheel({ clock });
    const gov = governance({
      instances: [inst('a'), inst('b'), inst('c')],
      trafficPolicies: [tp('lb', { loadBalancing: [{ service: 'orders', policy: 'roundRobin' }] })],
      faultTolerance: [
        ft('r', {
          rules: [{ name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'retry', maxAttempts: 3 }, { type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 1 }] }],
        }),
      ],
    });
    let retries = 0;
    const metrics: OutboundMetrics = { request: () => {}, retry: () => void retries++, ejection: () => {}, breakerState: () => {} };
    const engine = new OutboundEngine({ self: 'gw', governance: gov, clock, wheel, random: () => 0, metrics });
    const send = (ids: string[]) => (t: TryContext): Promise<TryOutcome<number>> => {
      ids.push(t.endpoint.id);
      return Promise.resolve(answer(t.endpoint.id === 'c' ? 200 : 503));
    };

    const once: string[] = [];
    const r = await engine.call('orders', call({ method: 'PUT', retryable: false }), send(once));
    assert.deepEqual(once, ['a'], 'one try, although the rule allows three and PUT is idempotent');
    assert.equal(r.kind === 'response' && r.status, 503, 'the failed answer is the answer');
    assert.equal(r.attempts, 1);
    assert.equal(retries, 0);
    assert.equal(engine.inspect('orders').breakers.find((b) => b.upstream === 'a')?.state.kind, 'open', 'its failure counts for the shared breaker');

    const retried: string[] = [];
    const x = await engine.call('orders', call({ method: 'PUT' }), send(retried));
    assert.deepEqual(retried, ['b', 'c'], 'the next call skips the instance the unretryable call opened, and the balancer goes on from where it was');
    assert.equal(x.kind === 'response' && x.status, 200);
    assert.equal(retries, 1, 'calls without the flag are still retried');
  });

  it('asks a streaming body before each retry whether it can still be sent again', async () => {
    const clock = new ManualClock(1000);
    const wheel = new RecordingWheel({ clock });
    const gov = governance({
      instances: [inst('a'), inst('b'), inst('c')],
      trafficPolicies: [tp('lb', { loadBalancing: [{ service: 'orders', policy: 'roundRobin' }] })],
      faultTolerance: [ft('r', { rules: [{ name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'retry', maxAttempts: 3 }] }] })],
    });
    const engine = new OutboundEngine({ self: 'gw', governance: gov, clock, wheel, random: () => 0 });
    // Kept while the first two tries run; the second try's upload passes the limit of what is kept.
    const body = { replayable: true };
    const ids: string[] = [];
    const r = await engine.call('orders', call({ method: 'PUT', replay: body }), (t) => {
      ids.push(t.endpoint.id);
      if (ids.length === 2) body.replayable = false;
      return Promise.resolve(answer(503));
    });
    assert.deepEqual(ids, ['a', 'b'], 'retried while the body could be sent again, not after');
    assert.equal(r.kind === 'response' && r.attempts, 2);
  });
});

describe('OutboundEngine: answers whose health comes at their end', () => {
  const setup = (threshold: number) => {
    const clock = new ManualClock(1000);
    const wheel = new RecordingWheel({ clock });
    const gov = governance({
      instances: [inst('a')],
      faultTolerance: [
        ft('r', {
          rules: [{ name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'retry', maxAttempts: 3 }, { type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold, recoveryTimeoutMs: 1000 }] }],
        }),
      ],
    });
    const engine = new OutboundEngine({ self: 'gw', governance: gov, clock, wheel, random: () => 0 });
    const state = () => engine.inspect('orders').breakers.find((b) => b.upstream === 'a')?.state.kind;
    const streamed = (): Promise<EngineResult<number>> => engine.call('orders', call({ method: 'PUT' }), () => Promise.resolve({ ...answer(200), healthAtEnd: true }));
    return { clock, engine, state, streamed };
  };

  it('judges nothing at the head: the breaker learns the outcome from settle, and a failure there is never retried', async () => {
    const { state, streamed } = setup(2);
    const first = await streamed();
    assert.equal(first.kind === 'response' && first.attempts, 1);
    const late = first.kind === 'response' ? first.late : undefined;
    assert.ok(late, 'the result carries the handle');
    late.settle(503);
    late.settle(200);
    assert.equal(state(), 'closed', 'one failure so far, the second settle ignored');
    const second = await streamed();
    assert.equal(second.kind === 'response' && second.attempts, 1, 'a head that started well is the answer, whatever its end');
    (second.kind === 'response' ? second.late : undefined)!.settle(0);
    assert.equal(state(), 'open', 'two failures in a row, both known only at their ends');
  });

  it('gives a half-open probe back when the answer was not seen to its end, and closes on a good end', async () => {
    const { clock, state, streamed } = setup(1);
    const opened = await streamed();
    (opened.kind === 'response' ? opened.late : undefined)!.settle(503);
    assert.equal(state(), 'open');
    clock.advance(1000);
    const probe = await streamed();
    assert.equal(probe.kind, 'response', 'the probe goes through');
    assert.equal(state(), 'halfOpen');
    (probe.kind === 'response' ? probe.late : undefined)!.settle(undefined);
    assert.equal(state(), 'halfOpen');
    const again = await streamed();
    assert.equal(again.kind, 'response', 'the probe given back lets another through, instead of holding the breaker half-open for good');
    (again.kind === 'response' ? again.late : undefined)!.settle(200);
    assert.equal(state(), 'closed');
  });

  it('judges a failed head at once, as any answer', async () => {
    const { engine, state } = setup(1);
    const r = await engine.call('orders', call(), () => Promise.resolve({ ...answer(503), healthAtEnd: true }));
    assert.equal(r.kind === 'response' && r.late, undefined, 'nothing owed for a head that failed');
    assert.equal(state(), 'open');
  });
});

describe('OutboundEngine per-call retry', () => {
  const setup = (faultTolerance: ReturnType<typeof ft>[]) => {
    const clock = new ManualClock(1000);
    const gov = governance({ instances: [inst('a'), inst('b'), inst('c')], trafficPolicies: [tp('lb', { loadBalancing: [{ service: 'orders', policy: 'roundRobin' }] })], faultTolerance });
    return new OutboundEngine({ self: 'gw', governance: gov, clock, wheel: new RecordingWheel({ clock }), random: () => 0 });
  };
  const failing = (status: number, ids: string[]) => (t: TryContext): Promise<TryOutcome<number>> => {
    ids.push(t.endpoint.id);
    return Promise.resolve(answer(status));
  };
  const NO_RETRY = Object.freeze({ maxAttempts: 1, retryOn: [503] });
  const RETRY_409 = Object.freeze({ maxAttempts: 3, retryOn: [409] });

  it("uses the call's tries and statuses instead of the rule's, and the rule's where the call gives none", async () => {
    const engine = setup([ft('r', { rules: [{ name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'retry', maxAttempts: 3, retryOn: [503] }] }] })]);
    const byRule: string[] = [];
    await engine.call('orders', call(), failing(503, byRule));
    assert.equal(byRule.length, 3, 'the rule: three tries on 503');
    const once: string[] = [];
    await engine.call('orders', call({ retry: NO_RETRY }), failing(503, once));
    assert.equal(once.length, 1, 'the call: one try');
    const conflicts: string[] = [];
    const r = await engine.call('orders', call({ retry: RETRY_409 }), failing(409, conflicts));
    assert.equal(conflicts.length, 3, 'the call retries a status the rule does not');
    assert.equal(r.attempts, 3);
  });

  it('retries a callee that has no retry rule, under the default budget, and only idempotent calls', async () => {
    const engine = setup([]);
    const tries: string[] = [];
    await engine.call('orders', call({ retry: RETRY_409 }), failing(409, tries));
    assert.equal(tries.length, 3);
    const post: string[] = [];
    await engine.call('orders', call({ method: 'POST', retry: RETRY_409 }), failing(409, post));
    assert.equal(post.length, 1, 'a POST without an Idempotency-Key is never retried');
    // The default budget (20 % of first tries, at least 10 retries a second) bounds retries in an outage.
    let retried = 0;
    for (let i = 0; i < 200; i++) {
      const ids: string[] = [];
      await engine.call('orders', call({ retry: RETRY_409 }), failing(409, ids));
      retried += ids.length - 1;
    }
    assert.ok(retried <= 0.2 * 200 + 10 * 10, `retries ${retried} stay within the budget, far below the 400 an unbudgeted policy would make`);
  });
});

describe('OutboundEngine.dispatch (callback transports)', () => {
  const rules = ft('r', {
    rules: [{ name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'retry' }, { type: 'timeout', timeoutMs: 200 }, { type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 1 }] }],
  });
  const setup = () => {
    const clock = new ManualClock(1000);
    const wheel = new RecordingWheel({ clock });
    const gov = governance({ instances: [inst('a'), inst('b')], trafficPolicies: [tp('lb', { loadBalancing: [{ service: 'orders', policy: 'roundRobin' }] })], faultTolerance: [rules] });
    const seen = { requests: [] as string[], retries: 0 };
    const metrics: OutboundMetrics = { request: (_c, cls) => void seen.requests.push(cls), retry: () => void seen.retries++, ejection: () => {}, breakerState: () => {} };
    return { clock, seen, engine: new OutboundEngine({ self: 'gw', governance: gov, clock, wheel, random: () => 0, metrics }) };
  };
  const describeResult = (r: EngineResult<number>) => (r.kind === 'response' ? `${r.endpoint.id} ${r.status} after ${r.attempts}` : `fallback ${r.reason}`);

  it('runs the same policies as call, reports taken synchronously or later, once per try', async () => {
    const { clock, seen, engine } = setup();
    const tries: unknown[][] = [];
    const send: SendCallback<number, string> = (t, arg, receiver) => {
      tries.push([arg, t.endpoint.id, t.attempt, t.deadlineAt, t.remainingMs, t.sentAt]);
      clock.advance(10);
      if (t.attempt === 1) {
        receiver.tryDone(answer(502)); // from inside send
        receiver.tryDone(answer(200)); // a transport's second report of a try changes nothing
      } else {
        queueMicrotask(() => receiver.tryDone(answer(200)));
      }
    };
    assert.equal(await engine.dispatch('orders', call(), send, 'state', describeResult), 'b 200 after 2');
    assert.deepEqual(tries, [
      ['state', 'a', 1, 1200, 200, 1000],
      ['state', 'b', 2, 1210, 200, 1010],
    ]);
    assert.deepEqual(seen, { requests: ['2xx'], retries: 1 });
    assert.equal(engine.inspect('orders').breakers.find((b) => b.upstream === 'a')?.state.kind, 'open', 'the 502 counted for a');
  });

  it('rejects with a CallError when no try answers, and with what the mapping throws', async () => {
    const down = setup();
    const refused: SendCallback<number, undefined> = (_t, _a, receiver) => receiver.tryDone({ status: 0, retryAfter: undefined, response: undefined, error: new Error('refused'), timedOut: false });
    await assert.rejects(down.engine.dispatch('orders', call(), refused, undefined, describeResult), (e: unknown) => e instanceof CallError && e.code === 'upstream_error');
    assert.deepEqual(down.seen.requests, ['5xx'], 'counted once, as the error the call ended with');

    const up = setup();
    const ok: SendCallback<number, undefined> = (_t, _a, receiver) => receiver.tryDone(answer(200));
    const boom = new Error('mapping failed');
    await assert.rejects(
      up.engine.dispatch('orders', call(), ok, undefined, () => {
        throw boom;
      }),
      (e: unknown) => e === boom,
    );
    assert.deepEqual(up.seen.requests, ['error']);
  });

  it('gives a promise transport a TryContext of its own for every try, which it may keep', async () => {
    const { engine } = setup();
    const kept: TryContext[] = [];
    const send = (t: TryContext): Promise<TryOutcome<number>> => {
      kept.push(t);
      return Promise.resolve(answer(t.attempt === 1 ? 503 : 200));
    };
    await engine.call('orders', call(), send);
    assert.deepEqual(
      kept.map((t) => [t.endpoint.id, t.attempt]),
      [
        ['a', 1],
        ['b', 2],
      ],
    );
  });
});
