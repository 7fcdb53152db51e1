import type { AuditEntry, FieldError, Resource, WatchEvent } from '@plinth/core';
import type { Connection } from './config.js';
import { ApiError, UnreachableError } from './errors.js';

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Unary calls give up after this long, so a wedged server cannot hang a script forever. */
  timeoutMs?: number;
}

export interface ApiResponse<T> {
  status: number;
  headers: Headers;
  body: T;
}

export type PutResult = 'created' | 'updated' | 'unchanged';

export interface ListResponse {
  apiVersion: string;
  kind: 'List';
  revision: number;
  items: Resource[];
  continue?: string;
}

export interface DiffChange {
  path: string;
  op: 'add' | 'remove' | 'replace';
  before?: unknown;
  after?: unknown;
}

export interface DiffResponse {
  from: number;
  to: number;
  changes: DiffChange[];
}

export interface WhoAmI {
  subject: string;
  namespace: string;
  name: string;
  via: 'jwt' | 'credential';
}

export interface AuditPage {
  items: AuditEntry[];
  head: { seq: number; hash: string };
}

export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const LIST_PAGE_SIZE = 500;

const enc = encodeURIComponent;

export function resourcePath(kind: string, namespace: string, name: string): string {
  return `/v1/resources/${enc(kind)}/${enc(namespace)}/${enc(name)}`;
}

/** The most specific reason a fetch failed (ECONNREFUSED, ENOTFOUND, ...), digging through `cause` chains. */
export function networkReason(e: unknown): string {
  let cur: unknown = e;
  for (let depth = 0; depth < 5 && cur !== null && typeof cur === 'object'; depth++) {
    const err = cur as { code?: unknown; errors?: unknown[]; cause?: unknown; message?: unknown };
    if (typeof err.code === 'string' && err.code !== '') return err.code;
    // Happy-eyeballs connects fail with an AggregateError of one error per address.
    if (Array.isArray(err.errors) && err.errors.length > 0) {
      const inner = networkReason(err.errors[0]);
      if (inner) return inner;
    }
    if (err.cause === undefined) return typeof err.message === 'string' ? err.message : String(cur);
    cur = err.cause;
  }
  return String(cur);
}

function isAbort(e: unknown): boolean {
  return e instanceof Error && e.name === 'AbortError';
}

function isTimeout(e: unknown): boolean {
  return e instanceof Error && e.name === 'TimeoutError';
}

/** Turns any non-2xx answer into an ApiError, preferring the server's problem+json document. */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  const type = res.headers.get('content-type') ?? '';
  if (type.includes('json') && text !== '') {
    try {
      const p = JSON.parse(text) as Record<string, unknown>;
      if (p && typeof p === 'object' && typeof p['code'] === 'string') {
        const errors = Array.isArray(p['errors']) ? (p['errors'] as FieldError[]).filter((x) => x && typeof x.field === 'string') : [];
        const detail = typeof p['detail'] === 'string' ? p['detail'] : typeof p['title'] === 'string' ? p['title'] : res.statusText;
        return new ApiError(res.status, p['code'], detail, errors, p);
      }
    } catch {
      // not JSON after all: fall through to the generic error
    }
  }
  // Something other than plinth answered (a proxy, a wrong port): say what we got, briefly.
  const snippet = text.replace(/\s+/g, ' ').trim().slice(0, 200);
  const detail = `HTTP ${res.status} ${res.statusText}`.trim() + (snippet && !type.includes('html') ? `: ${snippet}` : '');
  return new ApiError(res.status, `http_${res.status}`, detail);
}

/** HTTP client for the documented API (docs/api.md), with problem+json and connection errors mapped to CliErrors. */
export class PlinthClient {
  constructor(
    readonly conn: Connection,
    private readonly fetchImpl: typeof fetch = (input, init) => fetch(input, init),
  ) {}

