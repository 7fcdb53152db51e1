import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { Resource, WatchEvent } from '@plinth/core';
import { ControlPlaneError, PROTOCOL_ERROR } from './errors.js';

/** What one SSE event of `GET /v1/watch` means to a client. */
export type WatchMessage =
  | { type: 'change'; event: WatchEvent }
  /** Everything up to `revision` matching the filter has been sent. */
  | { type: 'bookmark'; revision: number }
  /** `since` was older than the compaction point: list again. The server closes the stream after it. */
  | { type: 'resync'; revision: number; compactedRevision: number };

function protocolError(why: string, m: EventSourceMessage): never {
  throw new ControlPlaneError(PROTOCOL_ERROR, `watch stream: ${why} in ${m.event ?? 'message'} event ${JSON.stringify(m.data.slice(0, 200))}`);
}

function isRevision(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function isResource(v: unknown): v is Resource {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as { kind?: unknown; metadata?: { namespace?: unknown; name?: unknown; revision?: unknown } | null };
  const m = r.metadata;
  return typeof r.kind === 'string' && typeof m === 'object' && m !== null && typeof m.namespace === 'string' && typeof m.name === 'string' && isRevision(m.revision);
}

/**
 * Reads one SSE event. Unknown event names return undefined (a newer server may add some); malformed data
 * throws a `protocol_error`, since applying half-understood changes would corrupt the snapshot silently.
 */
export function parseWatchMessage(m: EventSourceMessage): WatchMessage | undefined {
  const type = m.event;
  if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED' && type !== 'BOOKMARK' && type !== 'RESYNC') return undefined;
  let data: Record<string, unknown>;
  try {
    const parsed = JSON.parse(m.data) as unknown;
    if (typeof parsed !== 'object' || parsed === null) protocolError('data is not an object', m);
    data = parsed as Record<string, unknown>;
  } catch (e) {
    if (e instanceof ControlPlaneError) throw e;
    protocolError('data is not JSON', m);
  }
  if (!isRevision(data.revision)) protocolError('no revision', m);
  if (type === 'BOOKMARK') return { type: 'bookmark', revision: data.revision };
  if (type === 'RESYNC') {
    return { type: 'resync', revision: data.revision, compactedRevision: isRevision(data.compactedRevision) ? data.compactedRevision : 0 };
  }
  if (!isResource(data.resource)) protocolError('no resource with kind, metadata.namespace, name and revision', m);
  return { type: 'change', event: { type, revision: data.revision, resource: data.resource } };
}

/**
 * Consumes a watch response body: every chunk counts as a sign of life (`onBytes`, cheap: the client only
 * stores a timestamp), and every complete event goes to `onMessage` in order. Returns when the server ends
 * the stream; throws what `onMessage` or the body throws (an abort included).
 */
export async function readWatchStream(
  body: AsyncIterable<Uint8Array | string>,
  onMessage: (m: WatchMessage) => void,
  onBytes: () => void,
): Promise<void> {
  // The parser reports by callback in the middle of feed(); an error thrown there is kept and rethrown after
  // feed() returns, so the parser's internal state can never swallow it.
  let failure: { error: unknown } | undefined;
  const parser = createParser({
    onEvent: (m) => {
      if (failure) return;
      try {
        const msg = parseWatchMessage(m);
        if (msg) onMessage(msg);
      } catch (e) {
        failure = { error: e };
      }
    },
  });
  // Streaming decode: a multi-byte character split across two chunks is decoded once both have arrived.
  const decoder = new TextDecoder();
  for await (const chunk of body) {
    onBytes();
    parser.feed(typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true }));
    if (failure) throw failure.error;
  }
}
