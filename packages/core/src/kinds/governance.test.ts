import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { faultInjectionExpired, type FaultInjectionSpec, type FaultToleranceSpec, type TrafficPolicySpec } from './governance.js';
import { edit, specErrors, specFields, validateSpec } from './validation.test.helpers.js';

const validate = validateSpec;
const errorsOf = specErrors;
const fieldsOf = specFields;

const ft = {
  rules: [
    {
      name: 'protect-create',
      targets: [{ service: 'orders', endpoints: ['/orders'], methods: ['POST'], callers: ['web'] }],
      strategies: [{ type: 'rateLimit', threshold: 100, behavior: 'warmUp', warmUpPeriodSec: 10, key: { source: 'header', header: 'x-tenant' } }],
      fallbackAction: { statusCode: 429, body: 'busy', headers: { 'retry-after': '1' } },
    },
    {
      name: 'calls-to-payments',
      targets: [{ service: 'payments' }],
      strategies: [
        { type: 'circuitBreaker', threshold: 50 },
        { type: 'retry' },
        { type: 'timeout', timeoutMs: 800 },
        { type: 'concurrencyLimit', maxConcurrency: 64, side: 'outbound' },
      ],
    },
    {
      name: 'cluster-quota',
      targets: [{ service: 'orders' }],
      strategies: [
        { type: 'rateLimit', threshold: 5000, limitMode: 'global', cluster: {} },
        { type: 'adaptiveOverload', triggerThreshold: 200 },
      ],
    },
  ],
};

const tp = {
  lanes: [
    {
      name: 'gray',
      services: ['orders', 'payments'],
      entry: [
        { match: { headers: { 'x-lane': { exact: 'gray' } } } },
        { match: { cookies: { lane: { exact: 'gray' } } } },
        { userIdHashPercent: 5 },
        { match: { path: { prefix: '/checkout' }, methods: ['GET'] }, weight: 1 },
      ],
    },
  ],
  routing: [{ service: 'orders', splits: [{ version: '2.0.0', weight: 10 }, { version: '1.9.0', weight: 90 }] }],
  loadBalancing: [
    { service: 'carts', policy: 'consistentHash', hashKey: { source: 'baggage', name: 'user.id' } },
    { service: 'catalog', policy: 'zoneAware', spillOverThresholdPercent: 70 },
    { service: '*' },
  ],
  trustedIdentities: [{ subject: { kind: 'ServiceAccount', namespace: 'retail', name: 'loadgen' }, baggageKeys: ['plinth.stress'] }],
};

const fi = {
  expiresAt: '2030-01-01T00:00:00Z',
  rules: [
    {
      name: 'slow-payments',
      targets: [{ service: 'payments' }],
      match: { lanes: ['gray'], headers: { 'x-chaos': { exact: 'on' } } },
      delay: { fixedDelayMs: 300, percentage: 50 },
      abort: { statusCode: 503, percentage: 5 },
    },
  ],
};

