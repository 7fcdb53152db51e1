import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getKind } from './index.js';
import { DEFAULT_BURN_RATE_ALERTS, windowMs, type AlertRuleSpec, type SloSpec } from './observability.js';
import { edit, specErrors, specFields, validateSpec } from './validation.test.helpers.js';

const validate = validateSpec;
const errorsOf = specErrors;
const fieldsOf = specFields;

const slo = {
  target: { service: 'gateway', journey: { name: 'checkout', endpoints: ['POST /checkout', 'POST /payments'] } },
  indicator: 'availability',
  objectivePercent: 99.9,
  notify: [{ webhook: { url: 'https://hooks.example.com/plinth', headers: { authorization: 'Bearer x' }, secretRef: { name: 'hooks', key: 'signing-key' } } }],
};

const latency = {
  target: { service: 'orders', endpoint: 'GET /orders/:id' },
  indicator: 'latency',
  thresholdMs: 300,
  objectivePercent: 99,
  windowDays: 7,
  alerting: { burnRates: [{ longWindow: '1h', shortWindow: '5m', burnRate: 10, severity: 'page' }] },
};

const rule = {
  target: { service: 'orders', endpoint: 'POST /orders' },
  metric: 'p99Ms',
  op: 'gt',
  threshold: 500,
  periodSec: 120,
  forPeriods: 3,
  silenceSec: 600,
  severity: 'page',
  notify: [{ webhook: { url: 'http://127.0.0.1:9000/hook' } }],
};

