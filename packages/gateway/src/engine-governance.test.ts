import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FaultToleranceSpec, type RetryStrategy } from '@plinth/core';
import { StaticGovernance } from '@plinth/sdk';
import { RouteRetryGovernance } from './engine-governance.js';
import { StaticFeed } from './feed.js';
import { LiveRoutes } from './routes.js';
import { resource, route } from './testkit.test.helpers.js';

const ft = (name: string, spec: unknown) => resource('FaultTolerance', name, FaultToleranceSpec.parse(spec));
const anon = { auth: { mode: 'anonymous' } };

function routeRetry(g: RouteRetryGovernance, service: string): RetryStrategy | undefined {
  const synthetic = g.faultTolerance()[0];
  if (synthetic?.metadata.name !== 'gateway-routes') return undefined;
  const rule = synthetic.spec.rules.find((r) => r.targets.some((t) => t.service === service));
  return rule?.strategies.find((s): s is RetryStrategy => s.type === 'retry');
}

describe('RouteRetryGovernance', () => {
  it("turns route retries into retry rules for the gateway only, keeping the callee's own backoff and budget", () => {
    const governance = new StaticGovernance();
    governance.set({
      faultTolerance: [
        ft('b-orders', { rules: [{ name: 'r', targets: [{ service: 'orders' }], strategies: [{ type: 'retry', backoffBaseMs: 7, backoffCapMs: 70, budgetPercent: 5, minRetriesPerSecond: 1 }] }] }),
        // Sorts first, but is for another caller: it does not shape the gateway's budget.
        ft('a-orders', { rules: [{ name: 'r', targets: [{ service: 'orders', callers: ['billing'] }], strategies: [{ type: 'retry', budgetPercent: 50 }] }] }),
      ],
    });
    const feed = new StaticFeed([
      route('orders', { ...anon, match: { path: { prefix: '/api/orders' }, methods: ['GET', 'PUT'] }, service: 'orders', rewrite: { prefix: '/' }, retries: { attempts: 4, on: [503] } }),
      route('users', { ...anon, match: { path: { template: '/users/:id' } }, service: 'users', retries: { attempts: 2 } }),
      route('plain', { ...anon, match: { path: { prefix: '/plain' } }, service: 'plain' }),
    ]);
    const g = new RouteRetryGovernance(governance, new LiveRoutes(feed), 'gateway');

    const [synthetic, ...rest] = g.faultTolerance();
    assert.equal(rest.length, 2, 'the real resources follow, untouched');
    assert.deepEqual(synthetic!.spec.rules[0]!.targets, [{ service: 'orders', endpoints: ['/**'], methods: ['GET', 'PUT'], callers: ['gateway'] }]);
    assert.deepEqual(routeRetry(g, 'orders'), { type: 'retry', maxAttempts: 4, retryOn: [503], backoffBaseMs: 7, backoffCapMs: 70, budgetPercent: 5, minRetriesPerSecond: 1 });
    assert.deepEqual(synthetic!.spec.rules[1]!.targets[0]!.endpoints, ['/users/*']);
    assert.deepEqual(routeRetry(g, 'users'), { type: 'retry', maxAttempts: 2, retryOn: [502, 503, 504], backoffBaseMs: 25, backoffCapMs: 1000, budgetPercent: 20, minRetriesPerSecond: 10 });
    assert.equal(synthetic!.spec.rules.length, 2, 'a route without retries adds no rule');
  });

  it('moves its version when the routes change, so the engine recompiles', () => {
    const governance = new StaticGovernance();
    const feed = new StaticFeed();
    const g = new RouteRetryGovernance(governance, new LiveRoutes(feed), 'gateway');
    const v0 = g.version;
    assert.equal(routeRetry(g, 'orders'), undefined);
    feed.set([route('orders', { ...anon, match: { path: { exact: '/o' } }, service: 'orders', retries: { attempts: 3 } })]);
    assert.notEqual(g.version, v0);
    assert.equal(routeRetry(g, 'orders')?.maxAttempts, 3);
  });
});
