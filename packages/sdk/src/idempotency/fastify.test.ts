import Fastify from 'fastify';
import { fastifyIdempotency } from './fastify.js';
import { httpBindingSuite } from './http.test.helpers.js';

httpBindingSuite('fastify', async (idem, routes) => {
  const app = Fastify();
  await app.register(fastifyIdempotency(idem));
  app.get('/orders', async (_req, reply) => {
    const a = routes.list();
    return reply.code(a.status).headers(a.headers).send(a.body);
  });
  app.post('/fail', async (_req, reply) => {
    const a = routes.fail();
    return reply.code(a.status).headers(a.headers).send(a.body);
  });
  app.post('/throw', async () => routes.crash());
  app.post('/orders', async (req, reply) => {
    const a = await routes.order(JSON.stringify(req.body));
    return reply.code(a.status).headers(a.headers).send(a.body);
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return app.server;
});