describe('Slo', () => {
  it('is a registered kind', () => {
    assert.ok(getKind('Slo'));
    assert.ok(getKind('AlertRule'));
  });

  it('fills the SRE workbook burn-rate pairs and a 30-day window by default', () => {
    const s = validate('Slo', slo) as SloSpec;
    assert.equal(s.windowDays, 30);
    assert.deepEqual(s.alerting.burnRates, [
      { longWindow: '1h', shortWindow: '5m', burnRate: 14.4, severity: 'page' },
      { longWindow: '6h', shortWindow: '30m', burnRate: 6, severity: 'page' },
      { longWindow: '24h', shortWindow: '2h', burnRate: 3, severity: 'ticket' },
    ]);
    assert.deepEqual(s.target, slo.target);
    assert.deepEqual(s.notify, slo.notify);
    // The default is copied per document: editing one parsed spec cannot change the next one's defaults.
    s.alerting.burnRates[0]!.burnRate = 1;
    assert.equal((validate('Slo', slo) as SloSpec).alerting.burnRates[0]?.burnRate, 14.4);
    assert.equal(DEFAULT_BURN_RATE_ALERTS[0]?.burnRate, 14.4);
  });

  it('accepts a latency SLO on one endpoint with its own pairs, and a whole service', () => {
    const s = validate('Slo', latency) as SloSpec;
    assert.equal(s.thresholdMs, 300);
    assert.equal(s.alerting.burnRates.length, 1);
    assert.deepEqual(s.notify, []);
    validate('Slo', { target: { service: 'orders' }, indicator: 'availability', objectivePercent: 99.5, alerting: { burnRates: [] } });
    validate('Slo', edit(latency, (d) => (d.target.endpoint = 'orders.OrderService/Get')));
  });

  it('reads windows in minutes, hours and days', () => {
    assert.equal(windowMs('5m'), 300_000);
    assert.equal(windowMs('6h'), 21_600_000);
    assert.equal(windowMs('3d'), 259_200_000);
  });

  const cases: [string, (d: any) => void, string][] = [
    ['objective above 50', (d) => (d.objectivePercent = 50), 'spec.objectivePercent'],
    ['objective below 100', (d) => (d.objectivePercent = 100), 'spec.objectivePercent'],
    ['window at most 35 days (the rollups kept)', (d) => (d.windowDays = 36), 'spec.windowDays'],
    ['window in whole days', (d) => (d.windowDays = 1.5), 'spec.windowDays'],
    ['indicator unknown', (d) => (d.indicator = 'throughput'), 'spec.indicator'],
    ['latency needs thresholdMs', (d) => (d.indicator = 'latency'), 'spec.thresholdMs'],
    ['thresholdMs only for latency', (d) => (d.thresholdMs = 200), 'spec.thresholdMs'],
    ['target service is a DNS name', (d) => (d.target.service = 'Gateway'), 'spec.target.service'],
    ['endpoint or journey, not both', (d) => (d.target.endpoint = 'GET /'), 'spec.target.journey'],
    ['journey endpoints unique', (d) => d.target.journey.endpoints.push('POST /checkout'), 'spec.target.journey.endpoints[2]'],
    ['journey needs endpoints', (d) => (d.target.journey.endpoints = []), 'spec.target.journey.endpoints'],
    ['endpoint method in upper case', (d) => (d.target.journey.endpoints[1] = 'post /payments'), 'spec.target.journey.endpoints[1]'],
    ['endpoint route starts with /', (d) => (d.target.journey.endpoints[0] = 'POST checkout'), 'spec.target.journey.endpoints[0]'],
    ['burn-rate window format', (d) => (d.alerting = { burnRates: [{ longWindow: '1 hour', shortWindow: '5m', burnRate: 14.4, severity: 'page' }] }), 'spec.alerting.burnRates[0].longWindow'],
    ['short window shorter than long', (d) => (d.alerting = { burnRates: [{ longWindow: '1h', shortWindow: '2h', burnRate: 14.4, severity: 'page' }] }), 'spec.alerting.burnRates[0].shortWindow'],
    ['long window within the SLO window', (d) => Object.assign(d, { windowDays: 1, alerting: { burnRates: [{ longWindow: '2d', shortWindow: '2h', burnRate: 3, severity: 'ticket' }] } }), 'spec.alerting.burnRates[0].longWindow'],
    ['burn-rate severity unknown', (d) => (d.alerting = { burnRates: [{ longWindow: '1h', shortWindow: '5m', burnRate: 14.4, severity: 'critical' }] }), 'spec.alerting.burnRates[0].severity'],
    ['burn rate positive', (d) => (d.alerting = { burnRates: [{ longWindow: '1h', shortWindow: '5m', burnRate: 0, severity: 'page' }] }), 'spec.alerting.burnRates[0].burnRate'],
    [
      'duplicate window pair',
      (d) =>
        (d.alerting = {
          burnRates: [
            { longWindow: '1h', shortWindow: '5m', burnRate: 14.4, severity: 'page' },
            { longWindow: '1h', shortWindow: '5m', burnRate: 10, severity: 'ticket' },
          ],
        }),
      'spec.alerting.burnRates[1].longWindow',
    ],
    ['webhook URL is http(s)', (d) => (d.notify[0].webhook.url = 'ftp://hooks.example.com/x'), 'spec.notify[0].webhook.url'],
    ['webhook headers set by Plinth', (d) => (d.notify[0].webhook.headers = { 'Content-Type': 'text/plain' }), 'spec.notify[0].webhook.headers["Content-Type"]'],
    ['webhook header names are tokens', (d) => (d.notify[0].webhook.headers = { 'x bad': 'v' }), 'spec.notify[0].webhook.headers["x bad"]'],
    ['secretRef needs a key', (d) => delete d.notify[0].webhook.secretRef.key, 'spec.notify[0].webhook.secretRef.key'],
    ['unknown field', (d) => (d.objective = 99.9), 'spec'],
  ];
  for (const [what, change, field] of cases) {
    it(`reports ${what} at ${field}`, () => assert.deepEqual(fieldsOf('Slo', edit(slo, change)), [field]));
  }

  it('refuses a burn rate the objective can never reach, even the default one', () => {
    // At 90% every request failing burns 10x: the default 14.4x page could never fire.
    assert.deepEqual(errorsOf('Slo', edit(slo, (d) => (d.objectivePercent = 90))), [
      {
        field: 'spec.alerting.burnRates[0].burnRate',
        message: '14.4x can never be reached at objectivePercent 90 (at most 10x, every request bad); lower it or give alerting.burnRates for this objective',
      },
    ]);
    validate('Slo', edit(slo, (d) => (d.objectivePercent = 93.1)));
  });

  it('names the missing webhook and the unknown field of a notify entry', () => {
    assert.deepEqual(fieldsOf('Slo', edit(slo, (d) => (d.notify[0] = { email: 'a@b.c' }))), ['spec.notify[0].webhook', 'spec.notify[0]']);
  });

  it('explains cross-field errors in words', () => {
    assert.deepEqual(errorsOf('Slo', edit(slo, (d) => (d.indicator = 'latency'))), [{ field: 'spec.thresholdMs', message: 'required when indicator is latency' }]);
  });
});

