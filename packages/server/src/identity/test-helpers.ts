// Shared by this folder's tests only.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import type { Resource, WatchEvent } from '@plinth/core';
import { Keyring } from '../secrets/keyring.js';
import { openStore } from '../store/index.js';
import type { Store } from '../store/types.js';

export const silentLog: Logger = pino({ level: 'silent' });

export interface TestStore {
  store: Store;
  dir: string;
  close(): Promise<void>;
}

export async function openTestStore(): Promise<TestStore> {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-identity-'));
  const store = openStore('sqlite', dir);
  await store.init();
  return {
    store,
    dir,
    close: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function testKeyring(): Keyring {
  return Keyring.fromEnv(randomBytes(32).toString('base64'));
}

/** A clock tests move by hand. */
export class TestClock {
  constructor(public t = Date.now()) {}
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Forwards the store's committed changes to a consumer, the way the server's watch hub does. */
export async function forwardChanges(store: Store, from: number, to: (ev: WatchEvent) => void): Promise<number> {
  let at = from;
  for (;;) {
    const batch = await store.changesSince(at, 500);
    for (const ch of batch) to(ch);
    if (batch.length === 0) return at;
    at = batch[batch.length - 1]!.revision;
  }
}

/** A resource as a watch event would carry it, for index tests that need no store. */
export function fakeResource(kind: string, namespace: string, name: string, spec: unknown, revision: number, createRevision = revision): Resource {
  const t = new Date(0).toISOString();
  return {
    apiVersion: 'plinth.dev/v1',
    kind,
    metadata: { namespace, name, labels: {}, annotations: {}, revision, createRevision, createdAt: t, updatedAt: t },
    spec: spec as Record<string, unknown>,
  };
}

export async function putResource(store: Store, kind: string, namespace: string, name: string, spec: unknown): Promise<Resource> {
  return (await store.put({ kind, namespace, name, labels: {}, annotations: {}, spec })).resource;
}
