/**
 * Whatever an outsider sends, and whatever an upstream or an authorization service answers, the gateway
 * answers cleanly and goes on: no 500 (an exception in the gateway's own code), no crash, nothing left in
 * flight. Requests are generated from a seeded grammar of the inputs routes read (paths, queries, hosts,
 * tokens, context headers, bodies, upgrades) and then mutated byte by byte; upstreams misbehave on purpose
 * (odd header bytes, broken framing, resets). A failing case prints its seed and index so it replays.
 *
 * `PLINTH_FUZZ_CASES` (default 1,500) and `PLINTH_FUZZ_SEED` run a longer campaign; `PLINTH_FUZZ_DEBUG=summary`
 * prints the statuses seen, `PLINTH_FUZZ_DEBUG=<status>` (`400`, `closed`) each well-formed case that got it.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { BAD_ANSWERS, bytes, campaign, claimsToken, type FuzzEdge, fuzzEdge, header, int, METHODS, PATHS, pick, type Rand } from './fuzz.test.helpers.js';
import { call, until } from './testkit.test.helpers.js';

/**
 * One raw exchange: what came back (latin1), or '' when the gateway closed without a word. `halfClose`
 * ends the client's side after the request, which the gateway takes as the client leaving (as nginx does).
 */
function exchange(port: number, data: Buffer, waitMs: number, halfClose: boolean): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => sock.destroy(), waitMs);
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    sock.on('connect', () => (halfClose ? sock.end(data) : sock.write(data)));
  });
}