  url(path: string, query?: Query): string {
    // Keep any path prefix of the base URL (a server mounted behind a proxy at /plinth).
    const u = new URL(this.conn.url.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== '') u.searchParams.set(k, String(v));
    }
    return u.href;
  }

  /** Sends a request and returns the raw response once it answered 2xx (the body is not read). */
  async send(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json', ...opts.headers };
    if (this.conn.token) headers['authorization'] = `Bearer ${this.conn.token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
    }
    const signals: AbortSignal[] = [];
    if (opts.signal) signals.push(opts.signal);
    if (opts.timeoutMs !== 0) signals.push(AbortSignal.timeout(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS));
    const signal = signals.length === 1 ? signals[0] : signals.length > 1 ? AbortSignal.any(signals) : undefined;
    let res: Response;
    try {
      res = await this.fetchImpl(this.url(path, opts.query), { method, headers, ...(body !== undefined ? { body } : {}), ...(signal ? { signal } : {}) });
    } catch (e) {
      if (isAbort(e) && opts.signal?.aborted) throw e;
      if (isTimeout(e)) throw new UnreachableError(this.conn.url, `no answer within ${Math.round((opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000)}s`);
      throw new UnreachableError(this.conn.url, networkReason(e));
    }
    if (!res.ok) throw await errorFromResponse(res);
    return res;
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse<T>> {
    const res = await this.send(method, path, opts);
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      throw new UnreachableError(this.conn.url, `connection lost while reading the answer: ${networkReason(e)}`);
    }
    let body: unknown = undefined;
    if (text !== '') {
      try {
        body = JSON.parse(text);
      } catch {
        throw new ApiError(res.status, 'malformed_response', `the server answered ${method} ${path} with something that is not JSON`);
      }
    }
    return { status: res.status, headers: res.headers, body: body as T };
  }

  async putResource(kind: string, namespace: string, name: string, doc: unknown): Promise<{ result: PutResult; resource: Resource }> {
    const r = await this.request<Resource>('PUT', resourcePath(kind, namespace, name), { body: doc });
    const header = r.headers.get('plinth-result');
    const result: PutResult =
      header === 'created' || header === 'updated' || header === 'unchanged' ? header : r.status === 201 ? 'created' : 'updated';
    return { result, resource: r.body };
  }

  /** The resource, or undefined when it does not exist (404 not_found). */
  async findResource(kind: string, namespace: string, name: string): Promise<Resource | undefined> {
    try {
      return await this.getResource(kind, namespace, name);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  async getResource(kind: string, namespace: string, name: string, opts: { revision?: number | undefined; reveal?: boolean | undefined } = {}): Promise<Resource> {
    const query: Query = { revision: opts.revision, reveal: opts.reveal ? 'true' : undefined };
    return (await this.request<Resource>('GET', resourcePath(kind, namespace, name), { query })).body;
  }

  /** Every matching resource, following `continue` pages. `revision` is the first page's (the point to watch from). */
  async listAll(kind: string, opts: { namespace?: string | undefined; selector?: string | undefined } = {}): Promise<{ revision: number; items: Resource[] }> {
    const items: Resource[] = [];
    let revision: number | undefined;
    let cont: string | undefined;
    for (let page = 0; ; page++) {
      const query: Query = { namespace: opts.namespace, selector: opts.selector, limit: LIST_PAGE_SIZE, continue: cont };
      const r = (await this.request<ListResponse>('GET', `/v1/resources/${enc(kind)}`, { query })).body;
      revision ??= r.revision;
      items.push(...(r.items ?? []));
      if (!r.continue || (r.items ?? []).length === 0) break;
      if (page > 100_000) throw new ApiError(500, 'malformed_response', 'the server kept answering with more pages');
      cont = r.continue;
    }
    return { revision: revision ?? 0, items };
  }

  async deleteResource(kind: string, namespace: string, name: string): Promise<Resource> {
    return (await this.request<Resource>('DELETE', resourcePath(kind, namespace, name))).body;
  }

  async history(kind: string, namespace: string, name: string, limit?: number): Promise<WatchEvent[]> {
    const r = await this.request<{ items: WatchEvent[] }>('GET', resourcePath(kind, namespace, name) + '/history', { query: { limit } });
    return r.body.items ?? [];
  }

  async diff(kind: string, namespace: string, name: string, from: number, to?: number): Promise<DiffResponse> {
    return (await this.request<DiffResponse>('GET', resourcePath(kind, namespace, name) + '/diff', { query: { from, to } })).body;
  }

  async rollback(kind: string, namespace: string, name: string, revision: number): Promise<Resource> {
    return (await this.request<Resource>('POST', resourcePath(kind, namespace, name) + '/rollback', { body: { revision } })).body;
  }

  async whoami(): Promise<WhoAmI> {
    return (await this.request<WhoAmI>('GET', '/v1/whoami')).body;
  }

  async audit(after: number, limit: number): Promise<AuditPage> {
    return (await this.request<AuditPage>('GET', '/v1/audit', { query: { after, limit } })).body;
  }

  async issueToken(): Promise<TokenResponse> {
    return (await this.request<TokenResponse>('POST', '/v1/auth/token')).body;
  }

  async rotateSigningKeys(): Promise<unknown> {
    return (await this.request<unknown>('POST', '/v1/auth/keys/rotate')).body;
  }

  async rotateSecretKey(): Promise<unknown> {
    return (await this.request<unknown>('POST', '/v1/secrets/keys/rotate')).body;
  }

  async createCredential(namespace: string, name: string): Promise<{ id: string; token: string }> {
    return (await this.request<{ id: string; token: string }>('POST', `/v1/serviceaccounts/${enc(namespace)}/${enc(name)}/credentials`)).body;
  }
}
