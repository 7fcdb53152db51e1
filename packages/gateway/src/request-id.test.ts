import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StaticGovernance } from '@plinth/sdk';
import { startGateway } from './gateway.js';
import { request } from 'undici';
import WebSocket from 'ws';
import { call, instance, open, refused, route, staticGateway, until, upstream, wsUpstream, type Upstream } from './testkit.test.helpers.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const anon = { auth: { mode: 'anonymous' } };

describe('request IDs', () => {
  let echo: Upstream;
  let echoing: Upstream;
  before(async () => {
    echo = await upstream('echo');
    // An app that answers with a request ID of its own, as many echo the one they got.
    echoing = await upstream('echoing', (_req, res) => {
      res.writeHead(200, { 'x-request-id': 'made-by-the-app' });
      res.end('ok');
    });
  });
  after(async () => {
    await echo.close();
    await echoing.close();
  });

  const edge = async (extra: Parameters<typeof staticGateway>[0]) => {
    const s = await staticGateway(extra);
    s.governance.set({ instances: [instance('echo-1', 'echo', echo.address), instance('echoing-1', 'echoing', echoing.address)] });
    s.routes.set([
      route('echoing', { ...anon, match: { path: { prefix: '/echoing' } }, service: 'echoing' }),
      route('api', { ...anon, match: { path: { prefix: '/api' } }, service: 'echo', requestHeaders: { set: { 'x-request-id': 'from-the-route' } } }),
      route('cors', { ...anon, match: { path: { prefix: '/cors' } }, service: 'echo', cors: { allowOrigins: ['https://shop.example'] } }),
      route('inside', { ...anon, match: { path: { prefix: '/inside' } }, service: 'echo', clientIps: { allow: ['10.0.0.0/8'] } }),
    ]);
    return s;
  };

  it('gives each request its own, sent upstream, on the answer and in the access log; a client cannot choose it at the edge', async () => {
    const s = await edge({ requestId: true });
    try {
      const a = await call(`${s.gw.url}/api/a`, { headers: { 'x-request-id': 'chosen-by-the-client' } });
      const b = await call(`${s.gw.url}/api/b`);
      const ida = a.headers['x-request-id'] as string;
      const idb = b.headers['x-request-id'] as string;
      assert.match(ida, UUID);
      assert.match(idb, UUID);
      assert.notEqual(ida, idb);
      // The upstream sees exactly one value: the gateway's, not the client's nor the route's edit.
      const seen = echo.seen.slice(-2);
      assert.deepEqual(seen.map((x) => x.headers['x-request-id']), [ida, idb]);
      assert.deepEqual(s.log.slice(-2).map((l) => l['requestId']), [ida, idb]);
      // The gateway's own answers carry it too, beside CORS headers.
      const refused = await call(`${s.gw.url}/inside/x`);
      assert.equal(refused.status, 403);
      assert.match(refused.headers['x-request-id'] as string, UUID);
      const missing = await call(`${s.gw.url}/nowhere`);
      assert.equal(missing.status, 404);
      assert.match(missing.headers['x-request-id'] as string, UUID);
      // The answer carries the gateway's ID once, whatever the app answered under that name.
      const r = await request(`${s.gw.url}/echoing/x`);
      await r.body.text();
      assert.match(String(r.headers['x-request-id']), UUID);
      assert.equal(echoing.seen.at(-1)?.headers['x-request-id'], r.headers['x-request-id']);
      const cors = await call(`${s.gw.url}/cors/x`, { headers: { origin: 'https://shop.example' } });
      assert.equal(cors.headers['access-control-allow-origin'], 'https://shop.example');
      assert.match(cors.headers['x-request-id'] as string, UUID);
    } finally {
      await s.gw.close();
    }
  });

  it('keeps a well-formed incoming ID behind a trusted proxy, under the header named', async () => {
    const s = await edge({ requestId: { header: 'x-correlation-id' }, trustProxy: 1 });
    try {
      const kept = await call(`${s.gw.url}/api/kept`, { headers: { 'x-correlation-id': 'lb-7f3a' } });
      assert.equal(kept.headers['x-correlation-id'], 'lb-7f3a');
      assert.equal(echo.seen.at(-1)?.headers['x-correlation-id'], 'lb-7f3a');
      const odd = await call(`${s.gw.url}/api/odd`, { headers: { 'x-correlation-id': 'two words' } });
      assert.match(odd.headers['x-correlation-id'] as string, UUID, 'a malformed one is replaced');
      assert.equal(odd.headers['x-request-id'], undefined);
      // x-request-id is then just a header, edited by the route as any.
      assert.equal(echo.seen.at(-1)?.headers['x-request-id'], 'from-the-route');
    } finally {
      await s.gw.close();
    }
  });

  it('is off by default: no header added, a client\'s passed on as any header', async () => {
    const s = await edge({});
    try {
      const r = await call(`${s.gw.url}/cors/plain`, { headers: { 'x-request-id': 'client-1' } });
      assert.equal(r.headers['x-request-id'], undefined);
      assert.equal(echo.seen.at(-1)?.headers['x-request-id'], 'client-1');
      assert.equal(s.log.at(-1)?.['requestId'], undefined);
    } finally {
      await s.gw.close();
    }
  });

  it('gives WebSocket handshakes theirs too: upstream, the client\'s 101 and a refusal', async () => {
    const chat = await wsUpstream('chat');
    const s = await staticGateway({ requestId: true });
    try {
      s.governance.set({ instances: [instance('chat-1', 'chat', chat.address)] });
      s.routes.set([
        route('ws', { ...anon, match: { path: { prefix: '/ws' } }, service: 'chat' }),
        route('ws-inside', { ...anon, match: { path: { prefix: '/inside-ws' } }, service: 'chat', clientIps: { allow: ['10.0.0.0/8'] } }),
      ]);
      const wsUrl = s.gw.url.replace('http://', 'ws://');
      const ws = new WebSocket(`${wsUrl}/ws/room`);
      let answered = '';
      ws.once('upgrade', (res) => (answered = String(res.headers['x-request-id'])));
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      assert.match(answered, UUID);
      assert.equal(chat.handshakes.at(-1)?.headers['x-request-id'], answered, 'the upstream handshake carries the same');
      // The connection's access-log line is written when it closes.
      ws.close();
      await until('the WebSocket logged', () => s.log.some((l) => l['path'] === '/ws/room'));
      assert.equal(s.log.find((l) => l['path'] === '/ws/room')?.['requestId'], answered);
      const no = refused(await open(`${wsUrl}/inside-ws/x`));
      assert.equal(no.status, 403);
      assert.match(String(no.headers['x-request-id']), UUID);
    } finally {
      await s.gw.close();
      await chat.close();
    }
  });

  it('refuses a header name the gateway owns or that is no header name', async () => {
    for (const [header, why] of [['traceparent', /a header the gateway sets or strips itself/], ['plinth-caller', /sets or strips itself/], ['X Request', /is not a lower-case header name/]] as const) {
      await assert.rejects(startGateway({ namespace: 'edge', governance: new StaticGovernance(), listen: '127.0.0.1:0', requestId: { header } }), why);
    }
  });
});