describe('fuzzing the edge: hostile requests and misbehaving upstreams', () => {
  let edge: FuzzEdge;
  let port = 0;

  before(async () => {
    edge = await fuzzEdge({ accessLog: false });
    port = edge.port;
  });

  after(async () => {
    await edge?.close();
  });

  /** Half the cases are well-formed requests with odd values (they reach the routes); half are hostile at every layer. */
  async function request(r: Rand): Promise<{ data: Buffer; hostile: boolean }> {
    const hostile = r() < 0.5;
    const method = hostile ? pick(r, METHODS) : pick(r, METHODS.slice(0, 8));
    let target = pick(r, hostile ? PATHS : PATHS.filter((p) => /^\/[\x21-\x7e]*$/.test(p)));
    if (target.startsWith('/bad') || target.startsWith('/gz')) target += String(int(r, BAD_ANSWERS.length));
    if (r() < 0.5) target += '?' + Array.from({ length: 1 + int(r, 3) }, () => `${pick(r, ['variant', 'x+y', 'x%20y', '%zz', '', 'a'])}=${pick(r, ['a', 'b', 'zz', '%62', '%', '+', ''])}`).join(pick(r, ['&', ';', '&&']));
    const token = await claimsToken(r, edge.sign);
    const lines = [`${method} ${target} ${hostile ? pick(r, ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x']) : 'HTTP/1.1'}`];
    if (!hostile || r() < 0.9) lines.push('host: shop.example');
    // The gateway closes after its answer, so the exchange ends without the client leaving first.
    if (!hostile) lines.push('connection: close');
    const n = int(r, hostile ? 7 : 4);
    let chunked = false;
    let length: number | undefined;
    for (let i = 0; i < n; i++) {
      const [k, v] = header(r, token);
      // Framing is the hostile cases' business; the others keep to headers node's parser takes.
      if (!hostile && (k === 'transfer-encoding' || k === 'content-length' || k === 'host' || k === 'connection' || k === ':path' || v.length > 4000 || /[^\x20-\x7e]/.test(v))) continue;
      if (k === 'transfer-encoding' && v.endsWith('chunked')) chunked = true;
      if (k === 'content-length') length = Number(v);
      lines.push(`${k}: ${v}`);
    }
    if (target.startsWith('/me') && r() < 0.7) lines.push(`authorization: Bearer ${token}`);
    let body: Buffer = Buffer.alloc(0);
    if (chunked) body = Buffer.from(pick(r, ['5\r\nhello\r\n0\r\n\r\n', 'zz\r\n', '3\r\nab', '0\r\n\r\n', `ffffffffff\r\n${'a'.repeat(100)}`, '1;ext=1\r\na\r\n0\r\nx-t: 1\r\n\r\n']));
    else if (length !== undefined && Number.isSafeInteger(length) && length >= 0 && length < 100_000) body = bytes(r, r() < 0.8 ? length : int(r, 200));
    else if (!hostile && (method === 'POST' || method === 'PUT')) {
      body = bytes(r, int(r, 3000));
      lines.push(`content-length: ${body.length}`);
    } else if (hostile && r() < 0.2) body = bytes(r, int(r, 100));
    let data: Buffer = Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
    if (hostile && r() < 0.5) {
      // Byte-level damage: flips, inserted CR, LF, NUL and high bytes, cut endings.
      const out = [...data];
      for (let i = 0, m = 1 + int(r, 4); i < m; i++) {
        const at = int(r, out.length);
        const op = r();
        if (op < 0.3) out[at] = int(r, 256);
        else if (op < 0.6) out.splice(at, 0, pick(r, [0x0d, 0x0a, 0x00, 0x80, 0xff, 0x20, 0x3a]));
        else if (op < 0.8) out.splice(at, 1);
        else out.length = at;
      }
      data = Buffer.from(out);
    }
    return { data, hostile };
  }

  it('turns every kind of broken upstream answer into a clean one, for requests and WebSocket handshakes alike', async () => {
    const seen: string[] = [];
    for (let n = 0; n < BAD_ANSWERS.length; n++) {
      for (const ws of [false, true]) {
        const upgrade = ws ? 'connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n' : 'connection: close\r\n';
        const answer = await exchange(port, Buffer.from(`GET /bad/${n} HTTP/1.1\r\nhost: shop.example\r\n${upgrade}\r\n`), 3000, false);
        const status = /^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1] ?? (answer === '' ? 'closed' : 'garbled');
        seen.push(`${n}${ws ? ' ws' : ''}: ${status}`);
        assert.ok(status !== '500' && status !== 'garbled' && Number(status) < 600, `answer ${n}${ws ? ' (handshake)' : ''}: ${JSON.stringify(answer.slice(0, 300))}`);
      }
    }
    // Framing that breaks before the body, a status HTTP does not have, no HTTP at all, and a reset are the
    // upstream's failures; a body cut after its first bytes can only be cut (3).
    for (const n of [4, 5, 9, 10, 11]) assert.ok(seen.includes(`${n}: 502`), `answer ${n}: ${seen.join(', ')}`);
    assert.ok(seen.includes('9 ws: 502'), seen.join(', '));
    assert.ok(seen.includes('0: 200') && seen.includes('3: 200'), seen.join(', '));
    assert.ok(seen.includes('22: 200'), `an answer after 103 Early Hints passes, the hints dropped: ${seen.join(', ')}`);
  });

  it('answers every hostile request with a clean status and keeps serving, with nothing left in flight', async () => {
    const seed = Number(process.env.PLINTH_FUZZ_SEED ?? 0x5eed);
    const cases = Number(process.env.PLINTH_FUZZ_CASES ?? 1500);
    const statuses = new Map<string, number>();
    const failures: string[] = [];
    await campaign(seed, cases, 8, async (i, r) => {
      const { data, hostile } = await request(r);
      const answer = await exchange(port, data, 4000, hostile);
      const status = /^HTTP\/1\.[01] (\d{3}) /.exec(answer)?.[1] ?? (answer === '' ? 'closed' : 'garbled');
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (process.env.PLINTH_FUZZ_DEBUG && status === process.env.PLINTH_FUZZ_DEBUG && !hostile) console.log(JSON.stringify(data.toString('latin1').slice(0, 300)), '=>', JSON.stringify(answer.slice(0, 300)));
      if (status === '500' || status === 'garbled') failures.push(`case ${i} (seed ${seed}): ${status}\n  sent ${JSON.stringify(data.toString('latin1').slice(0, 600))}\n  got ${JSON.stringify(answer.slice(0, 400))}`);
    });
    if (process.env.PLINTH_FUZZ_DEBUG !== undefined) console.log(JSON.stringify([...statuses].sort()));
    assert.deepEqual(failures.slice(0, 5), [], `statuses ${JSON.stringify([...statuses].sort())}`);
    assert.ok((statuses.get('200') ?? 0) > cases / 20, `some requests went through: ${JSON.stringify([...statuses])}`);
    assert.ok([...statuses.keys()].some((s) => s >= '400' && s < '500'));
    assert.ok([...statuses.keys()].some((s) => s === '502' || s === '503' || s === '504'));
    await until('nothing left in flight', () => edge.gw.inFlight() === 0, 8000);
    const after = await call(`${edge.gw.url}/api/after`);
    assert.equal(after.status, 200, 'the gateway serves on');
  });
});
