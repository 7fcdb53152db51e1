import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { StaticGovernance } from '../governance/source.js';
import { plinth } from '../middleware/node.js';
import { InboundPipeline, type Admission, type InboundRequest } from './pipeline.js';
import { faultTolerance } from './testkit.test.helpers.js';

const url = process.env.PLINTH_TEST_REDIS_URL;

const req: InboundRequest = { method: 'GET', path: '/orders', headers: {}, ip: undefined, caller: undefined, lane: undefined };

/** A cluster quota of 3 per minute (so nothing refills during the test); Redis gets a generous timeout on a shared machine. */
const quotaRule = faultTolerance('protect', {
  rules: [
    {
      name: 'quota',
      targets: [{ service: 'orders' }],
      strategies: [{ type: 'rateLimit', threshold: 3, statDurationSec: 60, limitMode: 'global', cluster: { redisTimeoutMs: 1000, fallback: 'reject' } }],
    },
  ],
});

describe('global quota without a redis option', () => {
  it('falls back to threshold / live instances counted locally, synchronously', () => {
    const governance = new StaticGovernance();
    governance.set({ faultTolerance: [quotaRule] });
    const p = new InboundPipeline({ service: 'orders', governance, instanceCount: () => 3 });
    const first = p.admit(req);
    assert.ok(!(first instanceof Promise));
    assert.equal(first.ok, true);
    const second = p.admit(req) as Admission;
    assert.equal(second.ok, false);
    assert.equal(!second.ok && second.code, 'rate_limited');
  });
});

if (!url) {
  if (process.env.CI === 'true') {
    void it('global quota with Redis', () => {
      assert.fail('CI=true but PLINTH_TEST_REDIS_URL is not set: the Redis quota cannot be tested');
    });
  } else {
    const reason = 'PLINTH_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379)';
    console.log(`# skipping the global quota tests: ${reason}`);
    void it('global quota with Redis', { skip: reason }, () => {});
  }
} else {
  describe('global quota with Redis', () => {
    let redis: Redis;
    const prefix = `plinth:test:${randomBytes(6).toString('hex')}:`;

    before(() => {
      redis = new Redis(url, { maxRetriesPerRequest: 1 });
    });
    after(async () => {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
      await redis.quit();
    });

    it('shares one quota between instances and answers 429 with the quota headers', async () => {
      const governance = new StaticGovernance();
      governance.set({ faultTolerance: [quotaRule] });
      const a = new InboundPipeline({ service: 'orders', governance, redis, redisKeyPrefix: `${prefix}shared:` });
      const b = new InboundPipeline({ service: 'orders', governance, redis, redisKeyPrefix: `${prefix}shared:` });
      const pending = a.admit(req);
      assert.ok(pending instanceof Promise, 'a Redis round trip is asynchronous');
      const results = [await pending, await b.admit(req), await a.admit(req)];
      assert.deepEqual(results.map((r) => r.ok), [true, true, true]);
      const refused = await b.admit(req);
      assert.equal(refused.ok, false);
      if (!refused.ok) {
        assert.deepEqual([refused.status, refused.code], [429, 'rate_limited']);
        assert.equal(refused.headers['RateLimit-Policy'], '"quota";q=3;w=60');
        assert.ok(Number(refused.headers['Retry-After']) >= 1);
      }
      assert.ok((await redis.keys(`${prefix}shared:*`)).length === 1, 'one key for the rule, under the prefix');
    });

    it('enforces it through the HTTP middleware', async () => {
      const governance = new StaticGovernance();
      governance.set({ faultTolerance: [quotaRule] });
      const listener = plinth((_req, res) => res.end('ok'), { service: 'orders', governance, redis, redisKeyPrefix: `${prefix}http:` });
      const server = createServer(listener).listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      try {
        const statuses: number[] = [];
        for (let i = 0; i < 4; i++) statuses.push((await fetch(`${base}/orders`)).status);
        assert.deepEqual(statuses, [200, 200, 200, 429]);
      } finally {
        await new Promise((r) => server.close(r));
      }
    });
  });
}
