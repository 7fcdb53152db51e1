/**
 * Answer compression at the edge (a Route's `compression`), as nginx's gzip and Envoy's compressor filter
 * give it: an upstream answer of a compressible type, not already encoded, is compressed on its way out in
 * the encoding the client prefers among the route's (brotli, gzip), streaming, through node's zlib (which runs
 * on libuv's thread pool, off the event loop). The answer then goes chunked (its length is no longer known),
 * its strong ETag turns weak (RFC 9110 §8.8.1: the bytes differ), and `Vary: accept-encoding` tells caches.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { constants, createBrotliCompress, createGzip, type BrotliCompress, type Gzip } from 'node:zlib';
import type { RouteCompression } from '@plinth/core';

export type Encoding = 'br' | 'gzip';

export interface CompiledCompression {
  readonly encodings: readonly Encoding[];
  /** Exact media types, and the major types of `text/*` entries. */
  readonly exact: ReadonlySet<string>;
  readonly majors: ReadonlySet<string>;
  readonly minBytes: number;
}

export function compileCompression(spec: RouteCompression | undefined): CompiledCompression | undefined {
  if (spec === undefined) return undefined;
  const exact = new Set<string>();
  const majors = new Set<string>();
  for (const t of spec.types) {
    if (t.endsWith('/*')) majors.add(t.slice(0, -2));
    else exact.add(t);
  }
  return { encodings: spec.encodings, exact, majors, minBytes: spec.minBytes };
}

/** Statuses whose answers have no body to compress, or a partial one. */
const NO_BODY = new Set([204, 206, 304]);

/**
 * How the answer goes out: `encoding` when it is compressed, and whether it `varies` with Accept-Encoding
 * (a compressible answer does, whatever this client asked, so caches keep the versions apart).
 */
export interface Decision {
  readonly encoding: Encoding | undefined;
  readonly varies: boolean;
}

const AS_IS: Decision = { encoding: undefined, varies: false };

/** `length`: the body's size when known (its Content-Length, or all of it already read). */
export function decide(c: CompiledCompression, method: string, acceptEncoding: string | undefined, status: number, headers: IncomingHttpHeaders, length: number | undefined): Decision {
  if (method === 'HEAD' || status < 200 || NO_BODY.has(status)) return AS_IS;
  const ce = headers['content-encoding'];
  if (ce !== undefined && ce !== '' && ce !== 'identity') return AS_IS;
  if (headers['content-range'] !== undefined) return AS_IS;
  const cc = headers['cache-control'];
  if (typeof cc === 'string' && cc.toLowerCase().includes('no-transform')) return AS_IS;
  if (!compressible(c, headers['content-type'])) return AS_IS;
  if (length !== undefined && length < c.minBytes) return AS_IS;
  return { encoding: negotiate(c.encodings, acceptEncoding), varies: true };
}

function compressible(c: CompiledCompression, type: string | undefined): boolean {
  if (type === undefined) return false;
  const semi = type.indexOf(';');
  const t = (semi < 0 ? type : type.slice(0, semi)).trim().toLowerCase();
  if (c.exact.has(t)) return true;
  const slash = t.indexOf('/');
  return slash > 0 && c.majors.has(t.slice(0, slash));
}

/** The route's first encoding the client accepts (RFC 9110 §12.5.3: a q of 0 refuses; `*` stands for the rest). */
export function negotiate(offered: readonly Encoding[], header: string | undefined): Encoding | undefined {
  if (header === undefined || header === '') return undefined;
  let star: number | undefined;
  const q = new Map<string, number>();
  for (const part of header.split(',')) {
    const [name, ...params] = part.split(';');
    const token = name!.trim().toLowerCase();
    if (token === '') continue;
    let weight = 1;
    for (const p of params) {
      const [k, v] = p.split('=');
      if (k!.trim().toLowerCase() === 'q') weight = Number(v);
    }
    if (!Number.isFinite(weight)) weight = 0;
    if (token === '*') star = weight;
    else q.set(token, weight);
  }
  let best: Encoding | undefined;
  let bestQ = 0;
  for (const e of offered) {
    const w = q.get(e) ?? star ?? 0;
    if (w > bestQ) {
      best = e;
      bestQ = w;
    }
  }
  return best;
}

/**
 * The answer's head for a compressed body: no Content-Length, the encoding, a weak ETag. `varies` adds
 * accept-encoding to Vary unless it is there already (or Vary is `*`).
 */
export function compressedHead(head: readonly string[], encoding: Encoding | undefined, varies: boolean): string[] {
  const out: string[] = [];
  let vary = false;
  for (let i = 0; i + 1 < head.length; i += 2) {
    const name = head[i]!.toLowerCase();
    let value = head[i + 1]!;
    if (encoding !== undefined && name === 'content-length') continue;
    if (encoding !== undefined && name === 'etag' && value.startsWith('"')) value = `W/${value}`;
    if (name === 'vary' && varies) {
      vary = true;
      const tokens = value.toLowerCase().split(',').map((t) => t.trim());
      if (!tokens.includes('accept-encoding') && !tokens.includes('*')) value = `${value}, accept-encoding`;
    }
    out.push(head[i]!, value);
  }
  if (varies && !vary) out.push('vary', 'accept-encoding');
  if (encoding !== undefined) out.push('content-encoding', encoding);
  return out;
}

/**
 * A streaming compressor. Brotli at quality 4 and gzip at level 6: what nginx and Envoy choose for answers
 * compressed as they are sent, a fraction of the CPU of the maximum levels for most of the gain.
 */
export function compressor(encoding: Encoding): BrotliCompress | Gzip {
  return encoding === 'br' ? createBrotliCompress({ params: { [constants.BROTLI_PARAM_QUALITY]: 4 } }) : createGzip({ level: 6 });
}
