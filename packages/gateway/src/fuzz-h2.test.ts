/**
 * The HTTP/2 side of the edge under fuzzing: raw frames over cleartext HTTP/2 (h2c), written by hand so that
 * anything can be sent, what node's own client would refuse to: pseudo-headers missing, doubled or out of
 * place, connection-specific headers, extended CONNECT with odd protocols, bodies longer than their
 * content-length, streams reset midway, window updates of zero or too much, padding, CONTINUATION frames,
 * frames of unknown types, then damage byte by byte. The gateway must log no 500, keep nothing in flight
 * (node leaves some connections stuck after a protocol error: the keepalive ends them), and serve on. The
 * GOAWAY codes node answers with are printed with PLINTH_FUZZ_DEBUG; they judge the client, not the gateway
 * (node says INTERNAL_ERROR for any error nghttp2 reports, a client's bad GOAWAY included).
 *
 * `PLINTH_FUZZ_CASES` (default 300 here) and `PLINTH_FUZZ_SEED` run a longer campaign; `PLINTH_FUZZ_DEBUG=leak`
 * first runs the cases one at a time and prints the first that leaves an exchange in flight.
 */
import assert from 'node:assert/strict';
import { connect as http2Connect } from 'node:http2';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { bytes, caseRng, claimsToken, fuzzEdge, type FuzzEdge, header, int, METHODS, PATHS, pick, type Rand } from './fuzz.test.helpers.js';
import { CONTINUATION, DATA, END_HEADERS, END_STREAM, frame, GOAWAY, HEADERS, hpackField, PADDED, PING, PREFACE, PRIORITY, PRIORITY_FLAG, RST_STREAM, SETTINGS, settings, u32, WINDOW_UPDATE } from './h2-frames.test.helpers.js';
import { until } from './testkit.test.helpers.js';

