// The one upstream every target proxies to: node:http, keep-alive, 200 with a ~100-byte JSON to everything.
// It listens twice: the base-lane instance and, on a second port, the gray-lane one (the plinth gateway's
// lane check sees which answered). Prints {"port","grayPort","pid"}; exits when its stdin closes.
import { createServer } from 'node:http';

function serve(lane) {
  const body = Buffer.from(JSON.stringify({ id: 42, name: 'widget', price: 12.5, currency: 'EUR', stock: 17, tags: ['blue', 'small'], lane }));
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
  // Longer than any proxy's idle timeout, so the proxies, not the upstream, decide when a connection goes.
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 125_000;
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server.address().port)));
}

const [port, grayPort] = await Promise.all([serve('base'), serve('gray')]);
process.stdout.write(`${JSON.stringify({ port, grayPort, pid: process.pid })}\n`);
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
