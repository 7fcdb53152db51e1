/**
 * Route compression: the negotiation and head rules alone, then end to end on loopback (real node:http
 * upstreams, undici clients decoding with node's zlib).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { request } from 'undici';
import { compileCompression, compressedHead, decide, negotiate } from './compression.js';
import type { StaticGovernance } from '@plinth/sdk';
import type { StaticFeed } from './feed.js';
import type { Gateway } from './gateway.js';
import { instance, route, sleep, staticGateway, upstream, type Upstream } from './testkit.test.helpers.js';

describe('compression rules', () => {
  it('takes the route’s first encoding the client accepts, by q-value', () => {
    assert.equal(negotiate(['br', 'gzip'], 'gzip, deflate, br'), 'br');
    assert.equal(negotiate(['br', 'gzip'], 'gzip'), 'gzip');
    assert.equal(negotiate(['br', 'gzip'], 'br;q=0, gzip;q=0.5'), 'gzip');
    assert.equal(negotiate(['br', 'gzip'], 'br;q=0.2, gzip;q=0.8'), 'gzip', 'a higher q wins over the route’s order');
    assert.equal(negotiate(['gzip'], '*'), 'gzip');
    assert.equal(negotiate(['br', 'gzip'], '*;q=0, gzip;q=0'), undefined);
    assert.equal(negotiate(['br', 'gzip'], 'identity'), undefined);
    assert.equal(negotiate(['br', 'gzip'], undefined), undefined);
    assert.equal(negotiate(['br', 'gzip'], 'gzip;q=abc'), undefined, 'a q that is no number refuses');
  });

  it('compresses only bodies of a compressible type, not encoded, large enough, not partial, not HEAD', () => {
    const c = compileCompression({ encodings: ['gzip'], types: ['application/json', 'text/*'], minBytes: 100 })!;
    const json = { 'content-type': 'application/json; charset=utf-8' };
    assert.deepEqual(decide(c, 'GET', 'gzip', 200, json, 5000), { encoding: 'gzip', varies: true });
    assert.deepEqual(decide(c, 'GET', 'gzip', 200, { 'content-type': 'text/html' }, undefined), { encoding: 'gzip', varies: true });
    assert.deepEqual(decide(c, 'GET', undefined, 200, json, 5000), { encoding: undefined, varies: true }, 'varies even for a client that takes it plain');
    for (const [method, status, headers, length] of [
      ['GET', 200, json, 50],
      ['HEAD', 200, json, 5000],
      ['GET', 204, json, 0],
      ['GET', 206, { ...json, 'content-range': 'bytes 0-99/5000' }, 100],
      ['GET', 304, json, undefined],
      ['GET', 200, { ...json, 'content-encoding': 'br' }, 5000],
      ['GET', 200, { ...json, 'cache-control': 'public, no-transform' }, 5000],
      ['GET', 200, { 'content-type': 'image/png' }, 5000],
      ['GET', 200, {}, 5000],
    ] as const) {
      assert.deepEqual(decide(c, method, 'gzip', status, headers, length), { encoding: undefined, varies: false }, `${method} ${status} ${JSON.stringify(headers)}`);
    }
  });

  it('rewrites the head: no length, the encoding, a weak ETag, accept-encoding in Vary once', () => {
    assert.deepEqual(compressedHead(['content-type', 'application/json', 'content-length', '5000', 'etag', '"abc"'], 'br', true), ['content-type', 'application/json', 'etag', 'W/"abc"', 'vary', 'accept-encoding', 'content-encoding', 'br']);
    assert.deepEqual(compressedHead(['Vary', 'Origin', 'etag', 'W/"x"'], 'gzip', true), ['Vary', 'Origin, accept-encoding', 'etag', 'W/"x"', 'content-encoding', 'gzip']);
    assert.deepEqual(compressedHead(['vary', 'Accept-Encoding', 'content-length', '9'], undefined, true), ['vary', 'Accept-Encoding', 'content-length', '9']);
  });
});

describe('gateway answer compression', () => {
  let gw: Gateway;
  let governance: StaticGovernance;
  let routes: StaticFeed;
  let up: Upstream;
  const big = JSON.stringify({ items: Array.from({ length: 400 }, (_, i) => ({ id: i, name: `item number ${i}`, tags: ['a', 'b', 'c'] })) });

  before(async () => {
    up = await upstream('up', (req, res) => {
      if (req.url === '/small') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      if (req.url === '/png') return res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.alloc(4000, 7));
      if (req.url === '/encoded') return res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' }).end(Buffer.from('pretend'));
      if (req.url === '/stream') {
        // Longer than the gateway holds while deciding, and sent in pieces over time.
        res.writeHead(200, { 'content-type': 'text/plain' });
        let n = 0;
        const t = setInterval(() => {
          res.write(`${'line '.repeat(4000)}${n}\n`);
          if (++n === 10) {
            clearInterval(t);
            res.end('done\n');
          }
        }, 5);
        res.on('close', () => clearInterval(t));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', etag: '"v1"' }).end(big);
    });
    ({ gw, governance, routes } = await staticGateway({ accessLog: false }));
    governance.set({ instances: [instance('up-1', 'up', up.address)] });
  });

  after(async () => {
    await gw?.close();
    await up?.close();
  });

  const get = async (path: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') => {
    const r = await request(`${gw.url}${path}`, { method, headers });
    return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) };
  };

  it('compresses a JSON answer in the encoding the client prefers, and leaves it plain for one that takes none', async () => {
    routes.set([route('api', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/' } }, service: 'up', compression: {} })]);
    await sleep(50);
    const br = await get('/items', { 'accept-encoding': 'gzip, br' });
    assert.equal(br.headers['content-encoding'], 'br');
    assert.equal(br.headers['content-length'], undefined);
    assert.equal(br.headers.vary, 'accept-encoding');
    assert.equal(br.headers.etag, 'W/"v1"');
    assert.equal(brotliDecompressSync(br.body).toString(), big);
    assert.ok(br.body.length < big.length / 4, `${br.body.length} of ${big.length} bytes`);
    const gz = await get('/items', { 'accept-encoding': 'gzip' });
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.equal(gunzipSync(gz.body).toString(), big);
    const plain = await get('/items');
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.equal(plain.headers.vary, 'accept-encoding');
    assert.equal(plain.body.toString(), big);
  });

  it('compresses an answer that streams, to its end', async () => {
    const s = await get('/stream', { 'accept-encoding': 'gzip' });
    assert.equal(s.headers['content-encoding'], 'gzip');
    const text = gunzipSync(s.body).toString();
    assert.ok(text.endsWith('9\ndone\n'));
    assert.equal(text.length, 10 * (4000 * 5 + 2) + 5);
  });

  it('sends small, binary, already encoded answers and HEAD as they are', async () => {
    const small = await get('/small', { 'accept-encoding': 'br' });
    assert.equal(small.headers['content-encoding'], undefined);
    assert.equal(small.body.toString(), '{"ok":true}');
    const png = await get('/png', { 'accept-encoding': 'br' });
    assert.equal(png.headers['content-encoding'], undefined);
    assert.equal(png.headers.vary, undefined);
    assert.equal(png.body.length, 4000);
    const encoded = await get('/encoded', { 'accept-encoding': 'br' });
    assert.equal(encoded.headers['content-encoding'], 'gzip');
    assert.equal(encoded.body.toString(), 'pretend');
    const head = await get('/items', { 'accept-encoding': 'br' }, 'HEAD');
    assert.equal(head.headers['content-encoding'], undefined);
  });

  it('lets go of a compressed answer whose client leaves midway, and goes on serving', async () => {
    const r = await request(`${gw.url}/stream`, { headers: { 'accept-encoding': 'br' } });
    assert.equal(r.headers['content-encoding'], 'br');
    r.body.on('error', () => {});
    r.body.destroy();
    await sleep(100);
    const again = await get('/items', { 'accept-encoding': 'gzip' });
    assert.equal(gunzipSync(again.body).toString(), big);
  });

  it('compresses nothing on a route without compression', async () => {
    routes.set([route('api', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/' } }, service: 'up' })]);
    await sleep(50);
    const r = await get('/items', { 'accept-encoding': 'br, gzip' });
    assert.equal(r.headers['content-encoding'], undefined);
    assert.equal(r.headers.vary, undefined);
    assert.equal(r.body.toString(), big);
  });
});
