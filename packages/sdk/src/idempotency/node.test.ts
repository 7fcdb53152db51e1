import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { httpBindingSuite, type Answer } from './http.test.helpers.js';
import { idempotent } from './node.js';

function send(res: ServerResponse, a: Answer): void {
  res.writeHead(a.status, a.headers);
  res.end(a.body);
}

async function text(req: IncomingMessage, body: Buffer | undefined): Promise<string> {
  if (body !== undefined) return body.toString();
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

httpBindingSuite('node:http', async (idem, routes) => {
  const server = createServer(
    idempotent(async (req, res, body) => {
      if (req.method === 'GET') return send(res, routes.list());
      if (req.url === '/fail') return send(res, routes.fail());
      if (req.url === '/throw') routes.crash();
      send(res, await routes.order(await text(req, body)));
    }, idem),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
});
