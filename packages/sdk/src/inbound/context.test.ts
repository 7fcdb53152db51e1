import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { IncomingHttpHeaders } from 'node:http';
import { getLane, isStress } from '../balancing/baggage.js';
import { StaticGovernance } from '../governance/source.js';
import { CompiledTraffic } from '../governance/traffic.js';
import { ManualClock } from '../ratelimit/clock.js';
import { buildContext, compiledTrafficOf, subjectOf, type ContextOptions } from './context.js';
import { trafficPolicy } from './testkit.test.helpers.js';

const PARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const build = (headers: IncomingHttpHeaders, opts: ContextOptions = {}, identity?: string) => buildContext({ method: 'GET', path: '/orders', headers, identity }, opts);

const policy = trafficPolicy('lanes', {
  lanes: [{ name: 'gray', services: ['orders'], entry: [{ match: { headers: { 'x-lane': { exact: 'gray' } } } }] }],
  trustedIdentities: [{ subject: { kind: 'ServiceAccount', namespace: 'retail', name: 'loadgen' }, baggageKeys: ['plinth.stress'] }],
});
const traffic = new CompiledTraffic([policy]);

describe('buildContext', () => {
  it('continues the trace: same trace id and flags, a new span id', () => {
    const ctx = build({ traceparent: PARENT });
    assert.equal(ctx.trace?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.notEqual(ctx.trace?.spanId, '00f067aa0ba902b7');
    assert.match(ctx.trace?.spanId ?? '', /^[0-9a-f]{16}$/);
    assert.equal(ctx.trace?.flags, 1);
  });

  it('starts a new trace when traceparent is absent or malformed', () => {
    for (const bad of [undefined, 'garbage', '00-00000000000000000000000000000000-00f067aa0ba902b7-01', PARENT.toUpperCase(), 'x'.repeat(100_000)]) {
      const ctx = build(bad === undefined ? {} : { traceparent: bad });
      assert.match(ctx.trace?.traceId ?? '', /^[0-9a-f]{32}$/);
      assert.notEqual(ctx.trace?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    }
  });

  it('draws the trace once: every read of one context sees the same ids', () => {
    for (const headers of [{}, { traceparent: PARENT }]) {
      const ctx = build(headers);
      const first = ctx.trace;
      assert.equal(ctx.trace, first);
      assert.deepEqual({ ...ctx.trace }, { ...first });
    }
    assert.notEqual(build({}).trace?.traceId, build({}).trace?.traceId, 'each request its own trace');
  });

  it('mesh mode keeps internal baggage from Plinth callers and drops it from anonymous requests', () => {
    const baggage = 'plinth.lane=gray,plinth.stress=1,user.id=u1,biz=keep';
    const fromService = build({ baggage, 'plinth-caller': 'web' });
    assert.equal(getLane(fromService.baggage), 'gray');
    assert.equal(isStress(fromService.baggage), true);
    assert.equal(fromService.caller, 'web');
    const anonymous = build({ baggage });
    assert.deepEqual([...anonymous.baggage.keys()], ['biz']);
    assert.equal(anonymous.caller, undefined);
  });

  it('edge mode drops internal baggage except the keys trusted for the identity', () => {
    const baggage = 'plinth.lane=gray,plinth.stress=1,biz=keep';
    const edge = { trust: 'edge' as const, traffic };
    assert.deepEqual([...build({ baggage, 'plinth-caller': 'web' }, edge).baggage.keys()], ['biz'], 'a caller header alone is no proof at the edge');
    const trusted = build({ baggage }, edge, 'ServiceAccount:retail/loadgen');
    assert.deepEqual([...trusted.baggage.keys()].sort(), ['biz', 'plinth.stress']);
    assert.deepEqual([...build({ baggage }, edge, 'ServiceAccount:other/loadgen').baggage.keys()], ['biz']);
  });

  it('enters a lane by the TrafficPolicy entry rules only when the request has none', () => {
    assert.equal(getLane(build({ 'x-lane': 'gray' }, { traffic }).baggage), 'gray');
    assert.equal(getLane(build({}, { traffic }).baggage), undefined);
    assert.equal(getLane(build({ 'x-lane': 'gray', baggage: 'plinth.lane=blue', 'plinth-caller': 'web' }, { traffic }).baggage), 'blue');
  });

  it('turns plinth-timeout-ms into an absolute deadline on the monotonic clock; malformed is no deadline', () => {
    const clock = new ManualClock(5000);
    assert.equal(build({ 'plinth-timeout-ms': '250' }, { clock }).deadlineAt, 5250);
    for (const bad of ['-5', 'abc', '1.5', '', '0x10']) assert.equal(build({ 'plinth-timeout-ms': bad }, { clock }).deadlineAt, undefined, bad);
    assert.equal(build({ 'plinth-timeout-ms': '99999999999999999999999' }, { clock }).deadlineAt, 5000 + 86_400_000);
  });

  it("takes a gRPC client's grpc-timeout as the deadline when no plinth-timeout-ms came", () => {
    const clock = new ManualClock(5000);
    assert.equal(build({ 'grpc-timeout': '2S' }, { clock }).deadlineAt, 7000);
    assert.equal(build({ 'grpc-timeout': '2S', 'plinth-timeout-ms': '300' }, { clock }).deadlineAt, 5300, 'a Plinth hop says what is left');
    assert.equal(build({ 'grpc-timeout': '2 seconds' }, { clock }).deadlineAt, undefined);
  });

  it('ignores a caller header that is not a service name, and survives huge baggage', () => {
    assert.equal(build({ 'plinth-caller': 'Bad Name!' }).caller, undefined);
    const huge = Array.from({ length: 2000 }, (_, i) => `k${i}=${'v'.repeat(20)}`).join(',');
    const ctx = build({ baggage: huge });
    assert.ok(ctx.baggage.size > 0 && ctx.baggage.size <= 180);
  });

  it('parses subject ids as core formats them', () => {
    assert.deepEqual(subjectOf('ServiceAccount:retail/loadgen'), { kind: 'ServiceAccount', namespace: 'retail', name: 'loadgen' });
    assert.equal(subjectOf('nonsense'), undefined);
  });

  it('compiles the TrafficPolicies once per governance version', () => {
    const gov = new StaticGovernance();
    const empty = compiledTrafficOf(gov);
    assert.equal(compiledTrafficOf(gov), empty);
    gov.set({ trafficPolicies: [policy] });
    const next = compiledTrafficOf(gov);
    assert.notEqual(next, empty);
    assert.equal(next.hasEntryRules, true);
    assert.equal(compiledTrafficOf(gov), next);
  });
});