describe('FaultTolerance', () => {
  it('parses a full example and fills defaults', () => {
    const s = validate('FaultTolerance', ft) as FaultToleranceSpec;
    const [r0, r1, r2] = s.rules;
    assert.deepEqual(r0?.strategies[0], {
      type: 'rateLimit',
      threshold: 100,
      statDurationSec: 1,
      limitMode: 'local',
      behavior: 'warmUp',
      warmUpPeriodSec: 10,
      key: { source: 'header', header: 'x-tenant' },
    });
    assert.deepEqual(r0?.fallbackAction, { statusCode: 429, body: 'busy', contentType: 'text/plain; charset=utf-8', headers: { 'retry-after': '1' } });
    assert.deepEqual(r1?.strategies, [
      {
        type: 'circuitBreaker',
        strategy: 'errorRatio',
        threshold: 50,
        minRequestAmount: 5,
        window: { type: 'time', durationMs: 10_000 },
        recoveryTimeoutMs: 5000,
        halfOpenProbes: 1,
        failureStatuses: ['5xx'],
        scope: 'instance',
      },
      { type: 'retry', maxAttempts: 3, backoffBaseMs: 25, backoffCapMs: 1000, retryOn: [502, 503, 504], budgetPercent: 20, minRetriesPerSecond: 10 },
      { type: 'timeout', timeoutMs: 800 },
      { type: 'concurrencyLimit', maxConcurrency: 64, maxQueue: 0, queueTimeoutMs: 1000, side: 'outbound' },
    ]);
    assert.deepEqual(r2?.strategies[0], { type: 'rateLimit', threshold: 5000, statDurationSec: 1, limitMode: 'global', behavior: 'reject', cluster: { redisTimeoutMs: 20, fallback: 'local' } });
    assert.deepEqual(r2?.strategies[1], { type: 'adaptiveOverload', metricType: 'eventLoopDelayMs', triggerThreshold: 200, adaptiveStrategy: 'bbr' });
  });

  it('accepts the other behaviours and breaker strategies', () => {
    validate('FaultTolerance', edit(ft, (d) => (d.rules[0].strategies[0] = { type: 'rateLimit', threshold: 10, behavior: 'throttle', maxQueueingTimeMs: 500 })));
    validate('FaultTolerance', edit(ft, (d) => (d.rules[1].strategies[0] = { type: 'circuitBreaker', strategy: 'slowRequestRatio', threshold: 60, slowThresholdMs: 500, forcedState: 'open' })));
    validate('FaultTolerance', edit(ft, (d) => (d.rules[1].strategies[0] = { type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 5, window: { type: 'count' }, scope: 'service', failureStatuses: ['5xx', 429] })));
  });

  const cases: [string, (d: any) => void, string][] = [
    ['threshold must be positive', (d) => (d.rules[0].strategies[0].threshold = 0), 'spec.rules[0].strategies[0].threshold'],
    ['warmUp requires warmUpPeriodSec', (d) => delete d.rules[0].strategies[0].warmUpPeriodSec, 'spec.rules[0].strategies[0].warmUpPeriodSec'],
    ['warmUpPeriodSec only with warmUp', (d) => (d.rules[0].strategies[0].behavior = 'reject'), 'spec.rules[0].strategies[0].warmUpPeriodSec'],
    ['throttle requires maxQueueingTimeMs', (d) => (d.rules[0].strategies[0] = { type: 'rateLimit', threshold: 1, behavior: 'throttle' }), 'spec.rules[0].strategies[0].maxQueueingTimeMs'],
    ['unknown behaviour', (d) => (d.rules[0].strategies[0].behavior = 'queue'), 'spec.rules[0].strategies[0].behavior'],
    ['header key needs a header name', (d) => delete d.rules[0].strategies[0].key.header, 'spec.rules[0].strategies[0].key.header'],
    ['cluster only in global mode', (d) => (d.rules[2].strategies[0].limitMode = 'local'), 'spec.rules[2].strategies[0].cluster'],
    ['redis timeout bounded', (d) => (d.rules[2].strategies[0].cluster = { redisTimeoutMs: 5000 }), 'spec.rules[2].strategies[0].cluster.redisTimeoutMs'],
    ['unknown strategy type', (d) => (d.rules[1].strategies[0].type = 'bulkhead'), 'spec.rules[1].strategies[0].type'],
    ['ratio threshold is a percentage', (d) => (d.rules[1].strategies[0].threshold = 150), 'spec.rules[1].strategies[0].threshold'],
    ['consecutive failures is a whole number', (d) => (d.rules[1].strategies[0] = { type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 2.5 }), 'spec.rules[1].strategies[0].threshold'],
    ['slowRequestRatio requires slowThresholdMs', (d) => (d.rules[1].strategies[0].strategy = 'slowRequestRatio'), 'spec.rules[1].strategies[0].slowThresholdMs'],
    ['failure status out of range', (d) => (d.rules[1].strategies[0].failureStatuses = ['5xx', 700]), 'spec.rules[1].strategies[0].failureStatuses[1]'],
    ['failure status class malformed', (d) => (d.rules[1].strategies[0].failureStatuses = ['6xx']), 'spec.rules[1].strategies[0].failureStatuses[0]'],
    ['halfOpenProbes at least 1', (d) => (d.rules[1].strategies[0].halfOpenProbes = 0), 'spec.rules[1].strategies[0].halfOpenProbes'],
    ['count window too small for minRequestAmount', (d) => (d.rules[1].strategies[0].window = { type: 'count', size: 3 }), 'spec.rules[1].strategies[0].minRequestAmount'],
    ['window type unknown', (d) => (d.rules[1].strategies[0].window = { type: 'sliding' }), 'spec.rules[1].strategies[0].window.type'],
    ['forced state unknown', (d) => (d.rules[1].strategies[0].forcedState = 'halfOpen'), 'spec.rules[1].strategies[0].forcedState'],
    ['retry attempts bounded', (d) => (d.rules[1].strategies[1].maxAttempts = 11), 'spec.rules[1].strategies[1].maxAttempts'],
    ['backoff cap below base', (d) => Object.assign(d.rules[1].strategies[1], { backoffBaseMs: 500, backoffCapMs: 100 }), 'spec.rules[1].strategies[1].backoffCapMs'],
    ['retry budget is a percentage', (d) => (d.rules[1].strategies[1].budgetPercent = 101), 'spec.rules[1].strategies[1].budgetPercent'],
    ['timeout must be a whole number of ms', (d) => (d.rules[1].strategies[2].timeoutMs = 1.5), 'spec.rules[1].strategies[2].timeoutMs'],
    ['concurrency side unknown', (d) => (d.rules[1].strategies[3].side = 'both'), 'spec.rules[1].strategies[3].side'],
    ['cpu trigger at most 100', (d) => (d.rules[2].strategies[1] = { type: 'adaptiveOverload', metricType: 'cpuPercentage', triggerThreshold: 120 }), 'spec.rules[2].strategies[1].triggerThreshold'],
    ['duplicate strategy type in a rule', (d) => d.rules[1].strategies.push({ type: 'timeout', timeoutMs: 5 }), 'spec.rules[1].strategies[4].type'],
    ['duplicate rule name', (d) => (d.rules[2].name = 'protect-create'), 'spec.rules[2].name'],
    ['target service must be a DNS name', (d) => (d.rules[0].targets[0].service = 'Orders'), 'spec.rules[0].targets[0].service'],
    ['endpoint must be a path', (d) => (d.rules[0].targets[0].endpoints = ['orders']), 'spec.rules[0].targets[0].endpoints[0]'],
    ['method unknown', (d) => (d.rules[0].targets[0].methods = ['FETCH']), 'spec.rules[0].targets[0].methods[0]'],
    ['a rule needs targets', (d) => (d.rules[0].targets = []), 'spec.rules[0].targets'],
    ['fallback status bounded', (d) => (d.rules[0].fallbackAction.statusCode = 99), 'spec.rules[0].fallbackAction.statusCode'],
  ];
  for (const [what, change, field] of cases) {
    it(`reports ${what} at ${field}`, () => assert.deepEqual(fieldsOf('FaultTolerance', edit(ft, change)), [field]));
  }

  it('rejects unknown fields at the object that holds them', () => {
    const errs = errorsOf('FaultTolerance', edit(ft, (d) => (d.rules[1].strategies[0].treshold = 5)));
    assert.deepEqual(errs, [{ field: 'spec.rules[1].strategies[0]', message: 'unknown field(s): treshold' }]);
    assert.deepEqual(fieldsOf('FaultTolerance', edit(ft, (d) => (d.rules[0].target = d.rules[0].targets))), ['spec.rules[0]']);
    assert.deepEqual(fieldsOf('FaultTolerance', edit(ft, (d) => (d.version = 2))), ['spec']);
  });

  it('explains cross-field errors in words', () => {
    const [e] = errorsOf('FaultTolerance', edit(ft, (d) => delete d.rules[0].strategies[0].warmUpPeriodSec));
    assert.equal(e?.message, 'required when behavior is warmUp');
  });
});

