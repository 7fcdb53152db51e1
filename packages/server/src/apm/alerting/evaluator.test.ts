import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { AlertEvaluator } from './evaluator.js';
import { MINUTE, T0, TestClock, clientSpan, openStores, silentLog, spanBackends, startReceiver, traffic, type Receiver, type Stores } from './test-helpers.js';
import { WebhookNotifier } from './webhook.js';

const HOUR = 60 * MINUTE;

for (const { backend, skip } of spanBackends()) {
  describe(`AlertEvaluator against the ${backend} span store`, { skip }, () => {
    let s: Stores;
    let hook: Receiver;
    let notifier: WebhookNotifier;
    let clock: TestClock;

    const evaluator = (): AlertEvaluator => new AlertEvaluator({ resources: s.resources, spans: s.spans, notifier, log: silentLog, clock });
    const events = () => s.spans.alertEvents({ namespace: 'shop' });

    beforeEach(async () => {
      s = await openStores(backend);
      hook = await startReceiver();
      notifier = new WebhookNotifier({ backoffBaseMs: 1, backoffCapMs: 5 });
      clock = new TestClock(T0);
    });
    afterEach(async () => {
      await notifier.close();
      await hook.close();
      await s.close();
    });

    describe('Slo burn rates', () => {
      // 99%: the budget is 1%; a page needs 14.4% errors over 1 h and 5 min alike.
      const putSlo = () =>
        s.put('Slo', 'shop', 'checkout', {
          target: { service: 'checkout', endpoint: 'POST /checkout' },
          indicator: 'availability',
          objectivePercent: 99,
          notify: [{ webhook: { url: hook.url } }],
        });
      const quietHistory = () => s.spans.insert(traffic({ fromMs: T0 - 10 * HOUR, toMs: T0 - HOUR, perMinute: 5 }));

      it('pages when both the 1h and the 5m window burn fast, once, and resolves when the short window recovers', async () => {
        await putSlo();
        await quietHistory();
        // The last hour: 20% errors, a burn of 20x. Over 6 h it is 3.3x and over 24 h 2x: no second page, no ticket.
        await s.spans.insert(traffic({ fromMs: T0 - HOUR, toMs: T0, perMinute: 5, badPerMinute: 1 }));
        const e = evaluator();
        await e.recover();
        assert.equal(await e.evaluateOnce(T0), true);

        const [fired, ...more] = await events();
        assert.deepEqual(more, []);
        assert.equal(fired?.state, 'firing');
        assert.equal(fired?.source, 'Slo/checkout');
        assert.equal(fired?.severity, 'page');
        assert.equal(fired?.summary, 'burn 1h/5m 20x ≥ 14.4x');
        assert.equal(fired?.notification, 'delivered');
        assert.equal(fired?.details['burn.1h'], 20);
        assert.equal(fired?.details['burn.5m'], 20);
        assert.equal(fired?.details['burn.6h'], 3.333);
        assert.equal(hook.received.length, 1);
        assert.deepEqual(hook.received[0]?.body, {
          status: 'firing',
          source: 'Slo/checkout',
          namespace: 'shop',
          severity: 'page',
          summary: 'burn 1h/5m 20x ≥ 14.4x',
          details: fired?.details,
          at: new Date(T0).toISOString(),
        });
        assert.deepEqual(
          e.firing().map((f) => [f.source, f.severity, f.sinceMs]),
          [['Slo/checkout', 'page', T0]],
        );

        // Still burning a minute later: no second notification.
        await s.spans.insert(traffic({ fromMs: T0, toMs: T0 + MINUTE, perMinute: 5, badPerMinute: 1 }));
        await e.evaluateOnce(T0 + MINUTE);
        assert.equal(hook.received.length, 1);
        assert.equal((await events()).length, 1);

        // Errors stop. The 1 h window still burns 16x, but the 5 m window is clean: the page resolves.
        await s.spans.insert(traffic({ fromMs: T0 + MINUTE, toMs: T0 + 11 * MINUTE, perMinute: 5 }));
        await e.evaluateOnce(T0 + 11 * MINUTE);
        const [resolved] = await events();
        assert.equal(resolved?.state, 'resolved');
        assert.equal(resolved?.notification, 'delivered');
        assert.match(resolved?.summary ?? '', /^burn under thresholds: 1h\/5m 16\.\dx\/0x < 14\.4x, 6h\/30m /);
        assert.equal(hook.received[1]?.body.status, 'resolved');
        assert.deepEqual(e.firing(), []);
      });

      it('does not page for a short spike alone', async () => {
        await putSlo();
        await s.spans.insert(traffic({ fromMs: T0 - 10 * HOUR, toMs: T0 - 5 * MINUTE, perMinute: 5 }));
        // Five minutes of nothing but errors: 100x over 5 m, but 8.3x over 1 h.
        await s.spans.insert(traffic({ fromMs: T0 - 5 * MINUTE, toMs: T0, perMinute: 5, badPerMinute: 5 }));
        const e = evaluator();
        await e.evaluateOnce(T0);
        assert.deepEqual(await events(), []);
        assert.equal(hook.received.length, 0);
      });

      it('does not count pressure-test traffic', async () => {
        await putSlo();
        await quietHistory();
        await s.spans.insert(traffic({ fromMs: T0 - HOUR, toMs: T0, perMinute: 5 }));
        // A load test failing half its requests, marked plinth.stress: not a user's problem.
        await s.spans.insert(traffic({ fromMs: T0 - HOUR, toMs: T0, perMinute: 5, badPerMinute: 5, stress: true }));
        await evaluator().evaluateOnce(T0);
        assert.deepEqual(await events(), []);
        assert.equal(hook.received.length, 0);
      });

      it('recovers the firing set from the history after a restart and notifies nothing twice', async () => {
        await putSlo();
        await quietHistory();
        await s.spans.insert(traffic({ fromMs: T0 - HOUR, toMs: T0, perMinute: 5, badPerMinute: 1 }));
        const before = evaluator();
        await before.evaluateOnce(T0);
        await before.stop();
        assert.equal(hook.received.length, 1);

        await s.reopenSpans();
        clock.t = T0 + MINUTE;
        const after = evaluator();
        await after.recover();
        assert.deepEqual(
          after.firing().map((f) => [f.source, f.severity, f.sinceMs, f.summary]),
          [['Slo/checkout', 'page', T0, 'burn 1h/5m 20x ≥ 14.4x']],
        );
        await s.spans.insert(traffic({ fromMs: T0, toMs: T0 + MINUTE, perMinute: 5, badPerMinute: 1 }));
        await after.evaluateOnce(T0 + MINUTE);
        assert.equal(hook.received.length, 1);
        assert.equal((await events()).length, 1);

        await s.spans.insert(traffic({ fromMs: T0 + MINUTE, toMs: T0 + 11 * MINUTE, perMinute: 5 }));
        await after.evaluateOnce(T0 + 11 * MINUTE);
        assert.deepEqual(
          (await events()).map((e) => e.state),
          ['resolved', 'firing'],
        );
        assert.equal(hook.received[1]?.body.status, 'resolved');
      });

      it('notifies once when two servers take turns evaluating', async () => {
        await putSlo();
        await quietHistory();
        await s.spans.insert(traffic({ fromMs: T0 - HOUR, toMs: T0, perMinute: 5, badPerMinute: 1 }));
        const a = evaluator();
        const b = new AlertEvaluator({ resources: s.resources, spans: await s.openSpans(), notifier, log: silentLog, clock });
        await a.recover();
        await b.recover();
        await a.evaluateOnce(T0);
        // b learns of a's firing from the history before it judges: no second page.
        await b.evaluateOnce(T0 + MINUTE);
        assert.equal(hook.received.length, 1);
        assert.deepEqual(
          b.firing().map((f) => [f.source, f.sinceMs]),
          [['Slo/checkout', T0]],
        );
        await s.spans.insert(traffic({ fromMs: T0, toMs: T0 + 11 * MINUTE, perMinute: 5 }));
        await b.evaluateOnce(T0 + 11 * MINUTE);
        await a.evaluateOnce(T0 + 12 * MINUTE);
        assert.deepEqual(
          (await events()).map((e) => e.state),
          ['resolved', 'firing'],
        );
        assert.equal(hook.received.length, 2);
        assert.deepEqual(a.firing(), []);
      });

      it('resolves the alert of a deleted Slo', async () => {
        await putSlo();
        await quietHistory();
        await s.spans.insert(traffic({ fromMs: T0 - HOUR, toMs: T0, perMinute: 5, badPerMinute: 1 }));
        const e = evaluator();
        await e.evaluateOnce(T0);
        const gone = await s.store.delete('Slo', 'shop', 'checkout');
        s.resources.onChange({ type: 'DELETED', revision: gone!.metadata.revision, resource: gone! });
        await e.evaluateOnce(T0 + MINUTE);
        const [resolved] = await events();
        assert.equal(resolved?.state, 'resolved');
        assert.equal(resolved?.summary, 'Slo/checkout no longer defines this alert');
        assert.equal(hook.received[1]?.body.status, 'resolved');
      });

      it('sums the endpoints of a journey', async () => {
        await s.put('Slo', 'shop', 'checkout-journey', {
          target: { service: 'checkout', journey: { name: 'checkout', endpoints: ['POST /checkout', 'POST /payments'] } },
          indicator: 'latency',
          thresholdMs: 300,
          objectivePercent: 99,
          alerting: { burnRates: [{ longWindow: '1h', shortWindow: '5m', burnRate: 14.4, severity: 'page' }] },
        });
        // Fast checkouts, and payments of which 2 in 5 are slow: 40% of payments, 20% of the journey.
        await s.spans.insert(traffic({ fromMs: T0 - HOUR, toMs: T0, perMinute: 5 }));
        await s.spans.insert(traffic({ endpoint: 'POST /payments', fromMs: T0 - HOUR, toMs: T0, perMinute: 3 }));
        await s.spans.insert(traffic({ endpoint: 'POST /payments', fromMs: T0 - HOUR, toMs: T0, perMinute: 2, durationMs: 2000 }));
        await evaluator().evaluateOnce(T0);
        const [fired] = await events();
        assert.equal(fired?.summary, 'burn 1h/5m 20x ≥ 14.4x');
        assert.equal(fired?.details.journey, 'checkout');
        assert.equal(fired?.notification, 'none');
      });
    });

    describe('AlertRule thresholds', () => {
      const slow = (minute: number) => s.spans.insert(traffic({ fromMs: T0 + minute * MINUTE, toMs: T0 + (minute + 1) * MINUTE, perMinute: 5, durationMs: 1000 }));
      const fast = (minute: number) => s.spans.insert(traffic({ fromMs: T0 + minute * MINUTE, toMs: T0 + (minute + 1) * MINUTE, perMinute: 5 }));
      /** Evaluates once `minute` has closed and settled (15 s). */
      const after = (e: AlertEvaluator, minute: number) => e.evaluateOnce(T0 + (minute + 1) * MINUTE + 15_000);

      it('fires after forPeriods breaching periods, resolves on a good one, and keeps quiet within silenceSec', async () => {
        await s.put('AlertRule', 'shop', 'slow-checkout', {
          target: { service: 'checkout', endpoint: 'POST /checkout' },
          metric: 'p99Ms',
          op: 'gt',
          threshold: 500,
          periodSec: 60,
          forPeriods: 3,
          silenceSec: 600,
          severity: 'page',
          notify: [{ webhook: { url: hook.url } }],
        });
        const e = evaluator();
        const states = async () => (await events()).map((x) => `${x.state}:${x.notification}`).reverse();

        for (const m of [0, 1]) {
          await slow(m);
          await after(e, m);
        }
        assert.deepEqual(await states(), []);
        await slow(2);
        await after(e, 2);
        assert.deepEqual(await states(), ['firing:delivered']);
        const [fired] = await events();
        assert.match(fired?.summary ?? '', /^checkout POST \/checkout: p99 \d+ ms > 500 ms for 3 periods$/);
        assert.equal(fired?.details.metric, 'p99Ms');
        assert.ok(Number(fired?.details.value) > 500);

        await fast(3);
        await after(e, 3);
        assert.deepEqual(await states(), ['firing:delivered', 'resolved:delivered']);
        assert.match((await events())[0]?.summary ?? '', /^checkout POST \/checkout: p99 \d+ ms, not above 500 ms$/);

        // Breaching again 4 minutes after the first notification: recorded, not notified, and neither is its end.
        for (const m of [4, 5, 6]) {
          await slow(m);
          await after(e, m);
        }
        await fast(7);
        await after(e, 7);
        assert.deepEqual(await states(), ['firing:delivered', 'resolved:delivered', 'firing:silenced', 'resolved:silenced']);
        assert.equal(hook.received.length, 2);

        // Breaching from minute 8 on: fires at minute 10, silenced until 10 min after the first notification (13:15).
        for (const m of [8, 9, 10, 11]) {
          await slow(m);
          await after(e, m);
        }
        assert.equal(hook.received.length, 2);
        await slow(12);
        await after(e, 12);
        assert.deepEqual(await states(), ['firing:delivered', 'resolved:delivered', 'firing:silenced', 'resolved:silenced', 'firing:silenced', 'firing:delivered']);
        assert.equal(hook.received.length, 3);
        assert.equal(hook.received[2]?.body.status, 'firing');
        assert.equal(hook.received[2]?.body.details.afterSilence, true);
        assert.deepEqual(
          e.firing().map((f) => f.sinceMs),
          [T0 + 11 * MINUTE + 15_000],
        );
      });

      it('fires when traffic stops, for a rate below a floor', async () => {
        await s.put('AlertRule', 'shop', 'no-traffic', { target: { service: 'checkout' }, metric: 'ratePerSec', op: 'lt', threshold: 0.05, silenceSec: 0 });
        const e = evaluator();
        await fast(0);
        await after(e, 0);
        assert.deepEqual(await events(), []);
        await after(e, 1);
        const [fired] = await events();
        assert.equal(fired?.summary, 'checkout: rate 0/s < 0.05/s');
        assert.equal(fired?.severity, 'ticket');
      });

      it('watches an edge: calls from one service to another', async () => {
        await s.put('AlertRule', 'shop', 'pricing-errors', { target: { caller: 'cart', callee: 'pricing' }, metric: 'errorRate', op: 'gt', threshold: 0.1 });
        const spans = [];
        for (let i = 0; i < 10; i++) spans.push(clientSpan({ service: 'cart', peer: 'pricing', startMs: T0 + 1000 + i, status: i < 3 ? 'error' : 'ok', httpStatus: i < 3 ? 500 : 200 }));
        await s.spans.insert(spans);
        await after(evaluator(), 0);
        const [fired] = await events();
        assert.equal(fired?.summary, 'cart → pricing: error rate 30% > 10%');
      });
    });
  });
}
