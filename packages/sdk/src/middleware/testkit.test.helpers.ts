import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { currentContext } from '../context.js';
import { metricsHandler } from '../inbound/metrics.js';
import { plinthExpress } from './express.js';
import { plinthFastify } from './fastify.js';
import { plinthHono } from './hono.js';
import { plinth } from './node.js';
import type { PlinthOptions } from './runtime.js';

/**
 * One app per framework with the same three routes, so one suite runs against every adapter:
 *   GET|POST /ctx/:id  → the request context as the handler sees it, after an await (and a parsed body)
 *   GET /hold/:id      → answers only when the test lets it (to fill concurrency limits)
 *   GET /metrics       → Prometheus text
 * The identity comes from an `x-test-identity` header, standing in for the auth layer in front.
 */
export interface App {
  readonly url: string;
  close(): Promise<void>;
}

export interface Hooks {
  /** Handlers entered so far (ctx and hold). */
  entered: number;
  /** Resolvers of the held requests. */
  readonly held: (() => void)[];
}

export interface Adapter {
  readonly name: string;
  start(opts: PlinthOptions, hooks: Hooks): Promise<App>;
}

async function contextBody(body: unknown): Promise<string> {
  await new Promise((r) => setImmediate(r)); // the context must survive an async hop
  const ctx = currentContext();
  return JSON.stringify({
    traceId: ctx?.trace?.traceId ?? null,
    spanId: ctx?.trace?.spanId ?? null,
    baggage: ctx === undefined ? null : Object.fromEntries([...ctx.baggage].map(([k, e]) => [k, e.value])),
    deadlineAt: ctx?.deadlineAt ?? null,
    caller: ctx?.caller ?? null,
    body: body ?? null,
  });
}

function hold(hooks: Hooks): Promise<void> {
  return new Promise((r) => hooks.held.push(r));
}

function listening(server: Server): Promise<App> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({ url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) });
    });
    server.unref();
  });
}

const identityHeader = (h: IncomingMessage['headers']): string | undefined => {
  const v = h['x-test-identity'];
  return typeof v === 'string' ? v : undefined;
};

function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (text += c));
    req.on('end', () => resolve(text === '' ? undefined : JSON.parse(text)));
  });
}

const nodeAdapter: Adapter = {
  name: 'node:http',
  async start(opts, hooks) {
    const registry = opts.metrics?.registry;
    const metrics = registry === undefined ? undefined : metricsHandler(registry);
    const handler = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      if (path === '/metrics' && metrics) return metrics(req, res);
      if (path.startsWith('/ctx/')) {
        hooks.entered++;
        const body = req.method === 'POST' ? await readBody(req) : undefined;
        res.setHeader('content-type', 'application/json');
        res.end(await contextBody(body));
        return;
      }
      if (path.startsWith('/hold/')) {
        hooks.entered++;
        await hold(hooks);
        res.end('held');
        return;
      }
      res.statusCode = 404;
      res.end();
    };
    const route = (req: IncomingMessage): string | undefined => {
      const p = req.url ?? '';
      return p.startsWith('/ctx/') ? '/ctx/:id' : p.startsWith('/hold/') ? '/hold/:id' : p === '/metrics' ? '/metrics' : undefined;
    };
    return listening(createServer(plinth(handler, { ...opts, identify: (req) => identityHeader(req.headers), route })));
  },
};

const expressAdapter: Adapter = {
  name: 'express',
  async start(opts, hooks) {
    const app = express();
    app.use(plinthExpress({ ...opts, identify: (req) => identityHeader(req.headers) }));
    app.use(express.json());
    const ctx = async (req: express.Request, res: express.Response): Promise<void> => {
      hooks.entered++;
      res.type('application/json').send(await contextBody(req.method === 'POST' ? req.body : undefined));
    };
    app.get('/ctx/:id', ctx);
    app.post('/ctx/:id', ctx);
    app.get('/hold/:id', async (_req, res) => {
      hooks.entered++;
      await hold(hooks);
      res.send('held');
    });
    const registry = opts.metrics?.registry;
    if (registry) app.get('/metrics', metricsHandler(registry));
    return listening(createServer(app));
  },
};

const fastifyAdapter: Adapter = {
  name: 'fastify',
  async start(opts, hooks) {
    const app = Fastify();
    await app.register(plinthFastify, { ...opts, identify: (req) => identityHeader(req.headers) });
    const ctx = async (req: { method: string; body?: unknown }, reply: { type(t: string): unknown }) => {
      hooks.entered++;
      reply.type('application/json');
      return contextBody(req.method === 'POST' ? req.body : undefined);
    };
    app.get('/ctx/:id', ctx);
    app.post('/ctx/:id', ctx);
    app.get('/hold/:id', async () => {
      hooks.entered++;
      await hold(hooks);
      return 'held';
    });
    const registry = opts.metrics?.registry;
    if (registry) app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    return { url: `http://127.0.0.1:${port}`, close: () => app.close() };
  },
};

const honoAdapter: Adapter = {
  name: 'hono',
  async start(opts, hooks) {
    const app = new Hono();
    app.use('*', plinthHono({ ...opts, identify: (c) => c.req.header('x-test-identity') }));
    app.get('/ctx/:id', async (c) => {
      hooks.entered++;
      return c.body(await contextBody(undefined), 200, { 'content-type': 'application/json' });
    });
    app.post('/ctx/:id', async (c) => {
      hooks.entered++;
      const body: unknown = await c.req.json();
      return c.body(await contextBody(body), 200, { 'content-type': 'application/json' });
    });
    app.get('/hold/:id', async (c) => {
      hooks.entered++;
      await hold(hooks);
      return c.text('held');
    });
    const registry = opts.metrics?.registry;
    if (registry) app.get('/metrics', async (c) => c.body(await registry.metrics(), 200, { 'content-type': registry.contentType }));
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server));
    });
    server.unref();
    const { port } = server.address() as AddressInfo;
    return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
  },
};

export const ADAPTERS: readonly Adapter[] = [nodeAdapter, expressAdapter, fastifyAdapter, honoAdapter];
