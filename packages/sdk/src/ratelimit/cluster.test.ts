import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Redis, type RedisOptions } from 'ioredis';
import { ManualClock } from './clock.js';
import { ClusterQuota, PROBE_INTERVAL_MS, type ClusterQuotaOptions } from './cluster.js';

const url = process.env.PLINTH_TEST_REDIS_URL;
const prefix = `plinth:test:ratelimit:${randomBytes(6).toString('hex')}`;
const keys: string[] = [];
const newKey = (): string => {
  keys.push(`${prefix}:${keys.length + 1}`);
  return keys.at(-1)!;
};

/** Fail fast instead of queueing or retrying: what a quota client on a request path should do. */
const failFast: RedisOptions = { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 20 };

/**
 * A TCP proxy in front of the real Redis that can hold Redis' answers (a slow server: commands still run,
 * answers arrive late) or go away entirely (a dead server), without touching the server others use.
 */
class RedisProxy {
  bytesFromClients = 0;
  private held: Array<[Socket, Buffer]> | undefined;
  private readonly sockets = new Set<Socket>();
  private waiters: Array<() => void> = [];
  private readonly server: Server;
  port = 0;

  constructor(private readonly upstream: URL) {
    this.server = createServer((client) => {
      const up = connect(Number(upstream.port || 6379), upstream.hostname);
      this.sockets.add(client).add(up);
      const close = (): void => {
        client.destroy();
        up.destroy();
        this.sockets.delete(client);
        this.sockets.delete(up);
      };
      client.on('data', (d) => {
        this.bytesFromClients += d.length;
        up.write(d);
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      });
      up.on('data', (d) => (this.held ? this.held.push([client, d]) : client.write(d)));
      for (const s of [client, up]) {
        s.on('error', close);
        s.on('close', close);
      }
    });
  }

