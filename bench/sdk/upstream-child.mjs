// An upstream for the SDK benchmark: node:http, keep-alive, a small JSON answer to every request.
// Prints {"port","pid"} once listening; exits when its stdin closes (so it never outlives the bench).
import { createServer } from 'node:http';

const name = process.argv[2] ?? 'upstream';
const body = Buffer.from(JSON.stringify({ ok: true, from: name }));
const server = createServer((req, res) => {
  // Drain a request body, if any, before answering, so a connection stays reusable.
  req.resume();
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
});
// Longer than undici's idle socket timeout, so the client, not the server, decides when to drop a connection.
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ port, pid: process.pid, name })}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
