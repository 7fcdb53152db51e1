import {
  API_VERSION,
  PlinthError,
  diffValues,
  parseSelector,
  publicKinds,
  requireKind,
  validateResource,
  type Resource,
} from '@plinth/core';
import { readDocument } from '../http/body.js';
import { authorize, principalOf, type GuardDeps } from '../http/guard.js';
import { sendJson } from '../http/problem.js';
import type { RequestContext, Router } from '../http/router.js';
import type { Keyring } from '../secrets/keyring.js';
import { presentResource, revealResource } from '../secrets/sealing.js';
import type { Store } from '../store/types.js';
import { admit, contentOf } from './admission.js';
import type { AdmissionDeps } from './admission.js';
import { intParam, revisionHeader } from './query.js';

export interface ResourceApiDeps extends GuardDeps, AdmissionDeps {
  store: Store;
  keyring: Keyring;
}

const DEFAULT_PAGE = 500;
const MAX_PAGE = 1000;

function etag(r: Resource): string {
  return `"${r.metadata.revision}"`;
}

function encodeContinue(r: Resource): string {
  return Buffer.from(JSON.stringify([r.metadata.namespace, r.metadata.name])).toString('base64url');
}

function decodeContinue(token: string): { namespace: string; name: string } {
  try {
    const v = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string') return { namespace: v[0], name: v[1] };
  } catch {
    // fall through to the error below
  }
  throw new PlinthError('INVALID_PARAMETER', 'continue is not a token this server issued');
}

async function mustGet(store: Store, kind: string, namespace: string, name: string): Promise<Resource> {
  const r = await store.get(kind, namespace, name);
  if (!r) throw new PlinthError('NOT_FOUND', `${kind} ${namespace}/${name} does not exist`);
  return r;
}

/** Writes through the same admission as PUT; shared by PUT and rollback. */
async function write(
  ctx: RequestContext,
  deps: ResourceApiDeps,
  kind: string,
  namespace: string,
  name: string,
  doc: unknown,
  action: 'apply' | 'rollback',
  expect: number | undefined,
): Promise<{ result: 'created' | 'updated' | 'unchanged'; resource: Resource }> {
  const valid = validateResource(doc, { kind, namespace, name });
  const current = await deps.store.get(kind, namespace, name);
  const p = await authorize(ctx, deps, current ? 'update' : 'create', kind, namespace, name);
  const admitted = await admit(valid, current, p, deps);
  try {
    const put = await deps.store.put({
      kind,
      namespace,
      name,
      labels: admitted.labels,
      annotations: valid.annotations,
      spec: admitted.spec,
      ...(expect !== undefined ? { expectRevision: expect } : {}),
      ...(admitted.leaseExpiresAt !== undefined ? { leaseExpiresAt: admitted.leaseExpiresAt } : {}),
    });
    const result = put.type === 'ADDED' ? 'created' : put.type === 'MODIFIED' ? 'updated' : 'unchanged';
    if (result !== 'unchanged') {
      await deps.audit.record({
        principal: p,
        action: action === 'rollback' ? 'rollback' : result === 'created' ? 'create' : 'update',
        kind,
        namespace,
        name,
        outcome: 'allowed',
        source: ctx.remote,
        revisionBefore: put.previous?.metadata.revision ?? null,
        revisionAfter: put.resource.metadata.revision,
      });
    }
    if (result !== 'unchanged') await deps.settle?.(kind, put.resource.metadata.revision);
    return { result, resource: put.resource };
  } catch (e) {
    if (e instanceof PlinthError && (e.code === 'revision_conflict' || e.code === 'already_exists')) {
      await deps.audit.record({ principal: p, action: current ? 'update' : 'create', kind, namespace, name, outcome: 'failed', source: ctx.remote, detail: e.code });
    }
    throw e;
  }
}

