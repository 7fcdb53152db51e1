export type { BeginResult, Clock, IdempotencyStore, StoredResponse } from './types.js';
export {
  DEFAULT_LEASE_MS,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_METHODS,
  DEFAULT_TTL_MS,
  DEFAULT_WAIT_MS,
  Idempotency,
  type CapturedResponse,
  type Decision,
  type Execution,
  type IdempotencyOptions,
  type IdempotentRequest,
} from './idempotency.js';
export { IdempotencyCodes, problemOf, problemResponse, type IdempotencyCode, type IdempotencyCodeName } from './errors.js';
export { MAX_KEY_LENGTH, parseIdempotencyKey } from './key.js';
export { requestFingerprint } from './fingerprint.js';
export { REPLAYED_HEADER, storableHeaders } from './headers.js';
export { MemoryIdempotencyStore } from './memory-store.js';
export { SqliteIdempotencyStore, type SqliteIdempotencyStoreOptions } from './sqlite-store.js';
export { RedisIdempotencyStore, type RedisIdempotencyStoreOptions } from './redis-store.js';
export { PostgresIdempotencyStore, type PostgresIdempotencyStoreOptions } from './postgres-store.js';
export { idempotent, type NodeIdempotentHandler } from './node.js';
export { expressIdempotency, type ExpressRequestLike } from './express.js';
export { fastifyIdempotency, type FastifyInstanceLike, type FastifyReplyLike, type FastifyRequestLike } from './fastify.js';
export { honoIdempotency, type HonoContextLike } from './hono.js';
