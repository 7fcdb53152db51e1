import { createHmac, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import { WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, type AlertSeverity, type NotifyTarget, type Webhook } from '@plinth/core';
import type { Keyring } from '../../secrets/keyring.js';
import { isSealed, unsealSecret } from '../../secrets/sealing.js';
import type { Store } from '../../store/types.js';
import type { Attributes } from '../types.js';

/** An alert firing or resolving, as receivers get it. */
export interface AlertNotification {
  status: 'firing' | 'resolved';
  /** `Slo/<name>` or `AlertRule/<name>`. */
  source: string;
  namespace: string;
  severity: AlertSeverity;
  summary: string;
  details: Attributes;
  atMs: number;
}

export interface Notifier {
  /**
   * Delivers to every target and resolves with the outcome the alert history records: `delivered`,
   * `failed: …` (each failed receiver by host, never the full URL: webhook paths often hold tokens) or
   * `none` without targets. Never rejects.
   */
  notify(n: AlertNotification, targets: readonly NotifyTarget[]): Promise<string>;
}

/** A Secret key's value, from the alert's own namespace; undefined when the Secret or key is missing. */
export type SecretResolver = (namespace: string, name: string, key: string) => Promise<string | undefined>;

export interface WebhookNotifierOptions {
  /** Per attempt: connect, response headers and body each. Default 5000. */
  timeoutMs?: number;
  /** Total tries, the first included. Default 4. */
  maxAttempts?: number;
  /** Full jitter: the n-th retry waits random(0, min(cap, base × 2^(n-1))). Defaults 500 and 30000. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** A Retry-After beyond this is cut to it, so one receiver cannot park a delivery for hours. Default 60000. */
  maxRetryAfterMs?: number;
  /** Deliveries waiting for a worker; beyond it new ones are dropped (and counted). Default 1000. */
  queueSize?: number;
  /** Deliveries in flight at once. Default 4. */
  concurrency?: number;
  /** Needed for webhooks with a secretRef (see `storeSecretResolver`). */
  secrets?: SecretResolver;
  /** For tests: the jitter source. */
  random?: () => number;
  log?: Logger;
}

export interface NotifierStats {
  delivered: number;
  failed: number;
  /** Dropped because the queue was full. */
  dropped: number;
  retries: number;
}

interface Job {
  n: AlertNotification;
  hook: Webhook;
  done: (r: Result) => void;
}

interface Result {
  ok: boolean;
  reason: string;
}

/** `sha256=<hex>` over `<timestamp>.<body>`: what a receiver recomputes with the shared secret to trust a call. */
export function signWebhook(secret: string, timestampSec: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestampSec}.${body}`).digest('hex')}`;
}

/** Retry-After as delay-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(value: string | string[] | undefined, nowMs: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.trim() === '') return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** The JSON body receivers get. */
export function webhookBody(n: AlertNotification): string {
  return JSON.stringify({
    status: n.status,
    source: n.source,
    namespace: n.namespace,
    severity: n.severity,
    summary: n.summary,
    details: n.details,
    at: new Date(n.atMs).toISOString(),
  });
}

/** Reads webhook signing keys from sealed Secrets in the resource store. */
export function storeSecretResolver(store: Store, keyring: Keyring): SecretResolver {
  return async (namespace, name, key) => {
    const r = await store.get('Secret', namespace, name);
    if (!r || !isSealed(r.spec)) return undefined;
    return unsealSecret(r.spec, namespace, name, keyring)[key];
  };
}

/**
 * POSTs alerts to webhooks. Network errors, 5xx and 429 are retried with exponential backoff and full
 * jitter (Retry-After honoured); other answers are final. Deliveries wait in one bounded queue served by a
 * few workers, so a slow receiver delays alerts but cannot grow memory without bound.
 */
export class WebhookNotifier implements Notifier {
  readonly stats: NotifierStats = { delivered: 0, failed: 0, dropped: 0, retries: 0 };
  private readonly queue: Job[] = [];
  private active = 0;
  private readonly agent: Agent;
  private readonly stopping = new AbortController();
  private readonly o: Required<Omit<WebhookNotifierOptions, 'secrets' | 'log'>> & Pick<WebhookNotifierOptions, 'secrets' | 'log'>;

  constructor(options: WebhookNotifierOptions = {}) {
    this.o = {
      timeoutMs: 5000,
      maxAttempts: 4,
      backoffBaseMs: 500,
      backoffCapMs: 30_000,
      maxRetryAfterMs: 60_000,
      queueSize: 1000,
      concurrency: 4,
      random: Math.random,
      ...options,
    };
    this.agent = new Agent({ connect: { timeout: this.o.timeoutMs }, keepAliveTimeout: 10_000 });
  }

