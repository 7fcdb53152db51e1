/**
 * gRPC-Web at the edge (grpc/doc/PROTOCOL-WEB.md): browsers cannot read HTTP trailers, so a gRPC-Web call
 * carries its status in a last frame of the body (flag 0x80, the trailers as an HTTP/1 header block), and
 * `-text` calls are base64 both ways. The gateway turns such a call into plain gRPC over HTTP/2 for the
 * upstream and its answer back into gRPC-Web, so gRPC services need no gRPC-Web support of their own.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** `binary`: application/grpc-web[+codec]; `text`: application/grpc-web-text[+codec], base64 on the wire. */
export type GrpcWebMode = 'binary' | 'text';

const WEB = 'application/grpc-web';
const WEB_TEXT = 'application/grpc-web-text';

/** The content type of a gRPC-Web answer the gateway makes itself. */
export function grpcWebContentType(mode: GrpcWebMode): string {
  return mode === 'text' ? `${WEB_TEXT}+proto` : `${WEB}+proto`;
}

/** The mode of a gRPC-Web request by its content type; undefined for anything else. */
export function grpcWebModeOf(contentType: string | string[] | undefined): GrpcWebMode | undefined {
  if (typeof contentType !== 'string' || !contentType.startsWith(WEB)) return undefined;
  const rest = contentType.slice(WEB.length);
  if (rest === '' || rest[0] === '+' || rest[0] === ';') return 'binary';
  if (rest.startsWith('-text')) {
    const after = rest.slice(5);
    if (after === '' || after[0] === '+' || after[0] === ';') return 'text';
  }
  return undefined;
}

/** `+proto`, `+json`, ...: the codec suffix of a gRPC or gRPC-Web content type, or ''. */
function codecOf(contentType: string, prefix: string): string {
  const rest = contentType.slice(prefix.length);
  if (rest[0] !== '+') return '';
  const end = rest.search(/[;\s]/);
  return end < 0 ? rest : rest.slice(0, end);
}

/**
 * The upstream request's headers for a gRPC-Web call, from the flat list the gateway forwards: gRPC's
 * content type with the same codec, `te: trailers`, and no content-length where the body changes length
 * (text mode: base64 decoded). `x-grpc-web`, which only tells a gRPC-Web server who calls, is dropped.
 */
export function grpcRequestHeaders(wire: readonly string[], mode: GrpcWebMode): string[] {
  const out: string[] = [];
  let te = false;
  for (let i = 0; i + 1 < wire.length; i += 2) {
    const name = wire[i]!;
    const value = wire[i + 1]!;
    if (name === 'content-type') out.push(name, `application/grpc${codecOf(value, mode === 'text' ? WEB_TEXT : WEB)}`);
    else if (name === 'content-length' && mode === 'text') continue;
    else if (name === 'x-grpc-web') continue;
    else {
      if (name === 'te') te = true;
      out.push(name, value);
    }
  }
  if (!te) out.push('te', 'trailers');
  return out;
}

/**
 * A `-text` request body as bytes. Clients may send several base64 segments, each padded, one after the
 * other; node's decoder stops at the first padding, so each segment is decoded on its own.
 */
export function decodeTextBody(body: Buffer): Buffer {
  const text = body.toString('latin1');
  if (!text.includes('=')) return Buffer.from(text, 'base64');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) !== 0x3d) continue;
    while (i + 1 < text.length && text.charCodeAt(i + 1) === 0x3d) i++;
    parts.push(Buffer.from(text.slice(start, i + 1), 'base64'));
    start = i + 1;
  }
  if (start < text.length) parts.push(Buffer.from(text.slice(start), 'base64'));
  return Buffer.concat(parts);
}

/** Names gRPC-Web must not carry in the trailer frame: they are the message's framing, not its status. */
const NOT_IN_FRAME = new Set(['content-type', 'content-length', 'trailer', 'transfer-encoding', 'te', 'connection']);

