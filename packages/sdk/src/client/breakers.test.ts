import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CircuitBreakerStrategy } from '@plinth/core';
import { EndpointSet } from '../balancing/endpoints.js';
import { ManualClock } from '../ratelimit/clock.js';
import { BreakerGroup } from './breakers.js';

const setOf = (...ids: string[]) => EndpointSet.fromInstances(ids.map((id) => [id, { service: 'orders', version: '1.0.0', address: `${id}.invalid:80` }] as const));

describe('BreakerGroup', () => {
  it('keeps one breaker per instance, and a new one for an instance that left and came back', () => {
    const strategy = CircuitBreakerStrategy.parse({ type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 1 });
    const g = new BreakerGroup('r', strategy, undefined, new ManualClock(0));
    const a = g.forInstance('a');
    assert.equal(g.forInstance('b') === a, false);
    assert.equal(g.forInstance('a'), a, 'the same breaker on every lookup');
    a.tryAcquire();
    a.onFailure(1);
    assert.equal(g.forInstance('a').state.kind, 'open');
    g.retain(setOf('b'));
    g.retain(setOf('a', 'b'));
    assert.equal(g.forInstance('a').state.kind, 'closed', 'the open breaker left with the instance');
  });
});
