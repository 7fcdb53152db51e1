/** `name` or `schema.name`, each part a plain identifier, so it can be quoted into DDL without injection. */
export function quoteTableName(name: string): string {
  const parts = name.split('.');
  if (parts.length > 2 || !parts.every((p) => /^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(p))) {
    throw new TypeError(`not a valid table name: ${JSON.stringify(name)} (letters, digits and _; optionally schema.table)`);
  }
  return parts.map((p) => `"${p}"`).join('.');
}

/** An index name derived from the table's, unqualified (both PostgreSQL and SQLite put it in the table's schema). */
export function indexName(table: string, suffix: string): string {
  return `"${table.split('.').pop()!}_${suffix}"`;
}

/** How many `begin` calls pass between two bounded purges of expired rows. */
export const PURGE_EVERY = 1000;
export const PURGE_BATCH = 1000;
