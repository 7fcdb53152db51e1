import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Resource } from '@plinth/core';
import { errorMessage, type Logger } from './logger.js';

/** What a client holds and watches; a cache written for another scope is not this client's state. */
export interface CacheScope {
  /** Sorted, without duplicates. */
  kinds: string[];
  namespace: string | null;
  selector: string;
}

/** The file: JSON, one object. `version` lets a later format coexist with files written by this one. */
export interface CacheContents extends CacheScope {
  version: 1;
  /** The revision the items are current at: a client resumes its watch from here. */
  revision: number;
  items: Resource[];
  savedAt: string;
}

function sameScope(a: CacheScope, b: CacheScope): boolean {
  return a.namespace === b.namespace && a.selector === b.selector && a.kinds.length === b.kinds.length && a.kinds.every((k, i) => k === b.kinds[i]);
}

function isItem(v: unknown, kinds: readonly string[]): v is Resource {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as { kind?: unknown; metadata?: { namespace?: unknown; name?: unknown; revision?: unknown } | null };
  const m = r.metadata;
  return (
    typeof r.kind === 'string' &&
    kinds.includes(r.kind) &&
    typeof m === 'object' &&
    m !== null &&
    typeof m.namespace === 'string' &&
    typeof m.name === 'string' &&
    typeof m.revision === 'number'
  );
}

/**
 * Loads the cache for `scope`. A missing file is normal (first start); an unreadable, corrupt or foreign
 * one is reported and ignored, never thrown: the cache only ever helps a start, it must not prevent one.
 */
export async function loadCache(file: string, scope: CacheScope, logger: Logger): Promise<{ revision: number; items: Resource[] } | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') logger.warn('cannot read the snapshot cache; ignoring it', { file, error: errorMessage(e) });
    return undefined;
  }
  let c: Partial<CacheContents>;
  try {
    c = JSON.parse(text) as Partial<CacheContents>;
    if (typeof c !== 'object' || c === null) throw new Error('not a JSON object');
    if (c.version !== 1) throw new Error(`unknown version ${JSON.stringify(c.version)}`);
    if (typeof c.revision !== 'number' || !Number.isSafeInteger(c.revision) || c.revision < 0) throw new Error('no revision');
    if (!Array.isArray(c.kinds) || !c.kinds.every((k) => typeof k === 'string')) throw new Error('no kinds');
    if (!(c.namespace === null || typeof c.namespace === 'string') || typeof c.selector !== 'string') throw new Error('no namespace or selector');
    if (!Array.isArray(c.items)) throw new Error('no items');
  } catch (e) {
    logger.warn('the snapshot cache is corrupt; ignoring it', { file, error: errorMessage(e) });
    return undefined;
  }
  const found: CacheScope = { kinds: c.kinds, namespace: c.namespace, selector: c.selector };
  if (!sameScope(found, scope)) {
    logger.warn('the snapshot cache was written for other kinds, namespace or selector; ignoring it', { file, cache: found, wanted: scope });
    return undefined;
  }
  const kinds = scope.kinds;
  if (!c.items.every((i) => isItem(i, kinds))) {
    logger.warn('the snapshot cache holds malformed items; ignoring it', { file });
    return undefined;
  }
  return { revision: c.revision, items: c.items };
}

/** Writes `contents` atomically: a reader (or a crash) sees the old file or the new one, never half of one. */
export async function writeCacheFile(file: string, contents: CacheContents): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(contents));
      // Without the sync, a power loss after the rename can leave an empty file under the final name.
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Debounced, serialized cache writes. `schedule` is called on every change but costs one timer per burst:
 * the first call arms it, later ones within the window only mark the state dirty, and the contents are
 * produced when the timer fires, so a burst of N changes is one write of the latest state. Writes never
 * overlap, so an older snapshot can never be renamed over a newer one.
 */
export class CacheWriter {
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private lastWriteAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly file: string,
    private readonly produce: () => CacheContents,
    private readonly logger: Logger,
    private readonly debounceMs = 200,
  ) {}

  /** Milliseconds (monotonic) since the last write started; infinite before the first. */
  get sinceLastWrite(): number {
    return performance.now() - this.lastWriteAt;
  }

  schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.write();
    }, this.debounceMs);
  }

  /** Writes now if a write is pending, and waits for every write started so far. */
  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.write();
    }
    await this.chain;
  }

  private write(): void {
    this.lastWriteAt = performance.now();
    // Produced now, not when the previous write finishes: the content is the state at this instant.
    const contents = this.produce();
    this.chain = this.chain.then(() =>
      writeCacheFile(this.file, contents).catch((e: unknown) => {
        this.logger.warn('could not write the snapshot cache', { file: this.file, error: errorMessage(e) });
      }),
    );
  }
}
