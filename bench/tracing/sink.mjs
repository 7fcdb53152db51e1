// The collector every traced variant exports to: answers 200 with an empty JSON ExportTraceServiceResponse
// to POST /<variant>/v1/traces, and counts per variant the requests, wire bytes and spans it got (so the
// run can check that each variant exported what it claims). GET /stats answers the counts.
// Prints {"url","pid"} once listening; exits when its stdin closes.
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';

const stats = {};
const SPAN_KEY = Buffer.from('"spanId":"');

function countSpans(buf) {
  // Both exporters write one `"spanId":"` per span (none of the benchmark's spans has links or events).
  let n = 0;
  for (let i = buf.indexOf(SPAN_KEY); i >= 0; i = buf.indexOf(SPAN_KEY, i + SPAN_KEY.length)) n++;
  return n;
}

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    const body = JSON.stringify(stats);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    return res.end(body);
  }
  const m = /^\/([\w-]+)\/v1\/traces$/.exec(req.url ?? '');
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST' || !m) {
      res.writeHead(404).end();
      return;
    }
    const wire = Buffer.concat(chunks);
    const s = (stats[m[1]] ??= { requests: 0, bytes: 0, spans: 0, encodings: {} });
    s.requests++;
    s.bytes += wire.length;
    const enc = `${req.headers['content-type'] ?? '?'}; ${req.headers['content-encoding'] ?? 'identity'}`;
    s.encodings[enc] = (s.encodings[enc] ?? 0) + 1;
    try {
      s.spans += countSpans(req.headers['content-encoding'] === 'gzip' ? gunzipSync(wire) : wire);
    } catch {
      s.undecodable = (s.undecodable ?? 0) + 1;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
    res.end('{}');
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${server.address().port}`, pid: process.pid })}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