  async start(): Promise<void> {
    this.server.listen(this.port, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** Stop listening and cut every connection: Redis is gone. */
  async stop(): Promise<void> {
    const closed = new Promise((resolve) => this.server.close(resolve));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** Resolves when the next bytes from a client reach the proxy (a command on its way to Redis). */
  clientData(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  hold(): void {
    this.held ??= [];
  }

  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const [client, d] of held) if (!client.destroyed) client.write(d);
  }

  /** The same Redis URL, through this proxy. */
  url(): string {
    const u = new URL(this.upstream);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }
}

async function ready(r: Redis): Promise<void> {
  if (r.status !== 'ready') await once(r, 'ready');
}

/** The server's clock, in µs: the only clock the quota goes by. */
async function serverTimeUs(r: Redis): Promise<number> {
  const [s, us] = await r.time();
  return Number(s) * 1e6 + Number(us);
}

if (!url) {
  if (process.env.CI === 'true') {
    void it('ClusterQuota against Redis', () => {
      assert.fail('CI=true but PLINTH_TEST_REDIS_URL is not set: the cluster quota cannot be tested');
    });
  } else {
    const reason = 'PLINTH_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379)';
    console.log(`# skipping the ClusterQuota tests: ${reason}`);
    void it('ClusterQuota against Redis', { skip: reason }, () => {});
  }
} else {
  const clients: Redis[] = [];
  const client = (target: string, opts: RedisOptions = {}): Redis => {
    const r = new Redis(target, opts);
    r.on('error', () => {}); // connection errors are the point of several tests; decisions are asserted instead
    clients.push(r);
    return r;
  };
  let admin: Redis;

  before(async () => {
    admin = client(url);
    await admin.ping();
  });

  after(async () => {
    if (keys.length > 0) await admin.del(...keys);
    for (const r of clients) r.disconnect();
  });

  // A manual clock by default: the Redis timeout then never fires on its own, however loaded the machine.
  const quotaOn = (redis: Redis, opts: Partial<ClusterQuotaOptions> = {}): ClusterQuota =>
    new ClusterQuota({ redis, key: newKey(), rate: 10, clock: new ManualClock(), ...opts });

  describe('ClusterQuota on Redis', { timeout: 30_000 }, () => {
    it('admits the burst at once, then refuses with the time to the next permit (GCRA)', async () => {
      const redis = client(url);
      // 0.1/s: one permit per 10 s, so the test's own pace cannot refill anything.
      const q = quotaOn(redis, { rate: 0.1, burst: 3 });
      const seen = [];
      for (let i = 0; i < 4; i++) seen.push(await q.acquire());
      assert.deepEqual(seen.map((d) => [d.allowed, d.remaining, d.source]), [
        [true, 2, 'redis'],
        [true, 1, 'redis'],
        [true, 0, 'redis'],
        [false, 0, 'redis'],
      ]);
      const refused = seen[3]!;
      assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= 10_000, `retry after ${refused.retryAfterMs} ms`);
      assert.equal((await q.acquire(4)).retryAfterMs, Infinity, 'more than the burst can never pass');
      assert.equal(q.degraded, false);
    });

    it('spends several permits at once and keeps the key only for its emission window', async () => {
      const redis = client(url);
      const q = quotaOn(redis, { rate: 0.1, burst: 5 });
      const d = await q.acquire(3);
      assert.deepEqual([d.allowed, d.remaining], [true, 2]);
      const ttl = await admin.pttl(q.key);
      // The stored arrival time is 30 s ahead of the server's now; once reached the key means "full" anyway.
      assert.ok(ttl > 0 && ttl <= 30_000, `pttl ${ttl}`);
      assert.equal((await q.acquire(3)).allowed, false, 'only 2 left');
      assert.ok((await admin.pttl(q.key)) <= ttl, 'a refusal writes nothing');
    });

    it('holds cluster-wide when two OS processes hammer one key', async () => {
      const key = newKey();
      const rate = 50;
      const burst = 50;
      const script = fileURLToPath(new URL('./cluster.test.hammer.js', import.meta.url));
      const env = { ...process.env, REDIS_URL: url, KEY: key, RATE: String(rate), BURST: String(burst), DURATION_MS: '1000', MAX_CALLS: '5000' };
      const children: ChildProcessWithoutNullStreams[] = [];
      try {
        const outputs: AsyncIterator<string>[] = [];
        const stderr = ['', ''];
        const exits = [];
        for (let i = 0; i < 2; i++) {
          const c = spawn(process.execPath, [script], { env, stdio: ['pipe', 'pipe', 'pipe'] });
          c.stderr.on('data', (d: Buffer) => (stderr[i] += d.toString()));
          exits.push(once(c, 'exit'));
          children.push(c);
          outputs.push(createInterface({ input: c.stdout })[Symbol.asyncIterator]());
        }
        const line = async (i: number): Promise<string> => {
          const next = await outputs[i]!.next();
          if (next.done === true) assert.fail(`hammer ${i} ended early: ${stderr[i]}`);
          return next.value as string;
        };
        for (let i = 0; i < 2; i++) assert.equal(await line(i), 'ready');
        const startUs = await serverTimeUs(admin);
        for (const c of children) c.stdin.write('go\n');
        const counts = [];
        for (let i = 0; i < 2; i++) counts.push(JSON.parse(await line(i)) as { allowed: number; refused: number; fallback: number });
        const spanS = ((await serverTimeUs(admin)) - startUs) / 1e6;

        const admitted = counts.reduce((n, c) => n + c.allowed, 0);
        const bound = burst + rate * spanS;
        // GCRA on the server's clock: in any span S at most burst + rate · S, however many callers.
        assert.ok(admitted <= bound + 1, `admitted ${admitted} > ${bound.toFixed(1)} in ${spanS.toFixed(2)} s: ${JSON.stringify(counts)}`);
        assert.ok(admitted >= burst, `admitted ${admitted}: ${JSON.stringify(counts)}`);
        for (const c of counts) {
          assert.ok(c.allowed > 0, `both processes were served: ${JSON.stringify(counts)}`);
          assert.ok(c.refused > 0, `and both were refused past the quota: ${JSON.stringify(counts)}`);
        }
        for (const [code] of await Promise.all(exits)) assert.equal(code, 0);
      } finally {
        for (const c of children) if (c.exitCode === null) c.kill();
      }
    });
  });

  describe('ClusterQuota when Redis is unreachable', () => {
    // Nothing listens on port 1; with no offline queue every command fails at once.
    const unreachable = (): Redis => client('redis://127.0.0.1:1', failFast);

    it("'local' admits this instance's share of the quota", async () => {
      const clock = new ManualClock();
      const q = quotaOn(unreachable(), { rate: 10, burst: 10, localShare: () => 2, clock });
      const decisions = [];
      for (let i = 0; i < 6; i++) decisions.push(await q.acquire());
      assert.deepEqual(decisions.map((d) => [d.allowed, d.source]), [
        ...Array.from({ length: 5 }, () => [true, 'local']),
        [false, 'local'],
      ]);
      assert.equal(decisions[5]!.retryAfterMs, 200, 'at 10/s over 2 instances, one permit per 200 ms');
      assert.equal(q.degraded, true);
    });

    it("'local' follows a changing instance count", async () => {
      const clock = new ManualClock();
      let instances = 5;
      const q = quotaOn(unreachable(), { rate: 10, burst: 10, localShare: () => instances, clock });
      let admitted = 0;
      for (let i = 0; i < 10; i++) if ((await q.acquire()).allowed) admitted++;
      assert.equal(admitted, 2);
      instances = 1;
      admitted = 0;
      for (let i = 0; i < 20; i++) if ((await q.acquire()).allowed) admitted++;
      assert.equal(admitted, 10);
    });

    it("'allow' admits everything and 'reject' nothing, each saying so", async () => {
      const allow = quotaOn(unreachable(), { fallback: 'allow', clock: new ManualClock() });
      const reject = quotaOn(unreachable(), { fallback: 'reject', clock: new ManualClock() });
      for (let i = 0; i < 30; i++) {
        const a = await allow.acquire();
        assert.deepEqual([a.allowed, a.source], [true, 'allow']);
        const r = await reject.acquire();
        assert.deepEqual([r.allowed, r.source], [false, 'reject']);
        assert.ok(r.retryAfterMs >= 1 && r.retryAfterMs <= PROBE_INTERVAL_MS);
      }
    });

    it('reports the Redis error', async () => {
      const errors: unknown[] = [];
      const q = quotaOn(unreachable(), { clock: new ManualClock(), onError: (e) => errors.push(e) });
      await q.acquire();
      assert.equal(errors.length, 1);
      assert.ok(errors[0] instanceof Error);
    });
  });

  // A hung await (a held answer never released) must fail the test rather than stall the run.
  describe('ClusterQuota when Redis is slow or goes away', { timeout: 20_000 }, () => {
    let proxy: RedisProxy;

    before(async () => {
      proxy = new RedisProxy(new URL(url));
      await proxy.start();
    });

    after(async () => {
      proxy.release();
      await proxy.stop();
    });

    it('answers with the fallback once redisTimeoutMs passes, then skips Redis until the next probe', async () => {
      const redis = client(proxy.url(), failFast);
      await ready(redis);
      const clock = new ManualClock();
      const q = quotaOn(redis, { rate: 10, burst: 10, localShare: () => 2, clock });
      assert.equal((await q.acquire()).source, 'redis');

      proxy.hold();
      try {
        const slowSent = proxy.clientData();
        const slow = q.acquire();
        await slowSent; // on its way: from here on the count only grows if Redis is asked again
        clock.advance(19);
        clock.advance(1); // 20 ms: the shared sweep answers it
        const d = await slow;
        assert.deepEqual([d.allowed, d.source], [true, 'local']);
        assert.equal(q.degraded, true);

        const sent = proxy.bytesFromClients;
        for (let i = 0; i < 4; i++) assert.deepEqual([(await q.acquire()).allowed, q.degraded], [true, true]);
        const over = await q.acquire();
        assert.deepEqual([over.allowed, over.source], [false, 'local'], 'the local share is 5 of the 10');
        clock.advance(PROBE_INTERVAL_MS - 1);
        assert.equal((await q.acquire()).source, 'local');
        assert.equal(proxy.bytesFromClients, sent, 'nothing was sent to Redis while degraded');

        clock.advance(1); // a second after the timeout: one probe
        const probeSent = proxy.clientData();
        const probe = q.acquire();
        assert.equal((await q.acquire()).source, 'local', 'only one probe at a time');
        await probeSent;
        clock.advance(20);
        assert.equal((await probe).source, 'local', 'the probe timed out as well');
      } finally {
        proxy.release(); // Redis is fast again (its late answers are ignored)
      }
      clock.advance(PROBE_INTERVAL_MS);
      const back = await q.acquire();
      assert.equal(back.source, 'redis');
      assert.equal(q.degraded, false);
      assert.equal((await q.acquire()).source, 'redis');
    });

    it("'reject' and 'allow' answer a slow Redis too", async () => {
      const redis = client(proxy.url(), failFast);
      await ready(redis);
      const clock = new ManualClock();
      const reject = quotaOn(redis, { fallback: 'reject', redisTimeoutMs: 50, clock });
      const allow = quotaOn(redis, { fallback: 'allow', redisTimeoutMs: 50, clock });
      proxy.hold();
      try {
        const pending = [reject.acquire(), allow.acquire()];
        clock.advance(50);
        const [r, a] = await Promise.all(pending);
        assert.deepEqual([r!.allowed, r!.source, a!.allowed, a!.source], [false, 'reject', true, 'allow']);
        assert.equal(r!.retryAfterMs, PROBE_INTERVAL_MS, 'retry when Redis will be asked again');
      } finally {
        proxy.release();
      }
    });

    it('goes back to Redis after Redis was down and returns', async () => {
      const redis = client(proxy.url(), failFast);
      await ready(redis);
      const clock = new ManualClock();
      // 0.1/s: the outage's real duration refills nothing, so the count below is exact.
      const q = quotaOn(redis, { rate: 0.1, burst: 10, fallback: 'reject', clock });
      assert.equal((await q.acquire()).source, 'redis');

      const reconnected = once(redis, 'ready');
      await proxy.stop();
      const down = await q.acquire();
      assert.deepEqual([down.allowed, down.source, q.degraded], [false, 'reject', true]);

      await proxy.start(); // same port; the client reconnects by itself
      await reconnected;
      assert.equal((await q.acquire()).source, 'reject', 'still within the probe interval');
      clock.advance(PROBE_INTERVAL_MS);
      const back = await q.acquire();
      assert.deepEqual([back.allowed, back.source, q.degraded], [true, 'redis', false]);
      assert.equal(back.remaining, 8, 'the quota spent before the outage is still there');
    });
  });
}

describe('ClusterQuota options', () => {
  it('refuses a rate, burst, timeout or key that cannot work', () => {
    const redis = new Redis({ lazyConnect: true });
    const base = { redis, key: 'k', rate: 10 };
    assert.throws(() => new ClusterQuota({ ...base, rate: 0 }), RangeError);
    assert.throws(() => new ClusterQuota({ ...base, burst: 0.5 }), RangeError);
    assert.throws(() => new ClusterQuota({ ...base, redisTimeoutMs: 0 }), RangeError);
    assert.throws(() => new ClusterQuota({ ...base, key: '' }), RangeError);
    redis.disconnect();
  });

  it('refuses non-positive permits', async () => {
    const redis = new Redis({ lazyConnect: true });
    const q = new ClusterQuota({ redis, key: 'k', rate: 10 });
    await assert.rejects(q.acquire(0), RangeError);
    await assert.rejects(q.acquire(Number.NaN), RangeError);
    redis.disconnect();
  });
});