describe('TrafficPolicy', () => {
  it('parses a full example and fills defaults', () => {
    const s = validate('TrafficPolicy', tp) as TrafficPolicySpec;
    assert.equal(s.lanes[0]?.mode, 'fallbackToBase');
    assert.equal(s.lanes[0]?.entry.length, 4);
    assert.deepEqual(s.loadBalancing[2], { service: '*', policy: 'p2c' });
    assert.deepEqual(validate('TrafficPolicy', {}), { lanes: [], routing: [], loadBalancing: [], trustedIdentities: [] });
  });

  const cases: [string, (d: any) => void, string][] = [
    ['consistentHash requires a hash key', (d) => delete d.loadBalancing[0].hashKey, 'spec.loadBalancing[0].hashKey'],
    ['hash key only for consistentHash', (d) => (d.loadBalancing[0].policy = 'roundRobin'), 'spec.loadBalancing[0].hashKey'],
    ['header hash key needs a name', (d) => (d.loadBalancing[0].hashKey = { source: 'header' }), 'spec.loadBalancing[0].hashKey.name'],
    ['unknown policy', (d) => (d.loadBalancing[1].policy = 'random'), 'spec.loadBalancing[1].policy'],
    ['spill-over only for zoneAware', (d) => (d.loadBalancing[1].policy = 'p2c'), 'spec.loadBalancing[1].spillOverThresholdPercent'],
    ['spill-over is a percentage', (d) => (d.loadBalancing[1].spillOverThresholdPercent = 150), 'spec.loadBalancing[1].spillOverThresholdPercent'],
    ['one load-balancing entry per service', (d) => d.loadBalancing.push({ service: 'carts' }), 'spec.loadBalancing[3].service'],
    ['user-id hash share is a percentage', (d) => (d.lanes[0].entry[2].userIdHashPercent = -1), 'spec.lanes[0].entry[2].userIdHashPercent'],
    ['an entry rule needs a condition', (d) => (d.lanes[0].entry[2] = {}), 'spec.lanes[0].entry[2]'],
    ['string match needs exactly one operator', (d) => (d.lanes[0].entry[0].match.headers['x-lane'] = { exact: 'a', prefix: 'b' }), 'spec.lanes[0].entry[0].match.headers["x-lane"]'],
    ['regex must compile', (d) => (d.lanes[0].entry[0].match.headers['x-lane'] = { regex: '(' }), 'spec.lanes[0].entry[0].match.headers["x-lane"].regex'],
    ['header names are tokens', (d) => (d.lanes[0].entry[0].match.headers = { 'x lane': { exact: 'a' } }), 'spec.lanes[0].entry[0].match.headers["x lane"]'],
    ['lane mode unknown', (d) => (d.lanes[0].mode = 'loose'), 'spec.lanes[0].mode'],
    ['lane named base', (d) => (d.lanes[0].name = 'base'), 'spec.lanes[0].name'],
    ['duplicate lane', (d) => d.lanes.push({ name: 'gray', services: ['a'] }), 'spec.lanes[1].name'],
    ['split weights add up to 100', (d) => (d.routing[0].splits[1].weight = 80), 'spec.routing[0].splits'],
    ['split needs version or labels', (d) => delete d.routing[0].splits[0].version, 'spec.routing[0].splits[0]'],
    ['only internal baggage keys are trusted', (d) => (d.trustedIdentities[0].baggageKeys = ['user.id']), 'spec.trustedIdentities[0].baggageKeys[0]'],
    ['trusted subject is a ServiceAccount', (d) => (d.trustedIdentities[0].subject.kind = 'User'), 'spec.trustedIdentities[0].subject.kind'],
  ];
  for (const [what, change, field] of cases) {
    it(`reports ${what} at ${field}`, () => assert.deepEqual(fieldsOf('TrafficPolicy', edit(tp, change)), [field]));
  }

  it('rejects unknown fields', () => {
    assert.deepEqual(errorsOf('TrafficPolicy', edit(tp, (d) => (d.lanes[0].strict = true))), [{ field: 'spec.lanes[0]', message: 'unknown field(s): strict' }]);
  });
});

