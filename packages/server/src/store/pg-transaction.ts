import type pg from 'pg';

/** Thrown inside a transaction that must start over: it is rolled back and run again. */
export class RetryTransaction extends Error {}

const MAX_ATTEMPTS = 5;

/** Deadlocks and serialization failures are the database asking for the transaction to be run again. */
export function isRetryableTransactionError(err: unknown): boolean {
  if (err instanceof RetryTransaction) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return code === '40P01' || code === '40001'; // deadlock detected, serialization failure
}

/**
 * Runs `fn` in a transaction on a pooled connection, retrying (up to 5 attempts) when the database asks for
 * it or when BEGIN itself failed (the pooled connection was dead before anything ran: safe to run again).
 * A connection whose ROLLBACK failed is destroyed, not returned to the pool.
 */
export async function inTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    let began = false;
    try {
      await client.query(begin);
      began = true;
      const out = await fn(client);
      await client.query('COMMIT');
      client.release();
      return out;
    } catch (err) {
      let broken = !began;
      if (began) {
        try {
          await client.query('ROLLBACK');
        } catch {
          broken = true;
        }
      }
      client.release(broken ? true : undefined);
      if (attempt < MAX_ATTEMPTS && (isRetryableTransactionError(err) || !began)) continue;
      throw err;
    }
  }
}
