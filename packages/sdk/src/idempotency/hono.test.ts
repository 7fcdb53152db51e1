import { once } from 'node:events';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { honoIdempotency } from './hono.js';
import { httpBindingSuite, type Answer } from './http.test.helpers.js';

const respond = (a: Answer) => new Response(a.body, { status: a.status, headers: a.headers });

httpBindingSuite('hono', async (idem, routes) => {
  const app = new Hono();
  app.use('*', honoIdempotency(idem));
  app.get('/orders', () => respond(routes.list()));
  app.post('/fail', () => respond(routes.fail()));
  app.post('/throw', () => routes.crash());
  app.onError((_err, c) => c.json({ error: 'internal' }, 500));
  app.post('/orders', async (c) => respond(await routes.order(JSON.stringify(await c.req.json()))));
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  await once(server, 'listening');
  return server;
});
