import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisIdempotencyStore } from './redis-store.js';
import { requireService, storeContract } from './store-contract.test.helpers.js';

const url = requireService('PLINTH_TEST_REDIS_URL', 'Redis', 'redis://127.0.0.1:6379');

if (url) {
  storeContract('redis', async () => {
    const prefix = `plinth-test:idem:${randomBytes(6).toString('hex')}:`;
    const a = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2 });
    const b = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2 });
    await Promise.all([a.connect(), b.connect()]);
    return {
      store: new RedisIdempotencyStore({ client: a, prefix }),
      peer: new RedisIdempotencyStore({ client: b, prefix }),
      cleanup: async () => {
        const keys: string[] = [];
        for await (const batch of a.scanStream({ match: `${prefix}*`, count: 500 }) as AsyncIterable<string[]>) keys.push(...batch);
        if (keys.length) await a.del(...keys);
        await Promise.all([a.quit(), b.quit()]);
      },
    };
  });
}
