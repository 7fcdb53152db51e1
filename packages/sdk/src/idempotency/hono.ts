import { Headers } from '@plinth/core';
import { problemResponse } from './errors.js';
import type { Idempotency } from './idempotency.js';
import type { StoredResponse } from './types.js';

/** The parts of hono's Context this middleware touches, so the SDK does not depend on hono's types. */
export interface HonoContextLike {
  req: {
    readonly method: string;
    readonly url: string;
    readonly raw: Request;
    header(name: string): string | undefined;
    /** hono types the entries as bodies but stores promises of them; a promise is what it expects to find. */
    bodyCache: { arrayBuffer?: unknown };
  };
  res: Response;
}

/**
 * Hono middleware: a request with an `Idempotency-Key` reaches the next handlers once; replays get the stored
 * response. The body is read here to fingerprint it and left in hono's body cache, so `c.req.json()`,
 * `c.req.text()` and the like still work downstream (reading `c.req.raw` directly does not).
 */
export function honoIdempotency<C extends HonoContextLike>(idem: Idempotency<C>): (c: C, next: () => Promise<void>) => Promise<Response | undefined> {
  return async (c, next) => {
    const key = idem.keyOf(c.req.method, c.req.header(Headers.idempotencyKey));
    if (key === undefined) {
      await next();
      return undefined;
    }
    const body = await readLimited(c.req.raw, idem.maxBodyBytes);
    if (body === undefined) {
      return toResponse(problemResponse('PAYLOAD_TOO_LARGE', `A request with an Idempotency-Key may carry at most ${idem.maxBodyBytes} bytes.`, { connection: 'close' }));
    }
    c.req.bodyCache.arrayBuffer = Promise.resolve(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer);
    const url = new URL(c.req.url);
    const d = await idem.begin(c, { method: c.req.method, target: url.pathname + url.search, key, body });
    if (d.kind === 'respond') return toResponse(d.response);
    try {
      await next();
    } catch (err) {
      await d.execution.finish(undefined);
      throw err;
    }
    // hono turns a throwing handler into a 5xx response here (its onError), which releases the key.
    const res = c.res;
    const out = Buffer.from(await res.arrayBuffer());
    await d.execution.finish({ status: res.status, headers: headerRecord(res.headers), body: out });
    c.res = new Response(out, { status: res.status, statusText: res.statusText, headers: res.headers });
    return undefined;
  };
}

async function readLimited(req: Request, limit: number): Promise<Buffer | undefined> {
  if (Number(req.headers.get('content-length')) > limit) return undefined;
  if (req.body === null) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size);
}

function headerRecord(h: globalThis.Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  h.forEach((value, name) => {
    if (name !== 'set-cookie') out[name] = value;
  });
  const cookies = h.getSetCookie();
  if (cookies.length > 0) out['set-cookie'] = cookies;
  return out;
}

function toResponse(r: StoredResponse): Response {
  const h = new globalThis.Headers();
  for (const name in r.headers) {
    const v = r.headers[name]!;
    if (Array.isArray(v)) for (const one of v) h.append(name, one);
    else h.set(name, v);
  }
  return new Response(r.status === 204 || r.status === 304 ? null : r.body, { status: r.status, headers: h });
}