describe('AlertRule', () => {
  it('parses an example and fills defaults', () => {
    const r = validate('AlertRule', rule) as AlertRuleSpec;
    assert.equal(r.forPeriods, 3);
    const d = validate('AlertRule', { target: { caller: 'web', callee: 'postgresql' }, metric: 'errorRate', op: 'gt', threshold: 0.05 }) as AlertRuleSpec;
    assert.deepEqual(d, { target: { caller: 'web', callee: 'postgresql' }, metric: 'errorRate', op: 'gt', threshold: 0.05, periodSec: 60, forPeriods: 1, silenceSec: 300, severity: 'ticket', notify: [] });
    validate('AlertRule', { target: { service: 'orders' }, metric: 'ratePerSec', op: 'lt', threshold: 1 });
  });

  const cases: [string, (d: any) => void, string][] = [
    ['metric unknown', (d) => (d.metric = 'p90Ms'), 'spec.metric'],
    ['op unknown', (d) => (d.op = 'gte'), 'spec.op'],
    ['threshold not negative', (d) => (d.threshold = -1), 'spec.threshold'],
    ['errorRate is a fraction', (d) => Object.assign(d, { metric: 'errorRate', threshold: 5 }), 'spec.threshold'],
    ['below zero never fires', (d) => Object.assign(d, { op: 'lt', threshold: 0 }), 'spec.threshold'],
    ['period in whole minutes', (d) => (d.periodSec = 90), 'spec.periodSec'],
    ['period at least a minute', (d) => (d.periodSec = 30), 'spec.periodSec'],
    ['forPeriods at least 1', (d) => (d.forPeriods = 0), 'spec.forPeriods'],
    ['silence bounded', (d) => (d.silenceSec = 8 * 86_400), 'spec.silenceSec'],
    ['severity unknown', (d) => (d.severity = 'critical'), 'spec.severity'],
    ['target needs something', (d) => (d.target = {}), 'spec.target'],
    ['service or edge, not both', (d) => (d.target.caller = 'web'), 'spec.target.caller'],
    ['edge needs a callee', (d) => (d.target = { caller: 'web' }), 'spec.target.callee'],
    ['edge needs a caller', (d) => (d.target = { callee: 'orders' }), 'spec.target.caller'],
    ['endpoint only with service', (d) => (d.target = { caller: 'web', callee: 'orders', endpoint: 'GET /' }), 'spec.target.endpoint'],
    ['endpoint form', (d) => (d.target.endpoint = 'GET orders'), 'spec.target.endpoint'],
    ['webhook URL valid', (d) => (d.notify[0].webhook.url = 'not a url'), 'spec.notify[0].webhook.url'],
    ['unknown target field', (d) => (d.target.lane = 'gray'), 'spec.target'],
  ];
  for (const [what, change, field] of cases) {
    it(`reports ${what} at ${field}`, () => assert.deepEqual(fieldsOf('AlertRule', edit(rule, change)), [field]));
  }
});