export function registerResourceRoutes(router: Router, deps: ResourceApiDeps): void {
  const { store, keyring } = deps;

  router.add('GET', '/v1/kinds', async (ctx) => {
    principalOf(ctx);
    sendJson(ctx.res, 200, { items: publicKinds().map((k) => ({ kind: k.kind, description: k.description })) });
  });

  router.add('PUT', '/v1/resources/:kind/:namespace/:name', async (ctx) => {
    const { kind, namespace, name } = ctx.params as { kind: string; namespace: string; name: string };
    requireKind(kind);
    const doc = await readDocument(ctx.req);
    let expect = revisionHeader(ctx.req.headers['if-match'], 'If-Match');
    if (ctx.req.headers['if-none-match'] !== undefined) {
      if (ctx.req.headers['if-none-match'].trim() !== '*') throw new PlinthError('BAD_REQUEST', 'If-None-Match supports only *');
      expect = 0;
    }
    const { result, resource } = await write(ctx, deps, kind, namespace, name, doc, 'apply', expect);
    sendJson(ctx.res, result === 'created' ? 201 : 200, presentResource(resource), { 'plinth-result': result, etag: etag(resource) });
  });

  router.add('GET', '/v1/resources/:kind/:namespace/:name', async (ctx) => {
    const { kind, namespace, name } = ctx.params as { kind: string; namespace: string; name: string };
    requireKind(kind);
    await authorize(ctx, deps, 'get', kind, namespace, name);
    const at = intParam(ctx.query, 'revision', { min: 1 });
    let r: Resource;
    if (at !== undefined) {
      const ev = await store.atRevision(kind, namespace, name, at);
      if (!ev) throw new PlinthError('NOT_FOUND', `${kind} ${namespace}/${name} has no revision ${at} in its history`);
      r = ev.resource;
    } else r = await mustGet(store, kind, namespace, name);
    const reveal = ctx.query.get('reveal') === 'true';
    if (reveal) {
      if (kind !== 'Secret') throw new PlinthError('INVALID_PARAMETER', 'reveal applies to Secrets only');
      const p = await authorize(ctx, deps, 'reveal', kind, namespace, name);
      // Reading a secret's values is itself an audited event.
      await deps.audit.record({ principal: p, action: 'reveal', kind, namespace, name, outcome: 'allowed', source: ctx.remote, revisionAfter: r.metadata.revision });
      sendJson(ctx.res, 200, revealResource(r, keyring), { etag: etag(r) });
      return;
    }
    sendJson(ctx.res, 200, presentResource(r), { etag: etag(r) });
  });

  router.add('DELETE', '/v1/resources/:kind/:namespace/:name', async (ctx) => {
    const { kind, namespace, name } = ctx.params as { kind: string; namespace: string; name: string };
    requireKind(kind);
    const p = await authorize(ctx, deps, 'delete', kind, namespace, name);
    const expect = revisionHeader(ctx.req.headers['if-match'], 'If-Match');
    const before = await store.get(kind, namespace, name);
    const gone = await store.delete(kind, namespace, name, expect !== undefined ? { expectRevision: expect } : {});
    if (!gone) throw new PlinthError('NOT_FOUND', `${kind} ${namespace}/${name} does not exist`);
    await deps.audit.record({
      principal: p,
      action: 'delete',
      kind,
      namespace,
      name,
      outcome: 'allowed',
      source: ctx.remote,
      revisionBefore: before?.metadata.revision ?? null,
      revisionAfter: gone.metadata.revision,
    });
    await deps.settle?.(kind, gone.metadata.revision);
    sendJson(ctx.res, 200, presentResource(gone));
  });

  router.add('GET', '/v1/resources/:kind', async (ctx) => {
    const { kind } = ctx.params as { kind: string };
    requireKind(kind);
    const p = principalOf(ctx);
    const namespace = ctx.query.get('namespace') || undefined;
    if (namespace !== undefined) await authorize(ctx, deps, 'list', kind, namespace);
    const selector = parseSelector(ctx.query.get('selector'));
    const limit = intParam(ctx.query, 'limit', { min: 1, max: MAX_PAGE }) ?? DEFAULT_PAGE;
    const cont = ctx.query.get('continue');
    const page = await store.list(kind, { namespace, selector, limit, after: cont ? decodeContinue(cont) : undefined });
    // Without a namespace, the caller sees the namespaces it may list; others are filtered out, not refused.
    const items = namespace !== undefined ? page.items : page.items.filter((r) => deps.identity.can(p, 'list', kind, r.metadata.namespace));
    const last = page.items[page.items.length - 1];
    sendJson(ctx.res, 200, {
      apiVersion: API_VERSION,
      kind: 'List',
      revision: page.revision,
      items: items.map(presentResource),
      ...(page.more && last ? { continue: encodeContinue(last) } : {}),
    });
  });

  router.add('GET', '/v1/resources/:kind/:namespace/:name/history', async (ctx) => {
    const { kind, namespace, name } = ctx.params as { kind: string; namespace: string; name: string };
    requireKind(kind);
    await authorize(ctx, deps, 'get', kind, namespace, name);
    const limit = intParam(ctx.query, 'limit', { min: 1, max: MAX_PAGE }) ?? 100;
    const before = intParam(ctx.query, 'before', { min: 1 });
    const items = await store.history(kind, namespace, name, { limit, ...(before !== undefined ? { beforeRevision: before } : {}) });
    if (items.length === 0 && before === undefined) throw new PlinthError('NOT_FOUND', `${kind} ${namespace}/${name} has no history`);
    sendJson(ctx.res, 200, { items: items.map((e) => ({ type: e.type, revision: e.revision, resource: presentResource(e.resource) })) });
  });

  router.add('GET', '/v1/resources/:kind/:namespace/:name/diff', async (ctx) => {
    const { kind, namespace, name } = ctx.params as { kind: string; namespace: string; name: string };
    requireKind(kind);
    await authorize(ctx, deps, 'get', kind, namespace, name);
    const from = intParam(ctx.query, 'from', { min: 1 });
    if (from === undefined) throw new PlinthError('INVALID_PARAMETER', 'from (a revision) is required');
    const toParam = intParam(ctx.query, 'to', { min: 1 });
    const a = await store.atRevision(kind, namespace, name, from);
    if (!a) throw new PlinthError('NOT_FOUND', `${kind} ${namespace}/${name} has no revision ${from} in its history`);
    let b: Resource;
    if (toParam === undefined) b = await mustGet(store, kind, namespace, name);
    else {
      const ev = await store.atRevision(kind, namespace, name, toParam);
      if (!ev) throw new PlinthError('NOT_FOUND', `${kind} ${namespace}/${name} has no revision ${toParam} in its history`);
      b = ev.resource;
    }
    const view = (r: Resource) => {
      const shown = presentResource(r);
      return { metadata: { labels: shown.metadata.labels, annotations: shown.metadata.annotations }, spec: shown.spec };
    };
    const changes = diffValues(view(a.resource), view(b));
    sendJson(ctx.res, 200, { from, to: b.metadata.revision, changes, before: presentResource(a.resource), after: presentResource(b) });
  });

  router.add('POST', '/v1/resources/:kind/:namespace/:name/rollback', async (ctx) => {
    const { kind, namespace, name } = ctx.params as { kind: string; namespace: string; name: string };
    requireKind(kind);
    const body = await readDocument(ctx.req);
    const rev = (body as { revision?: unknown } | undefined)?.revision;
    if (typeof rev !== 'number' || !Number.isInteger(rev) || rev < 1) {
      throw new PlinthError('VALIDATION_FAILED', 'revision: expected a positive integer', { errors: [{ field: 'revision', message: 'expected a positive integer' }] });
    }
    await authorize(ctx, deps, 'get', kind, namespace, name);
    const old = await store.atRevision(kind, namespace, name, rev);
    if (!old) throw new PlinthError('NOT_FOUND', `${kind} ${namespace}/${name} has no revision ${rev} in its history`);
    if (old.type === 'DELETED') throw new PlinthError('BAD_REQUEST', `revision ${rev} is the deletion of ${kind} ${namespace}/${name}; roll back to a revision before it`);
    const content = contentOf(old.resource, keyring);
    const doc = { apiVersion: API_VERSION, kind, metadata: { namespace, name, labels: content.labels, annotations: content.annotations }, spec: content.spec };
    const { result, resource } = await write(ctx, deps, kind, namespace, name, doc, 'rollback', undefined);
    sendJson(ctx.res, 200, presentResource(resource), { 'plinth-result': result, etag: etag(resource) });
  });
}
