import type { InstanceSpec } from '@plinth/core';
import { request, type Dispatcher } from 'undici';
import { ControlPlaneError, isControlPlaneError } from '../errors.js';
import { errorFrom, type Transport } from '../http.js';
import { TokenSource } from '../token-source.js';
import type { Logger } from '../logger.js';

/** The Instance as the runtime registers it; the server fills in defaults and labels. */
export type InstanceSpecToRegister = Omit<InstanceSpec, 'weight' | 'metadata' | 'health' | 'draining' | 'leaseTtlSeconds'> &
  Partial<Pick<InstanceSpec, 'weight' | 'metadata' | 'health'>> & { draining: boolean; leaseTtlSeconds: number };

export const LEASE_NOT_FOUND = 'lease_not_found';
const NOT_FOUND = 'not_found';

/**
 * The four registry calls of docs/api.md, with the SDK's token handling (a `plinth_…` credential is
 * exchanged for JWTs; one retry after a 401 with a fresh one). Network failures are `unavailable`.
 */
export class RegistryApi {
  private readonly tokens: TokenSource;
  private readonly base: string;

  constructor(
    private readonly transport: Transport,
    token: string,
    private readonly namespace: string,
    private readonly name: string,
    logger: Logger,
  ) {
    this.tokens = new TokenSource({ transport, token, logger });
    this.base = `/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
  }

  get instance(): string {
    return `${this.namespace}/${this.name}`;
  }

  /** PUT the Instance: creates it or, unchanged, revives its lease. */
  async register(spec: InstanceSpecToRegister, signal?: AbortSignal): Promise<void> {
    await this.ok(await this.call('PUT', `/v1/resources/Instance${this.base}`, signal, { spec }));
  }

  /** Throws `lease_not_found` when the lease lapsed or the Instance is gone: register again. */
  async renew(signal?: AbortSignal): Promise<void> {
    await this.ok(await this.call('POST', `/v1/leases${this.base}`, signal));
  }

  /** Marks the Instance draining; false when it does not exist (nothing to drain). */
  async drain(signal?: AbortSignal): Promise<boolean> {
    return this.okUnlessMissing(await this.call('POST', `/v1/registry${this.base}/drain`, signal));
  }

  /** Deletes the Instance; false when it was already gone. */
  async deregister(signal?: AbortSignal): Promise<boolean> {
    return this.okUnlessMissing(await this.call('DELETE', `/v1/resources/Instance${this.base}`, signal));
  }

  close(): void {
    this.tokens.close();
  }

  private async ok(res: Dispatcher.ResponseData): Promise<void> {
    if (res.statusCode >= 200 && res.statusCode < 300) {
      await res.body.dump();
      return;
    }
    throw await errorFrom(res, `${this.instance}`);
  }

  private async okUnlessMissing(res: Dispatcher.ResponseData): Promise<boolean> {
    try {
      await this.ok(res);
      return true;
    } catch (e) {
      if (isControlPlaneError(e, NOT_FOUND)) return false;
      throw e;
    }
  }

  private async call(method: Dispatcher.HttpMethod, path: string, signal: AbortSignal | undefined, body?: unknown): Promise<Dispatcher.ResponseData> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const res = await this.send(method, path, signal, payload);
    if (res.statusCode !== 401) return res;
    const err = await errorFrom(res, `${method} ${path}`);
    if (!(await this.tokens.renew())) throw err;
    return this.send(method, path, signal, payload);
  }

  private async send(method: Dispatcher.HttpMethod, path: string, signal: AbortSignal | undefined, payload: string | undefined): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { authorization: await this.tokens.authorization(), accept: 'application/json' };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    try {
      return await request(this.transport.baseUrl + path, {
        method,
        headers,
        ...(payload === undefined ? {} : { body: payload }),
        ...(signal ? { signal } : {}),
        headersTimeout: this.transport.requestTimeoutMs,
        bodyTimeout: this.transport.requestTimeoutMs,
        ...(this.transport.dispatcher ? { dispatcher: this.transport.dispatcher } : {}),
      });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new ControlPlaneError('unavailable', `${method} ${path}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
}
