import type { IncomingMessage } from 'node:http';
import { PlinthError } from '@plinth/core';
import { parseAllDocuments, parse as parseYaml } from 'yaml';

export const DEFAULT_BODY_LIMIT = 1024 * 1024;

/** Reads the body up to `limit` bytes; answers 413 past it (and stops reading). */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    throw new PlinthError('PAYLOAD_TOO_LARGE', `the body may be at most ${limit} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new PlinthError('PAYLOAD_TOO_LARGE', `the body may be at most ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? 'application/json').split(';')[0]!.trim().toLowerCase();
}

const YAML_TYPES = new Set(['application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml']);

/** Parses a JSON or YAML body (by Content-Type). Empty bodies are undefined. */
export async function readDocument(req: IncomingMessage, limit = DEFAULT_BODY_LIMIT): Promise<unknown> {
  const type = mediaType(req);
  const isYaml = YAML_TYPES.has(type);
  if (!isYaml && type !== 'application/json' && !type.endsWith('+json')) {
    throw new PlinthError('UNSUPPORTED_MEDIA_TYPE', `send application/json or application/yaml, not ${type.slice(0, 100)}`);
  }
  const raw = await readBody(req, limit);
  if (raw.length === 0) return undefined;
  const text = raw.toString('utf8');
  if (isYaml) {
    const docs = parseAllDocuments(text);
    if (!Array.isArray(docs)) throw new PlinthError('MALFORMED_BODY', 'empty YAML document');
    if (docs.length !== 1) throw new PlinthError('MALFORMED_BODY', 'send exactly one YAML document per request');
    const doc = docs[0]!;
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      throw new PlinthError('MALFORMED_BODY', `invalid YAML at line ${e.linePos?.[0]?.line ?? '?'}: ${e.message.split('\n')[0]}`);
    }
    try {
      return doc.toJS({ maxAliasCount: 100 }) as unknown;
    } catch (e) {
      throw new PlinthError('MALFORMED_BODY', `invalid YAML: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new PlinthError('MALFORMED_BODY', `invalid JSON: ${(e as Error).message}`);
  }
}

export { parseYaml };
