/**
 * WebSocket upgrades through the edge, on loopback: real `ws` servers as upstreams and real `ws` clients,
 * the gateway on static governance sources.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { StaticGovernance } from '@plinth/sdk';
import type { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import WebSocket from 'ws';
import { chatFixture, closed, instance, open, opened, raw, refused, roundTrip, route, sleep, staticGateway, wsSidecar, wsUpstream, type WsSidecar, type WsUpstream } from './testkit.test.helpers.js';

const anon = { auth: { mode: 'anonymous' } };

describe('gateway WebSocket proxying', () => {
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let log: Record<string, unknown>[];
  let base: WsUpstream;
  let gray: WsUpstream;
  let declining: WsUpstream;
  let wsUrl: string;

  before(async () => {
    base = await wsUpstream('base');
    gray = await wsUpstream('gray');
    declining = await wsUpstream('declining', true);
    ({ gw, governance, routes, log } = await staticGateway({ drainTimeoutMs: 500 }));
    wsUrl = gw.url.replace('http:', 'ws:');
    const chat = chatFixture(base, gray, declining);
    // `chat-next`, served by the gray upstream, takes all of `/next`'s traffic from `chat`.
    governance.set({ ...chat.governance, instances: [...chat.governance.instances, instance('next-1', 'chat-next', gray.address)] });
    routes.set([...chat.routes, route('next', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/next' } }, split: { backends: [{ service: 'chat', weight: 0 }, { service: 'chat-next', weight: 100 }] } })]);
    await sleep(50);
  });

  after(async () => {
    await gw.close();
    await Promise.all([base.close(), gray.close(), declining.close()]);
  });

  it('carries messages both ways after a handshake routed, rewritten and forwarded like a request', async () => {
    const ws = await opened(`${wsUrl}/ws/lobby?user=7`, { 'x-debug': 'on' });
    assert.equal(await roundTrip(ws, 'hello'), 'base:hello');
    assert.equal(await roundTrip(ws, 'again'), 'base:again');
    const hs = base.handshakes.at(-1)!;
    assert.equal(hs.url, '/socket/lobby?user=7');
    assert.equal(hs.headers['plinth-caller'], 'gateway');
    assert.match(String(hs.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    assert.equal(hs.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(hs.headers.host, base.address, 'Host names the instance, as on every upstream request');
    assert.equal(hs.headers['x-forwarded-host'], wsUrl.slice('ws://'.length));
    assert.equal(hs.headers['x-room-tier'], 'gold', "the route's requestHeaders edit the handshake");
    assert.equal(hs.headers['x-debug'], undefined);
    ws.close();
    await closed(ws);
    await sleep(30);
    const line = log.find((l) => l.route === 'edge/chat' && l.status === 101);
    assert.ok(line, 'one access-log line for the connection, when it closed');
    assert.equal(line.upstream, base.address);
    assert.ok(Number(line.bytesIn) > 0 && Number(line.bytesOut) > 0);
  });

  it("draws a split route's backend for the handshake, as for a request", async () => {
    const ws = await opened(`${wsUrl}/next/room`);
    assert.equal(await roundTrip(ws, 'hi'), 'gray:hi');
    ws.close();
    await closed(ws);
  });

  it('enters the lane on the handshake, as a request would', async () => {
    const ws = await opened(`${wsUrl}/ws/lobby`, { 'x-lane': 'gray' });
    assert.equal(await roundTrip(ws, 'hi'), 'gray:hi');
    ws.close();
    await closed(ws);
  });

  it('holds the admission slot while the connection is open: a concurrency limit bounds open WebSockets', async () => {
    const first = await opened(`${wsUrl}/room`);
    const scrape = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(scrape, /^plinth_gateway_websockets_open 1$/m);
    const second = refused(await open(`${wsUrl}/room`));
    assert.equal(second.status, 429);
    assert.equal(JSON.parse(second.body).code, 'concurrency_limited');
    first.close();
    await closed(first);
    await sleep(30);
    const third = await opened(`${wsUrl}/room`);
    assert.equal(await roundTrip(third, 'x'), 'base:x');
    third.terminate();
  });

  it('passes on an upstream that declines the upgrade, and refuses what no route or identity allows', async () => {
    const declined = refused(await open(`${wsUrl}/nope`));
    assert.equal(declined.status, 403);
    assert.equal(declined.headers['x-why'], 'declined');
    const missing = refused(await open(`${wsUrl}/elsewhere`));
    assert.equal(missing.status, 404);
    assert.equal(JSON.parse(missing.body).code, 'route_not_found');
    const anonymous = refused(await open(`${wsUrl}/private`));
    assert.equal(anonymous.status, 503, 'no identity provider on this gateway: auth routes are unavailable, never open');
    const st = refused(await open(`${wsUrl}/static`));
    assert.equal(st.status, 400);
  });

  it('answers upgrades to anything but WebSocket with a clean 400 and stays up', async () => {
    const answer = await raw(gw.url, 'GET /ws/x HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n', 1000);
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /only WebSocket upgrades/);
    const ws = await opened(`${wsUrl}/ws/after`);
    assert.equal(await roundTrip(ws, 'still'), 'base:still');
    ws.terminate();
  });

  it('closes the client when the upstream goes away mid-connection', async () => {
    const local = await wsUpstream('short');
    governance.set({ instances: [instance('short-1', 'short', local.address)] });
    routes.set([route('short', { ...anon, match: { path: { exact: '/short' } }, service: 'short' })]);
    await sleep(50);
    const ws = await opened(`${wsUrl}/short`);
    assert.equal(await roundTrip(ws, 'a'), 'short:a');
    const code = closed(ws);
    await local.close();
    assert.equal(await code, 1006, 'the TCP connection closed under the client');
  });
});

describe('gateway WebSocket idle timeout', () => {
  it('keeps a WebSocket with traffic open and closes one that goes quiet, saying why in the log', async () => {
    const up = await wsUpstream('up');
    const { gw, governance, routes, log } = await staticGateway({ websocketIdleTimeoutMs: 400 });
    governance.set({ instances: [instance('up-1', 'up', up.address)] });
    routes.set([route('up', { ...anon, match: { path: { exact: '/live' } }, service: 'up' })]);
    await sleep(50);
    const ws = await opened(`${gw.url.replace('http:', 'ws:')}/live`);
    const code = closed(ws);
    // Busy for well over the timeout: a message every 100 ms keeps it open.
    for (let i = 0; i < 10; i++) {
      assert.equal(await roundTrip(ws, `m${i}`), `up:m${i}`);
      await sleep(100);
    }
    assert.equal(ws.readyState, WebSocket.OPEN);
    // Then quiet: closed under the client.
    assert.equal(await code, 1006);
    await sleep(30);
    assert.ok(log.some((l) => l.route === 'edge/up' && l.status === 101 && l.reason === 'idle_timeout'));
    await gw.close();
    await up.close();
  });
});

describe('gateway WebSocket proxying at shutdown', () => {
  it('closes open WebSockets once requests are drained, so clients reconnect elsewhere', async () => {
    const up = await wsUpstream('up');
    const { gw, governance, routes } = await staticGateway({ drainTimeoutMs: 300 });
    governance.set({ instances: [instance('up-1', 'up', up.address)] });
    routes.set([route('up', { ...anon, match: { path: { exact: '/live' } }, service: 'up' })]);
    await sleep(50);
    const ws = await opened(`${gw.url.replace('http:', 'ws:')}/live`);
    assert.equal(await roundTrip(ws, 'x'), 'up:x');
    const code = closed(ws);
    await gw.close();
    assert.equal(await code, 1006);
    await up.close();
  });
});

describe('sidecar WebSocket proxying (real control plane)', () => {
  let side: WsSidecar;
  let gw: Gateway;
  let app: WsUpstream;
  let payments: WsUpstream;

  before(async () => {
    side = await wsSidecar('side-ws', 'http', [
      { kind: 'FaultTolerance', name: 'rooms', spec: { rules: [{ name: 'one-room', targets: [{ service: 'orders', endpoints: ['/room'] }], strategies: [{ type: 'concurrencyLimit', maxConcurrency: 1 }] }] } },
    ]);
    ({ gw, app, payments } = side);
  });

  after(() => side?.close());

  it('takes a WebSocket at the ingress to the app, with the caller as it came', async () => {
    const ws = await opened(`${gw.url.replace('http:', 'ws:')}/chat`, { 'plinth-caller': 'web' });
    assert.equal(await roundTrip(ws, 'hi'), 'app:hi');
    assert.equal(app.handshakes.at(-1)!.url, '/chat');
    assert.equal(app.handshakes.at(-1)!.headers['plinth-caller'], 'web');
    ws.close();
    await closed(ws);
  });

  it("applies the app's inbound concurrency limit to open WebSockets", async () => {
    const first = await opened(`${gw.url.replace('http:', 'ws:')}/room`);
    const second = refused(await open(`${gw.url.replace('http:', 'ws:')}/room`));
    assert.equal(second.status, 429);
    first.terminate();
  });

  it('gives the app WebSockets to other services through the egress, by name', async () => {
    const egress = gw.egressUrl!.replace('http:', 'ws:');
    const ws = await opened(`${egress}/payments/stream?x=1`);
    assert.equal(await roundTrip(ws, 'pay'), 'payments:pay');
    assert.equal(payments.handshakes.at(-1)!.url, '/stream?x=1');
    assert.equal(payments.handshakes.at(-1)!.headers['plinth-caller'], 'orders', 'the app calls as its service');
    ws.close();
    await closed(ws);
    const unnamed = refused(await open(`${egress}/`));
    assert.equal(unnamed.status, 404);
  });
});
