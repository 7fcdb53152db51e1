import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, type NotifyTarget } from '@plinth/core';
import { randomBytes } from 'node:crypto';
import { Keyring } from '../../secrets/keyring.js';
import { sealSecret } from '../../secrets/sealing.js';
import { T0, openStores, startReceiver, type Receiver, type Stores } from './test-helpers.js';
import { WebhookNotifier, retryAfterMs, signWebhook, storeSecretResolver, type AlertNotification } from './webhook.js';

const alert: AlertNotification = {
  status: 'firing',
  source: 'Slo/checkout',
  namespace: 'shop',
  severity: 'page',
  summary: 'burn 1h/5m 20x ≥ 14.4x',
  details: { 'burn.1h': 20 },
  atMs: T0,
};

const to = (url: string, extra: Partial<NotifyTarget['webhook']> = {}): NotifyTarget => ({ webhook: { url, ...extra } });

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((ok) => srv.close(() => ok()));
  return port;
}

describe('WebhookNotifier', () => {
  let hook: Receiver;
  let notifier: WebhookNotifier | undefined;
  beforeEach(async () => {
    hook = await startReceiver();
  });
  afterEach(async () => {
    await notifier?.close();
    notifier = undefined;
    await hook.close();
  });

  it('retries 503s and signs every attempt with the Secret named by secretRef', async () => {
    const s: Stores = await openStores();
    try {
      const keyring = Keyring.fromEnv(randomBytes(32).toString('base64'));
      await s.store.put({ kind: 'Secret', namespace: 'shop', name: 'hooks', labels: {}, annotations: {}, spec: sealSecret({ data: { 'signing-key': 'k3y' } }, 'shop', 'hooks', keyring) });
      notifier = new WebhookNotifier({ backoffBaseMs: 1, backoffCapMs: 5, secrets: storeSecretResolver(s.store, keyring) });
      hook.answer = (n) => (n === 1 ? { status: 503, headers: { 'retry-after': '0' } } : n === 2 ? { status: 503 } : { status: 200 });

      const outcome = await notifier.notify(alert, [to(hook.url, { headers: { authorization: 'Bearer t' }, secretRef: { name: 'hooks', key: 'signing-key' } })]);
      assert.equal(outcome, 'delivered');
      assert.equal(hook.received.length, 3);
      assert.deepEqual(notifier.stats, { delivered: 1, failed: 0, dropped: 0, retries: 2 });
      for (const r of hook.received) {
        const ts = String(r.headers[WEBHOOK_TIMESTAMP_HEADER]);
        assert.equal(r.headers[WEBHOOK_SIGNATURE_HEADER], signWebhook('k3y', ts, r.raw));
        assert.match(String(r.headers[WEBHOOK_SIGNATURE_HEADER]), /^sha256=[0-9a-f]{64}$/);
        assert.equal(r.headers.authorization, 'Bearer t');
        assert.equal(r.headers['content-type'], 'application/json');
        // One delivery id across retries, so the receiver can drop duplicates.
        assert.equal(r.headers['x-plinth-delivery'], hook.received[0]?.headers['x-plinth-delivery']);
      }
      assert.deepEqual(hook.received[2]?.body, {
        status: 'firing',
        source: 'Slo/checkout',
        namespace: 'shop',
        severity: 'page',
        summary: 'burn 1h/5m 20x ≥ 14.4x',
        details: { 'burn.1h': 20 },
        at: '2030-01-07T12:00:00.000Z',
      });
    } finally {
      await s.close();
    }
  });

  it('sends nothing unsigned when the signing key is missing', async () => {
    notifier = new WebhookNotifier({ secrets: async () => undefined });
    const outcome = await notifier.notify(alert, [to(hook.url, { secretRef: { name: 'hooks', key: 'signing-key' } })]);
    assert.equal(outcome, `failed: ${new URL(hook.url).host}: secret hooks has no key signing-key`);
    assert.equal(hook.received.length, 0);
  });

  it('does not retry a 4xx other than 429', async () => {
    notifier = new WebhookNotifier({ backoffBaseMs: 1 });
    hook.answer = () => ({ status: 400 });
    assert.equal(await notifier.notify(alert, [to(hook.url)]), `failed: ${new URL(hook.url).host}: HTTP 400`);
    assert.equal(hook.received.length, 1);
  });

  it('waits as long as a 429 Retry-After asks', async () => {
    // No jitter: the only wait is the one the receiver asked for.
    notifier = new WebhookNotifier({ backoffBaseMs: 1, random: () => 0 });
    const at: number[] = [];
    hook.answer = (n) => {
      at.push(Date.now());
      return n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 204 };
    };
    assert.equal(await notifier.notify(alert, [to(hook.url)]), 'delivered');
    assert.ok(at[1]! - at[0]! >= 900, `retried after ${at[1]! - at[0]!} ms`);
  });

  it('retries network errors and reports the last one, host only', async () => {
    notifier = new WebhookNotifier({ backoffBaseMs: 1, backoffCapMs: 2, maxAttempts: 3 });
    const port = await freePort();
    const outcome = await notifier.notify(alert, [to(`http://127.0.0.1:${port}/secret-token-in-path`), to(hook.url)]);
    assert.equal(outcome, `failed: 127.0.0.1:${port}: ECONNREFUSED after 3 attempts (delivered to 1 of 2)`);
    assert.equal(notifier.stats.retries, 2);
  });

  it('drops and counts deliveries beyond the queue, and fails pending ones on close', async () => {
    notifier = new WebhookNotifier({ concurrency: 1, queueSize: 1 });
    hook.answer = () => 'hang';
    const inFlight = notifier.notify(alert, [to(hook.url)]);
    const queued = notifier.notify(alert, [to(hook.url)]);
    const host = new URL(hook.url).host;
    assert.equal(await notifier.notify(alert, [to(hook.url)]), `failed: ${host}: dropped: queue full`);
    assert.equal(notifier.stats.dropped, 1);
    await notifier.close();
    assert.equal(await queued, `failed: ${host}: notifier closed`);
    assert.equal(await inFlight, `failed: ${host}: notifier closed`);
    notifier = undefined;
  });

  it('has no targets to notify: none', async () => {
    notifier = new WebhookNotifier();
    assert.equal(await notifier.notify(alert, []), 'none');
  });
});

describe('retryAfterMs', () => {
  it('reads delay-seconds and HTTP dates', () => {
    assert.equal(retryAfterMs('3', T0), 3000);
    assert.equal(retryAfterMs(new Date(T0 + 5000).toUTCString(), T0), 5000);
    assert.equal(retryAfterMs(new Date(T0 - 5000).toUTCString(), T0), 0);
    assert.equal(retryAfterMs('soon', T0), undefined);
    assert.equal(retryAfterMs(undefined, T0), undefined);
  });
});
