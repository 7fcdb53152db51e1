import { once } from 'node:events';
import type { Server } from 'node:http';
import express from 'express';
import { expressIdempotency } from './express.js';
import { httpBindingSuite, type Answer } from './http.test.helpers.js';

function send(res: express.Response, a: Answer): void {
  res.status(a.status).set(a.headers).send(a.body);
}

httpBindingSuite('express', async (idem, routes) => {
  const app = express();
  app.use(express.json());
  app.use(expressIdempotency(idem));
  app.get('/orders', (_req, res) => send(res, routes.list()));
  app.post('/fail', (_req, res) => send(res, routes.fail()));
  app.post('/throw', async () => routes.crash());
  app.use((_err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => void res.status(500).json({ error: 'internal' }));
  app.post('/orders', async (req, res) => send(res, await routes.order(JSON.stringify(req.body))));
  const server: Server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
});

// Mounted before any parser, the middleware reads the raw body itself and leaves it in req.body as a Buffer.
httpBindingSuite('express without a body parser', async (idem, routes) => {
  const app = express();
  app.use(expressIdempotency(idem));
  app.get('/orders', (_req, res) => send(res, routes.list()));
  app.post('/fail', (_req, res) => send(res, routes.fail()));
  app.post('/throw', async () => routes.crash());
  app.use((_err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => void res.status(500).json({ error: 'internal' }));
  app.post('/orders', async (req, res) => {
    const body = Buffer.isBuffer(req.body) ? req.body.toString() : await rawText(req);
    send(res, await routes.order(body));
  });
  const server: Server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
});

async function rawText(req: express.Request): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}