  async notify(n: AlertNotification, targets: readonly NotifyTarget[]): Promise<string> {
    if (targets.length === 0) return 'none';
    const results = await Promise.all(targets.map((t) => this.enqueue(n, t.webhook)));
    const failures: string[] = [];
    results.forEach((r, i) => {
      if (!r.ok) failures.push(`${hostOf(targets[i]!.webhook.url)}: ${r.reason}`);
    });
    if (failures.length === 0) return 'delivered';
    const delivered = results.length - failures.length;
    return `failed: ${failures.join('; ')}${delivered > 0 ? ` (delivered to ${delivered} of ${results.length})` : ''}`;
  }

  /** Fails queued and retrying deliveries ("notifier closed") and releases connections. */
  async close(): Promise<void> {
    this.stopping.abort();
    for (const job of this.queue.splice(0)) job.done({ ok: false, reason: 'notifier closed' });
    await this.agent.close();
  }

  private enqueue(n: AlertNotification, hook: Webhook): Promise<Result> {
    if (this.stopping.signal.aborted) return Promise.resolve({ ok: false, reason: 'notifier closed' });
    if (this.queue.length >= this.o.queueSize) {
      this.stats.dropped++;
      this.o.log?.warn({ source: n.source, namespace: n.namespace }, 'webhook queue full; notification dropped');
      return Promise.resolve({ ok: false, reason: 'dropped: queue full' });
    }
    return new Promise<Result>((done) => {
      this.queue.push({ n, hook, done });
      this.pump();
    });
  }

  private pump(): void {
    while (this.active < this.o.concurrency && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.active++;
      void this.deliver(job)
        .then((r) => {
          if (r.ok) this.stats.delivered++;
          else this.stats.failed++;
          job.done(r);
        })
        .finally(() => {
          this.active--;
          this.pump();
        });
    }
  }

  private async deliver(job: Job): Promise<Result> {
    const { n, hook } = job;
    const body = webhookBody(n);
    let secret: string | undefined;
    if (hook.secretRef) {
      const ref = hook.secretRef;
      try {
        secret = this.o.secrets ? await this.o.secrets(n.namespace, ref.name, ref.key) : undefined;
      } catch (e) {
        return { ok: false, reason: `secret ${ref.name}/${ref.key} unreadable: ${e instanceof Error ? e.message : String(e)}` };
      }
      // Never send unsigned what the receiver expects signed.
      if (secret === undefined) return { ok: false, reason: `secret ${ref.name} has no key ${ref.key}` };
    }
    const base: Record<string, string> = {
      ...hook.headers,
      'content-type': 'application/json',
      'user-agent': 'plinth-alerting',
      // The same id on every retry lets a receiver drop duplicates of a delivery it already processed.
      'x-plinth-delivery': randomUUID(),
    };
    for (let attempt = 1; ; attempt++) {
      const headers = { ...base };
      if (secret !== undefined) {
        // Signed per attempt: receivers that refuse stale timestamps still accept a late retry.
        const ts = String(Math.floor(Date.now() / 1000));
        headers[WEBHOOK_TIMESTAMP_HEADER] = ts;
        headers[WEBHOOK_SIGNATURE_HEADER] = signWebhook(secret, ts, body);
      }
      let reason: string;
      let retryable = true;
      let wait: number | undefined;
      try {
        const res = await request(hook.url, {
          method: 'POST',
          headers,
          body,
          dispatcher: this.agent,
          headersTimeout: this.o.timeoutMs,
          bodyTimeout: this.o.timeoutMs,
          signal: this.stopping.signal,
        });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) return { ok: true, reason: 'delivered' };
        reason = `HTTP ${res.statusCode}`;
        retryable = res.statusCode >= 500 || res.statusCode === 429;
        wait = retryAfterMs(res.headers['retry-after'], Date.now());
      } catch (e) {
        if (this.stopping.signal.aborted) return { ok: false, reason: 'notifier closed' };
        reason = errorReason(e);
      }
      if (!retryable || attempt >= this.o.maxAttempts) return { ok: false, reason: attempt > 1 ? `${reason} after ${attempt} attempts` : reason };
      const backoff = this.o.random() * Math.min(this.o.backoffCapMs, this.o.backoffBaseMs * 2 ** (attempt - 1));
      this.stats.retries++;
      try {
        await sleep(Math.min(this.o.maxRetryAfterMs, Math.max(backoff, wait ?? 0)), undefined, { signal: this.stopping.signal });
      } catch {
        return { ok: false, reason: 'notifier closed' };
      }
    }
  }
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'invalid-url';
  }
}

function errorReason(e: unknown): string {
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  return e instanceof Error ? e.message.slice(0, 200) : 'network error';
}