describe('FaultInjection', () => {
  it('parses a full example and fills defaults', () => {
    const s = validate('FaultInjection', fi) as FaultInjectionSpec;
    assert.deepEqual(s.rules[0]?.abort, { statusCode: 503, percentage: 5 });
    const d = validate('FaultInjection', { rules: [{ name: 'x', targets: [{ service: 'a' }], delay: { fixedDelayMs: 10 } }] }) as FaultInjectionSpec;
    assert.deepEqual(d.rules[0]?.delay, { fixedDelayMs: 10, percentage: 100 });
    assert.equal(d.expiresAt, undefined);
  });

  it('ends by itself at expiresAt', () => {
    const s = validate('FaultInjection', fi) as FaultInjectionSpec;
    assert.equal(faultInjectionExpired(s, Date.parse('2029-12-31T23:59:59Z')), false);
    assert.equal(faultInjectionExpired(s, Date.parse('2030-01-01T00:00:00Z')), true);
    assert.equal(faultInjectionExpired({}, Date.now()), false);
  });

  const cases: [string, (d: any) => void, string][] = [
    ['delay percentage bounded', (d) => (d.rules[0].delay.percentage = 120), 'spec.rules[0].delay.percentage'],
    ['abort percentage bounded', (d) => (d.rules[0].abort.percentage = -5), 'spec.rules[0].abort.percentage'],
    ['abort status is an error status', (d) => (d.rules[0].abort.statusCode = 200), 'spec.rules[0].abort.statusCode'],
    ['delay bounded', (d) => (d.rules[0].delay.fixedDelayMs = 0), 'spec.rules[0].delay.fixedDelayMs'],
    ['a rule needs a fault', (d) => (delete d.rules[0].delay, delete d.rules[0].abort), 'spec.rules[0]'],
    ['expiry must be an RFC 3339 time', (d) => (d.expiresAt = 'tomorrow'), 'spec.expiresAt'],
    ['lane names are DNS names', (d) => (d.rules[0].match.lanes = ['Gray']), 'spec.rules[0].match.lanes[0]'],
    ['duplicate rule name', (d) => d.rules.push({ ...d.rules[0] }), 'spec.rules[1].name'],
    ['unknown field', (d) => (d.rules[0].delay.fixedDelay = '1s'), 'spec.rules[0].delay'],
  ];
  for (const [what, change, field] of cases) {
    it(`reports ${what} at ${field}`, () => assert.deepEqual(fieldsOf('FaultInjection', edit(fi, change)), [field]));
  }
});