/** The frames a client sends for one connection, and whether they were damaged. */
async function connection(r: Rand, sign: (claims: Record<string, unknown>) => Promise<string>): Promise<Buffer> {
  const hostile = r() < 0.5;
  const out: Buffer[] = [PREFACE];
  const s: [number, number][] = [];
  if (hostile && r() < 0.3) s.push([pick(r, [0x2, 0x4, 0x5, 0x3, 0x8, 0x6, 0x99]), pick(r, [0, 1, 2 ** 31, 2 ** 32 - 1, 100, 16383])]);
  out.push(settings(s), frame(SETTINGS, 0x1, 0, Buffer.alloc(0)));
  const streams = 1 + int(r, hostile ? 4 : 3);
  let id = 1;
  for (let i = 0; i < streams; i++) {
    const sid = hostile && r() < 0.1 ? pick(r, [0, 2, id - 2, 0x7fffffff]) : id;
    id += 2;
    const method = hostile ? pick(r, [...METHODS, 'CONNECT', 'CONNECT']) : pick(r, METHODS.slice(0, 8));
    let path = pick(r, hostile ? PATHS : PATHS.filter((p) => /^\/[\x21-\x7e]*$/.test(p)));
    if (path.startsWith('/bad') || path.startsWith('/gz')) path += String(int(r, 23));
    if (r() < 0.4) path += `?variant=${pick(r, ['a', 'b', '%62', '%'])}&x+y=${pick(r, ['z1', ''])}`;
    const fields: [string, string][] = [[':method', method], [':scheme', hostile ? pick(r, ['http', 'https', 'ftp', '']) : 'http'], [':authority', hostile ? pick(r, ['shop.example', 'plain.example:80', 'a@evil.example', '', '[::1']) : 'shop.example'], [':path', path]];
    if (method === 'CONNECT' || (hostile && r() < 0.1)) fields.push([':protocol', pick(r, ['websocket', 'websocket', 'connect-udp', ''])]);
    if (hostile && r() < 0.3) {
      // Pseudo-headers missing, doubled, unknown, or after a regular header.
      const op = int(r, 4);
      if (op === 0) fields.splice(int(r, fields.length), 1);
      else if (op === 1) fields.push(fields[int(r, fields.length)]!);
      else if (op === 2) fields.push([':nonsense', 'x']);
      else fields.unshift(['x-early', '1']);
    }
    const token = await claimsToken(r, sign);
    if (path.startsWith('/me')) fields.push(['authorization', `Bearer ${token}`]);
    for (let h = 0, n = int(r, hostile ? 6 : 4); h < n; h++) {
      const [k, v] = header(r, token);
      if (k.startsWith(':') || k === 'host' || k === 'content-length' || k === 'transfer-encoding' || k === 'connection' || k === 'upgrade' || k === 'te') {
        if (!hostile) continue;
      }
      if (!hostile && (v.length > 4000 || /[^\x20-\x7e]/.test(v))) continue;
      fields.push([hostile && r() < 0.05 ? k.toUpperCase() : k, v]);
    }
    const body = method === 'POST' || method === 'PUT' || (hostile && r() < 0.2) ? bytes(r, int(r, 70_000)) : undefined;
    if (body !== undefined && r() < 0.5) fields.push(['content-length', String(hostile && r() < 0.3 ? int(r, 100) : body.length)]);
    if (path.startsWith('/pkg.Svc') && r() < 0.7) fields.push(['content-type', pick(r, ['application/grpc', 'application/grpc-web-text', 'application/grpc-web+proto'])], ['te', 'trailers']);
    let block = Buffer.concat(fields.map(([k, v]) => hpackField(k, v)));
    let flags = body === undefined && r() < 0.9 ? END_STREAM : 0;
    let split: Buffer | undefined;
    if (r() < 0.15 && block.length > 8) {
      const at = 1 + int(r, block.length - 1);
      split = block.subarray(at);
      block = block.subarray(0, at);
    } else flags |= END_HEADERS;
    const framing = hostile ? r() : 1;
    if (framing < 0.1) {
      flags |= PADDED;
      const pad = int(r, 20);
      block = Buffer.concat([Buffer.from([r() < 0.2 ? 255 : pad]), block, Buffer.alloc(pad)]);
    } else if (framing < 0.2) {
      flags |= PRIORITY_FLAG;
      block = Buffer.concat([u32(pick(r, [sid, 0, 3])), Buffer.from([int(r, 256)]), block]);
    }
    out.push(frame(HEADERS, flags, sid, block));
    if (split !== undefined) out.push(frame(CONTINUATION, END_HEADERS, hostile && r() < 0.2 ? sid + 2 : sid, split));
    if (body !== undefined) {
      for (let off = 0; off < body.length || off === 0; ) {
        const n = Math.min(16_384, body.length - off);
        off += n;
        out.push(frame(DATA, off >= body.length ? END_STREAM : 0, sid, body.subarray(off - n, off)));
        if (n === 0) break;
      }
    }
    if (r() < (hostile ? 0.3 : 0.1)) {
      const extra = int(r, 6);
      if (extra === 0) out.push(frame(RST_STREAM, 0, sid, u32(pick(r, [0, 1, 2, 8, 11, 0xffff]))));
      else if (extra === 1) out.push(frame(WINDOW_UPDATE, 0, pick(r, [0, sid]), u32(pick(r, [0, 1, 2 ** 31 - 1, 65535]))));
      else if (extra === 2) out.push(frame(PING, 0, 0, bytes(r, pick(r, [8, 8, 7]))));
      else if (extra === 3) out.push(frame(PRIORITY, 0, sid, Buffer.concat([u32(sid), Buffer.from([16])])));
      else if (extra === 4) out.push(frame(0x42, int(r, 256), sid, bytes(r, int(r, 30))));
      else out.push(frame(DATA, END_STREAM, sid, bytes(r, int(r, 100))));
    }
  }
  // A client's GOAWAY names the last server-initiated stream it took: none.
  if (r() < 0.3) out.push(frame(GOAWAY, 0, 0, Buffer.concat([u32(hostile && r() < 0.2 ? id : 0), u32(0)])));
  let data = Buffer.concat(out);
  if (hostile && r() < 0.4) {
    const d = [...data];
    for (let i = 0, m = 1 + int(r, 4); i < m; i++) {
      const at = PREFACE.length + int(r, d.length - PREFACE.length);
      const op = r();
      if (op < 0.5) d[at] = int(r, 256);
      else if (op < 0.8) d.splice(at, 1);
      else d.length = at;
    }
    data = Buffer.from(d);
  }
  return data;
}

