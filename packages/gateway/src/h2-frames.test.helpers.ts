/**
 * HTTP/2 frames written by hand (RFC 9113 §4, §6), for tests that must send what node's own client refuses
 * to: frame types and flags, one frame, HPACK literals (RFC 7541, no indexing, no Huffman), SETTINGS; and a
 * stand-in HTTP/2 service that answers with such frames.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const DATA = 0x0;
export const HEADERS = 0x1;
export const PRIORITY = 0x2;
export const RST_STREAM = 0x3;
export const SETTINGS = 0x4;
export const PING = 0x6;
export const GOAWAY = 0x7;
export const WINDOW_UPDATE = 0x8;
export const CONTINUATION = 0x9;
export const END_STREAM = 0x1;
export const END_HEADERS = 0x4;
export const PADDED = 0x8;
export const PRIORITY_FLAG = 0x20;

export function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** RFC 7541 §5.1: an integer with an N-bit prefix. */
function hpackInt(n: number, prefixBits: number, flags: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (n < max) return [flags | n];
  const out = [flags | max];
  let rest = n - max;
  while (rest >= 128) {
    out.push((rest & 127) | 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A literal header field without indexing, new name, no Huffman coding (RFC 7541 §6.2.2). */
export function hpackField(name: string, value: string): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  return Buffer.concat([Buffer.from([0x00]), Buffer.from(hpackInt(n.length, 7, 0)), n, Buffer.from(hpackInt(v.length, 7, 0)), v]);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function settings(entries: [number, number][]): Buffer {
  const b = Buffer.alloc(6 * entries.length);
  entries.forEach(([id, value], i) => {
    b.writeUInt16BE(id, 6 * i);
    b.writeUInt32BE(value >>> 0, 6 * i + 2);
  });
  return frame(SETTINGS, 0, 0, b);
}

/**
 * A connection window opened wide, then a graceful GOAWAY that lets `stream` finish, in one write: what a
 * service shutting down does after reading its uploads slowly.
 */
export const windowThenGoaway = (stream: number): Buffer[] => [frame(WINDOW_UPDATE, 0, 0, u32(1 << 20)), frame(GOAWAY, 0, 0, Buffer.concat([u32(stream), u32(0)]))];

/** How the stand-in service answers a request stream: frames to write, or drop the connection, or nothing. */
export type H2Answer = Buffer[] | 'close' | 'silence';

export interface H2Service {
  server: Server;
  address: string;
  sockets: Set<Socket>;
}

/**
 * A stand-in HTTP/2 (h2c) service: reads the client's preface and frames, acknowledges its SETTINGS and
 * PINGs, and answers each request stream's HEADERS by `answer`. It never sends WINDOW_UPDATE unless an answer
 * does: a client's uploads stop when the 65,535 bytes of the connection's first window are spent.
 */
export async function h2Service(answer: (stream: number) => H2Answer): Promise<H2Service> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    let preface = false;
    s.write(frame(SETTINGS, 0, 0, Buffer.alloc(0)));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!preface) {
        if (buf.length < 24) return;
        buf = buf.subarray(24);
        preface = true;
      }
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) return;
        const type = buf[3]!;
        const flags = buf[4]!;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        buf = buf.subarray(9 + len);
        if (type === SETTINGS && (flags & 1) === 0) s.write(frame(SETTINGS, 1, 0, Buffer.alloc(0)));
        if (type === PING && (flags & 1) === 0) s.write(frame(PING, 1, 0, Buffer.alloc(8)));
        if (type !== HEADERS) continue;
        const out = answer(id);
        if (out === 'close') s.destroy();
        else if (out !== 'silence' && !s.destroyed) s.write(Buffer.concat(out));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, address: `127.0.0.1:${(server.address() as AddressInfo).port}`, sockets };
}

/** Closes the stand-in service and every connection to it. */
export function stopH2Service(up: H2Service | undefined): void {
  for (const s of up?.sockets ?? []) s.destroy();
  up?.server.close();
}
