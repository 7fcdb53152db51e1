/**
 * The policy core without HTTP: the gateway drives the same engine with its own transport, so the engine
 * must work with any `send`. Upstream behaviour here is a function of the endpoint.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../balancing/endpoints.js';
import { ManualClock } from '../ratelimit/clock.js';
import { OutboundEngine, type OutboundCall, type OutboundMetrics, type TryContext, type TryOutcome } from './engine.js';
import { ft, governance, RecordingWheel, tp } from './testkit.test.helpers.js';

const call = (o: Partial<OutboundCall> = {}): OutboundCall => ({
  method: 'GET',
  path: '/',
  headers: {},
  hasIdempotencyKey: false,
  hashKey: undefined,
  timeoutMs: undefined,
  lane: undefined,
  baggage: undefined,
  deadlineAt: undefined,
  stress: false,
  ...o,
});

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
});
