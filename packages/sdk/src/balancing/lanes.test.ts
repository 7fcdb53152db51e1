import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getLane, parseBaggage, serializeBaggage, setLane, setUserId, stripInternal } from './baggage.js';
import type { EndpointSet } from './endpoints.js';
import { cookieValue, LaneRouter, laneRulesOf, matchLane, routeLane, stringMatches, type LaneRequest, type LaneRule } from './lanes.js';
import { RoundRobinBalancer } from './round-robin.js';
import { count, inst, seeded, setOf } from './testkit.test.helpers.js';

const req = (headers: Record<string, string | undefined>, extra: Partial<LaneRequest> = {}): LaneRequest => ({ headers, ...extra });

describe('lane routing', () => {
  const set = setOf(inst('b1'), inst('b2'), inst('g1', { lane: 'gray' }), inst('x1', { lane: 'blue' }));

  it('routes a lane to its endpoints, a missing lane to base, strict to nothing', () => {
    assert.deepEqual(routeLane(set, 'gray')?.items.map((e) => e.id), ['g1']);
    assert.deepEqual(routeLane(set, undefined)?.items.map((e) => e.id), ['b1', 'b2']);
    assert.deepEqual(routeLane(set, 'canary')?.items.map((e) => e.id), ['b1', 'b2']);
    assert.equal(routeLane(set, 'canary', 'strict'), undefined);
    assert.equal(routeLane(set, 'gray', 'strict'), set.lane('gray'));
    // No base endpoints: a lane-less call is not sent into someone's lane.
    assert.equal(routeLane(setOf(inst('g', { lane: 'gray' })), undefined), undefined);
  });

  it('applies per-lane fallbacks from a policy', () => {
    const router = new LaneRouter([{ name: 'blue' }, { name: 'canary', fallback: 'strict' }]);
    assert.equal(router.route(set, 'canary'), undefined);
    assert.equal(router.route(set, 'green'), set.base);
    assert.equal(router.route(set, 'blue'), set.lane('blue'));
    assert.equal(new LaneRouter([], 'strict').route(set, 'green'), undefined);
    assert.equal(new LaneRouter([], 'strict').route(set, undefined), set.base);
  });

  it('carries the lane through a three-hop chain by baggage alone', () => {
    // edge → web → orders → stock. Only orders has a gray deployment.
    const fleets: Record<string, EndpointSet> = {
      web: setOf(inst('web-1'), inst('web-2')),
      orders: setOf(inst('orders-1'), inst('orders-gray-1', { lane: 'gray' })),
      stock: setOf(inst('stock-1')),
    };
    const router = new LaneRouter([{ name: 'gray', match: [{ headers: { 'x-canary': { exact: 'yes' } } }] }]);
    const rr = new RoundRobinBalancer({ random: () => 0 });

    const chain = (incoming: LaneRequest): string[] => {
      // The edge strips client-set internal baggage, then colours the request by the policy.
      const baggage = stripInternal(parseBaggage(incoming.headers['baggage']));
      const lane = router.enter(incoming);
      if (lane !== undefined) setLane(baggage, lane);
      let header = serializeBaggage(baggage);
      const visited: string[] = [];
      for (const hop of ['web', 'orders', 'stock']) {
        const fleet = fleets[hop];
        assert.ok(fleet);
        // Each hop: parse what arrived, route its outbound call by the lane, forward the same baggage.
        const b = parseBaggage(header);
        const ep = rr.pick(router.route(fleet, getLane(b)) ?? fleet.base);
        visited.push(ep?.id ?? 'none');
        header = serializeBaggage(b);
      }
      assert.equal(getLane(parseBaggage(header)), lane);
      return visited;
    };

    assert.deepEqual(chain(req({ 'x-canary': 'yes', baggage: 'tenant=acme' })), ['web-1', 'orders-gray-1', 'stock-1']);
    assert.deepEqual(chain(req({ baggage: 'plinth.lane=gray,tenant=acme' })), ['web-2', 'orders-1', 'stock-1']);
  });
});

