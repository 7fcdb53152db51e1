// Reference (e): the least a Node.js proxy can do on the transport both Node proxies use: node:http in front,
// one undici Pool (64 connections) behind, every request forwarded as is through `dispatch()` with a handler
// that writes the answer straight into the response. No routing, no policy, no log, no metrics: the ceiling
// any proxy on node:http and undici can reach here. argv[2]: the upstream's URL. Prints {url, pid}; exits
// when its stdin closes.
import { createServer } from 'node:http';
import { Pool } from 'undici';

const upstream = process.argv[2];
if (!upstream) throw new Error('usage: node floor-child.mjs UPSTREAM_URL');
const pool = new Pool(upstream, { connections: 64, pipelining: 1 });

class Answer {
  constructor(res) {
    this.res = res;
  }
  onRequestStart() {}
  onResponseStart(_c, status, headers) {
    this.res.writeHead(status, headers);
  }
  onResponseData(_c, chunk) {
    this.res.write(chunk);
  }
  onResponseEnd() {
    this.res.end();
  }
  onResponseError(_c, err) {
    if (!this.res.headersSent) this.res.writeHead(502);
    this.res.end(String(err?.message ?? err));
  }
}

const server = createServer((req, res) => {
  const headers = { ...req.headers };
  delete headers.connection;
  delete headers.host;
  pool.dispatch({ method: req.method, path: req.url, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req }, new Answer(res));
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${server.address().port}`, pid: process.pid })}\n`);
});
process.stdin.on('end', () => server.close(() => pool.close().finally(() => process.exit(0)))).resume();