/** What the gateway said on one connection: the error codes of its GOAWAY frames. */
function exchange(port: number, data: Buffer): Promise<number[]> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let quiet: NodeJS.Timeout | undefined;
    const cap = setTimeout(() => sock.destroy(), 3000);
    // The exchange is over once the gateway has been silent a while (answers come within milliseconds).
    const settle = () => {
      clearTimeout(quiet);
      quiet = setTimeout(() => {
        sock.end();
        // A connection the gateway keeps open after the client's end (streams still waiting) is cut.
        setTimeout(() => sock.destroy(), 300).unref();
      }, 120);
    };
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      settle();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(cap);
      clearTimeout(quiet);
      const all = Buffer.concat(chunks);
      const codes: number[] = [];
      for (let off = 0; off + 9 <= all.length; ) {
        const len = all.readUIntBE(off, 3);
        if (all[off + 3] === GOAWAY && off + 17 <= all.length) codes.push(all.readUInt32BE(off + 13));
        off += 9 + len;
      }
      resolve(codes);
    });
    sock.on('connect', () => {
      sock.write(data);
      settle();
    });
  });
}

describe('fuzzing the edge over HTTP/2: raw frames', () => {
  let edge: FuzzEdge;

  before(async () => {
    // Connections node leaves stuck after its own GOAWAY are ended by the keepalive (http2.ts), soon here.
    edge = await fuzzEdge({ h2c: true, server: { http2: { pingIdleMs: 300, pingTimeoutMs: 300 } } });
  });

  after(async () => {
    await edge?.close();
  });

  it('answers every stream cleanly, ends every stream a dead connection held, and serves on', async () => {
    const seed = Number(process.env.PLINTH_FUZZ_SEED ?? 0x2f00);
    const cases = Number(process.env.PLINTH_FUZZ_CASES ?? 300);
    const failures: string[] = [];
    const goaways = new Map<number, number>();
    let next = 0;
    if (process.env.PLINTH_FUZZ_DEBUG === 'leak') {
      for (let i = 0; i < cases; i++) {
        const data = await connection(caseRng(seed, i), edge.sign);
        await exchange(edge.port, data);
        const t0 = Date.now();
        while (edge.gw.inFlight() > 0 && Date.now() - t0 < 1500) await new Promise((r) => setTimeout(r, 50));
        if (edge.gw.inFlight() > 0) {
          await new Promise((r) => setTimeout(r, 1500));
          console.log(`case ${i} leaves ${edge.gw.inFlight()} in flight:`, JSON.stringify(data.toString('latin1')).slice(0, 1500), JSON.stringify(edge.log.slice(-3)));
          break;
        }
      }
    }
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < cases) {
          const i = next++;
          const data = await connection(caseRng(seed, i), edge.sign);
          const codes = await exchange(edge.port, data);
          for (const c of codes) goaways.set(c, (goaways.get(c) ?? 0) + 1);
        }
      }),
    );
    await until('nothing left in flight', () => edge.gw.inFlight() === 0, 8000);
    const statuses = new Map<unknown, number>();
    for (const l of edge.log) statuses.set(l.status, (statuses.get(l.status) ?? 0) + 1);
    if (process.env.PLINTH_FUZZ_DEBUG !== undefined) console.log(JSON.stringify([...statuses]), 'goaway codes', JSON.stringify([...goaways]));
    for (const l of edge.log) if (l.status === 500) failures.push(`a 500 in the log: ${JSON.stringify(l)}`);
    assert.deepEqual(failures.slice(0, 5), []);
    assert.ok((statuses.get(200) ?? 0) > cases / 10, `streams went through: ${JSON.stringify([...statuses])}`);
    assert.ok([...statuses.keys()].some((s) => Number(s) >= 400 && Number(s) < 500));

    const session = http2Connect(edge.gw.url);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const s = session.request({ ':path': '/api/after', ':method': 'GET' });
        s.on('response', (h) => resolve(Number(h[':status'])));
        s.on('error', reject);
        s.resume();
      });
      assert.equal(status, 200, 'the gateway serves on');
    } finally {
      session.close();
    }
  });
});