describe('lane entry', () => {
  it('matches headers (names in any case), with exact, prefix and anchored regex', () => {
    const rules: LaneRule[] = [
      { lane: 'a', match: { headers: { 'X-Canary': { exact: '1' } } } },
      { lane: 'b', match: { headers: { 'x-version': { prefix: 'v2' } } } },
      { lane: 'c', match: { headers: { 'x-region': { regex: 'eu-(west|north)' } } } },
    ];
    assert.equal(matchLane(rules, req({ 'x-canary': '1' })), 'a');
    assert.equal(matchLane(rules, req({ 'x-canary': '10' })), undefined);
    assert.equal(matchLane(rules, req({ 'x-version': 'v2.3' })), 'b');
    assert.equal(matchLane(rules, req({ 'x-region': 'eu-west' })), 'c');
    assert.equal(matchLane(rules, req({ 'x-region': 'xeu-westx' })), undefined, 'regex is anchored');
    assert.equal(matchLane(rules, req({ 'x-canary': '1', 'x-version': 'v2' })), 'a', 'first match wins');
    assert.equal(stringMatches({ regex: '(' }, '('), false, 'an invalid regex never matches');
  });

  it('matches cookies, parsed or from the Cookie header', () => {
    const rules = laneRulesOf([{ name: 'gray', match: [{ cookies: { canary: { exact: 'on' } } }] }]);
    assert.equal(matchLane(rules, req({}, { cookies: { canary: 'on' } })), 'gray');
    assert.equal(matchLane(rules, req({ cookie: 'sid=1; canary=on; x=2' })), 'gray');
    assert.equal(matchLane(rules, req({ cookie: 'sid=1; notcanary=on' })), undefined);
    assert.equal(cookieValue('a=1; b="q"', 'b'), 'q');
    assert.equal(cookieValue(undefined, 'b'), undefined);
  });

  it('admits a sticky percentage of users by hash', () => {
    const rules = laneRulesOf([{ name: 'gray', match: [{ userPercent: 10 }] }]);
    const users = Array.from({ length: 10_000 }, (_, i) => `u${i}`);
    const first = users.map((u) => matchLane(rules, req({}, { userId: u })));
    const share = first.filter((l) => l === 'gray').length / users.length;
    assert.ok(share > 0.08 && share < 0.12, `share ${share}`);
    // Stickiness: the same user gets the same answer every time (random must not matter).
    assert.deepEqual(users.map((u) => matchLane(rules, req({}, { userId: u }), seeded(99))), first);
    assert.equal(matchLane(rules, req({})), undefined, 'no user id, no hash entry');
    // Salting by lane name: two 10% lanes do not select the same users.
    const other = laneRulesOf([{ name: 'blue', match: [{ userPercent: 10 }] }]);
    const overlap = users.filter((u, i) => first[i] === 'gray' && matchLane(other, req({}, { userId: u })) === 'blue').length;
    assert.ok(overlap < 200, `overlap ${overlap}`);
    assert.equal(matchLane(laneRulesOf([{ name: 'all', match: [{ userPercent: 100 }] }]), req({}, { userId: 'x' })), 'all');
    assert.equal(matchLane(laneRulesOf([{ name: 'none', match: [{ userPercent: 0 }] }]), req({}, { userId: 'x' })), undefined);
  });

  it('admits a random share of requests by weight, after the other conditions', () => {
    const rules = laneRulesOf([{ name: 'gray', match: [{ weight: 5 }] }]);
    const random = seeded(7);
    const c = count(10_000, () => matchLane(rules, req({}), random));
    const share = (c.get('gray') ?? 0) / 10_000;
    assert.ok(share > 0.04 && share < 0.06, `share ${share}`);
    let draws = 0;
    const spy = () => (draws++, 0);
    const gated = laneRulesOf([{ name: 'g', match: [{ headers: { 'x-beta': { exact: '1' } }, weight: 50 }] }]);
    assert.equal(matchLane(gated, req({}), spy), undefined);
    assert.equal(draws, 0, 'no random draw for requests that fail the header condition');
    assert.equal(matchLane(gated, req({ 'x-beta': '1' }), spy), 'g');
  });

  it('edge stripping keeps internal keys only where allowed', () => {
    const b = parseBaggage('plinth.lane=gray,plinth.stress=1,user.id=42,tenant=acme');
    assert.deepEqual([...stripInternal(b).keys()], ['tenant']);
    assert.deepEqual([...stripInternal(b, ['plinth.lane']).keys()], ['plinth.lane', 'tenant']);
    setUserId(b, 'u-7');
    assert.equal(b.get('user.id')?.value, 'u-7');
  });
});
