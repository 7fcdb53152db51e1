import { PlinthError } from '@plinth/core';
import { normalizeTraces, type NormalizedBatch, type OtlpEncoding } from './normalize.js';
import { ExportTraceServiceRequest } from './schema.js';

/**
 * OTLP/HTTP protobuf body → SpanRecords. protobufjs throws plain Errors (RangeError "index out of range"
 * on truncated or over-long lengths, "invalid wire type" on groups and garbage, a stack overflow on
 * absurd nesting); every one of them is the client's bad data, a 400.
 */
export function decodeProtobufTraces(body: Uint8Array): NormalizedBatch {
  let message: unknown;
  try {
    message = ExportTraceServiceRequest.decode(body);
  } catch (e) {
    throw new PlinthError('MALFORMED_BODY', `invalid OTLP protobuf: ${(e as Error).message}`.slice(0, 300));
  }
  return normalizeTraces(message, 'protobuf');
}

/** OTLP/HTTP JSON body → SpanRecords. */
export function decodeJsonTraces(body: Uint8Array): NormalizedBatch {
  const text = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (e) {
    throw new PlinthError('MALFORMED_BODY', `invalid JSON: ${(e as Error).message}`.slice(0, 300));
  }
  try {
    return normalizeTraces(doc, 'json');
  } catch (e) {
    if (e instanceof PlinthError) throw e;
    // Only a stack overflow on absurdly nested values can get here.
    throw new PlinthError('MALFORMED_BODY', `invalid OTLP JSON: ${(e as Error).message}`.slice(0, 300));
  }
}

export function decodeTraces(body: Uint8Array, encoding: OtlpEncoding): NormalizedBatch {
  return encoding === 'protobuf' ? decodeProtobufTraces(body) : decodeJsonTraces(body);
}