/** The trailer frame: flag 0x80, a 4-byte big-endian length, then `name: value\r\n` per trailer (names lower case). */
export function trailerFrame(trailers: IncomingHttpHeaders): Buffer {
  let block = '';
  for (const raw in trailers) {
    const name = raw.toLowerCase();
    if (NOT_IN_FRAME.has(name)) continue;
    const v = trailers[raw];
    if (v === undefined) continue;
    for (const x of Array.isArray(v) ? v : [v]) block += `${name}: ${x}\r\n`;
  }
  const text = Buffer.from(block, 'latin1');
  const frame = Buffer.allocUnsafe(5 + text.length);
  frame[0] = 0x80;
  frame.writeUInt32BE(text.length, 1);
  text.copy(frame, 5);
  return frame;
}

/** A gRPC answer says so by its content type, or (trailers-only, some servers) by a status and no type. */
function isGrpcAnswer(head: readonly string[]): boolean {
  let status = false;
  for (let i = 0; i + 1 < head.length; i += 2) {
    const name = head[i]!;
    if (name === 'content-type') {
      const v = head[i + 1]!;
      return v.startsWith('application/grpc') && !v.startsWith(WEB);
    }
    if (name === 'grpc-status') status = true;
  }
  return status;
}

/**
 * One gRPC answer on its way back as gRPC-Web: the head's content type, the body (base64 in text mode,
 * carrying the 0-2 bytes of an incomplete group from chunk to chunk so that padding falls only at the end),
 * and the closing trailer frame.
 */
export class GrpcWebAnswer {
  /** The answer's status came in its head (a trailers-only answer): no trailer frame then. */
  private statusInHead = false;
  private carry: Buffer | undefined;
  /** The upstream did not answer in gRPC (an HTTP error page, say): passed on as it came, for the client to map its HTTP status. */
  private asIs = false;

  constructor(readonly mode: GrpcWebMode) {}

  /** The answer's flat head list with the content type a gRPC-Web client reads, its length removed (the body changes). */
  head(head: readonly string[]): string[] {
    if (!isGrpcAnswer(head)) {
      this.asIs = true;
      return head as string[];
    }
    const out: string[] = [];
    let typed = false;
    for (let i = 0; i + 1 < head.length; i += 2) {
      const name = head[i]!;
      const value = head[i + 1]!;
      if (name === 'content-length') continue;
      if (name === 'content-type') {
        typed = true;
        // isGrpcAnswer let only application/grpc[+codec] through.
        out.push(name, `${this.mode === 'text' ? WEB_TEXT : WEB}${codecOf(value, 'application/grpc')}`);
        continue;
      }
      if (name === 'grpc-status') this.statusInHead = true;
      out.push(name, value);
    }
    if (!typed) out.push('content-type', grpcWebContentType(this.mode));
    return out;
  }

  /** A body chunk as it goes to the client. */
  data(chunk: Buffer): Buffer {
    if (this.mode === 'binary' || this.asIs) return chunk;
    let bytes = chunk;
    if (this.carry !== undefined) {
      bytes = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    const whole = bytes.length - (bytes.length % 3);
    if (whole < bytes.length) this.carry = bytes.subarray(whole);
    return Buffer.from(bytes.subarray(0, whole).toString('base64'), 'latin1');
  }

  /** What closes the body: the rest of the base64 and the trailer frame (none when the head held the status). */
  end(trailers: IncomingHttpHeaders | undefined): Buffer | undefined {
    if (this.asIs) return undefined;
    const frame = this.statusInHead && trailers === undefined ? undefined : trailerFrame(trailers ?? {});
    if (this.mode === 'binary') return frame;
    const parts: string[] = [];
    if (this.carry !== undefined) parts.push(this.carry.toString('base64'));
    this.carry = undefined;
    if (frame !== undefined) parts.push(frame.toString('base64'));
    return parts.length === 0 ? undefined : Buffer.from(parts.join(''), 'latin1');
  }
}
