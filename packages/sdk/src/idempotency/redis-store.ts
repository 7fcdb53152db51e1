import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import type { BeginResult, IdempotencyStore, StoredResponse } from './types.js';

export interface RedisIdempotencyStoreOptions {
  /** Your ioredis client (or cluster); the store never closes it. */
  client: Redis | Cluster;
  /** Prepended to every key. Default `plinth:idem:`. */
  prefix?: string;
}

// One hash per key: f = fingerprint, t = token while executing, s/h/b = status, headers, body once completed.
// Redis expires the whole hash (PEXPIRE: the lease while executing, the TTL once completed), so a lapsed
// lease or TTL simply frees the key. Each script runs atomically, which is what makes begin race-free.
const BEGIN = `
local f = redis.call('HGET', KEYS[1], 'f')
if not f then
  redis.call('HSET', KEYS[1], 'f', ARGV[1], 't', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'e'}
end
if f ~= ARGV[1] then return {'m'} end
local r = redis.call('HMGET', KEYS[1], 't', 's', 'h', 'b')
if r[1] then return {'i'} end
return {'r', r[2], r[3], r[4]}
`;

const COMPLETE = `
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 't')
redis.call('HSET', KEYS[1], 's', ARGV[2], 'h', ARGV[3], 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

const ABANDON = `
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
`;

interface Commands {
  plinthIdemBeginBuffer(key: string, fingerprint: string, token: string, leaseMs: number): Promise<Buffer[]>;
  plinthIdemComplete(key: string, token: string, status: number, headers: string, body: Buffer, ttlMs: number): Promise<number>;
  plinthIdemAbandon(key: string, token: string): Promise<number>;
}

/** Keys in Redis, shared by every instance. Scripts go by EVALSHA (ioredis `defineCommand`), loaded on first use. */
export class RedisIdempotencyStore implements IdempotencyStore {
  private readonly redis: Commands;
  private readonly prefix: string;

  constructor(options: RedisIdempotencyStoreOptions) {
    this.prefix = options.prefix ?? 'plinth:idem:';
    const c = options.client;
    c.defineCommand('plinthIdemBegin', { numberOfKeys: 1, lua: BEGIN });
    c.defineCommand('plinthIdemComplete', { numberOfKeys: 1, lua: COMPLETE });
    c.defineCommand('plinthIdemAbandon', { numberOfKeys: 1, lua: ABANDON });
    this.redis = c as unknown as Commands;
  }

  async begin(key: string, fingerprint: string, leaseMs: number): Promise<BeginResult> {
    const token = randomUUID();
    const r = await this.redis.plinthIdemBeginBuffer(this.prefix + key, fingerprint, token, Math.ceil(leaseMs));
    switch (r[0]?.toString()) {
      case 'e':
        return { kind: 'execute', token };
      case 'm':
        return { kind: 'mismatch' };
      case 'i':
        return { kind: 'inFlight' };
      default:
        return {
          kind: 'replay',
          response: { status: Number(r[1]!.toString()), headers: JSON.parse(r[2]!.toString()) as StoredResponse['headers'], body: r[3] ?? Buffer.alloc(0) },
        };
    }
  }

  async complete(key: string, token: string, response: StoredResponse, ttlMs: number): Promise<void> {
    await this.redis.plinthIdemComplete(this.prefix + key, token, response.status, JSON.stringify(response.headers), response.body, Math.ceil(ttlMs));
  }

  async abandon(key: string, token: string): Promise<void> {
    await this.redis.plinthIdemAbandon(this.prefix + key, token);
  }
}
