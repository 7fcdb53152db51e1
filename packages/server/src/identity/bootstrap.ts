import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { PlinthError, SYSTEM_NAMESPACE, type PolicyRule, type RoleBindingSpec, type RoleSpec, type ServiceAccountSpec } from '@plinth/core';
import type { Store } from '../store/types.js';
import { mintCredential } from './credentials.js';

export const ADMIN_ACCOUNT = 'admin';
export const ADMIN_ROLE = 'cluster-admin';
export const ADMIN_TOKEN_FILE = 'admin.token';

export interface BootstrapDeps {
  store: Store;
  dataDir: string;
  log: Logger;
  /** Epoch ms; tests move time. */
  now?: (() => number) | undefined;
}

/**
 * First start: creates the admin ServiceAccount with an all-powerful role and writes its credential to
 * DATA/admin.token (0600). No default password exists anywhere; this file is the only way in.
 * Creating the account is the claim: of several servers starting on one empty database, only the one
 * whose create-only put succeeds goes on, the others find it exists and do nothing.
 */
export async function bootstrap(deps: BootstrapDeps): Promise<{ adminTokenFile: string | undefined }> {
  const { store, log } = deps;
  const now = deps.now ?? Date.now;
  if (await store.get('ServiceAccount', SYSTEM_NAMESPACE, ADMIN_ACCOUNT)) return { adminTokenFile: undefined };

  const sa: ServiceAccountSpec = { description: 'Created on first start; its credential is in DATA/admin.token' };
  try {
    await store.put({ kind: 'ServiceAccount', namespace: SYSTEM_NAMESPACE, name: ADMIN_ACCOUNT, labels: {}, annotations: {}, spec: sa, expectRevision: 0 });
  } catch (err) {
    if (isAlreadyExists(err)) return { adminTokenFile: undefined };
    throw err;
  }

  const all: PolicyRule = { verbs: ['*'], kinds: ['*'], namespaces: ['*'] };
  const role: RoleSpec = { description: 'Every verb on every kind in every namespace', rules: [all] };
  await createUnlessPresent(store, 'Role', ADMIN_ROLE, role, log);
  const binding: RoleBindingSpec = { role: ADMIN_ROLE, subjects: [{ kind: 'ServiceAccount', namespace: SYSTEM_NAMESPACE, name: ADMIN_ACCOUNT }] };
  await ensureBinding(store, binding, log);

  const { credential } = await mintCredential(store, { namespace: SYSTEM_NAMESPACE, name: ADMIN_ACCOUNT }, { now: now() });
  const file = join(deps.dataDir, ADMIN_TOKEN_FILE);
  writePrivateFile(file, credential.token + '\n');
  log.info({ file, credential: credential.id }, `created ServiceAccount ${SYSTEM_NAMESPACE}/${ADMIN_ACCOUNT}; its credential is in ${file}`);
  return { adminTokenFile: file };
}

/** A Role left by an earlier install is the operator's; it is not overwritten. */
async function createUnlessPresent(store: Store, kind: string, name: string, spec: unknown, log: Logger): Promise<void> {
  try {
    await store.put({ kind, namespace: SYSTEM_NAMESPACE, name, labels: {}, annotations: {}, spec, expectRevision: 0 });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    log.warn({ kind, name }, `${kind} ${SYSTEM_NAMESPACE}/${name} already exists; kept as it is`);
  }
}

/** The binding must name the admin, or the new credential would open nothing. */
async function ensureBinding(store: Store, spec: RoleBindingSpec, log: Logger): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const cur = await store.get('RoleBinding', SYSTEM_NAMESPACE, ADMIN_ROLE);
    let next: RoleBindingSpec = spec;
    if (cur) {
      const have = cur.spec as unknown as RoleBindingSpec;
      const named = have.subjects.some((s) => s.namespace === SYSTEM_NAMESPACE && s.name === ADMIN_ACCOUNT);
      if (named && have.role === ADMIN_ROLE) return;
      next = { role: ADMIN_ROLE, subjects: named ? have.subjects : [...have.subjects, ...spec.subjects] };
      log.warn(`RoleBinding ${SYSTEM_NAMESPACE}/${ADMIN_ROLE} existed; the admin account was added to it`);
    }
    try {
      await store.put({
        kind: 'RoleBinding',
        namespace: SYSTEM_NAMESPACE,
        name: ADMIN_ROLE,
        labels: {},
        annotations: {},
        spec: next,
        expectRevision: cur ? cur.metadata.revision : 0,
      });
      return;
    } catch (err) {
      if (!(err instanceof PlinthError && (err.code === 'already_exists' || err.code === 'revision_conflict'))) throw err;
    }
  }
  throw new PlinthError('UNAVAILABLE', `RoleBinding ${SYSTEM_NAMESPACE}/${ADMIN_ROLE} keeps changing; bootstrap gave up`);
}

/**
 * Created owner-only from the first byte (never chmod-ed after the fact), through a temp file and a rename,
 * so a reader never sees a partial token and a stale file from an earlier install is replaced whole.
 */
function writePrivateFile(file: string, content: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

function isAlreadyExists(err: unknown): boolean {
  return err instanceof PlinthError && err.code === 'already_exists';
}
