import type { Command } from 'commander';
import type { WatchEvent } from '@plinth/core';
import type { PlinthClient, Query } from '../client.js';
import { networkReason } from '../client.js';
import { ApiError, CliError, ExitCode, UnreachableError } from '../errors.js';
import { resolveKind } from '../kinds.js';
import { formatWatchEvent, type OutputFormat } from '../output.js';
import { SseParser } from '../sse.js';
import { checkSelector, clientOf, note, out, outputOf, sinceArg } from './common.js';

export interface WatchParams {
  kinds: string[];
  namespace: string | undefined;
  selector: string | undefined;
  since: number | undefined;
}

export interface WatchHooks {
  onEvent(e: WatchEvent): void;
  /** Reconnection notes and resyncs; the CLI writes them to stderr. */
  onNote?(text: string): void;
  signal: AbortSignal;
  /** The server sends a heartbeat every 15 s; silence for this long means the connection is dead. */
  idleTimeoutMs?: number;
  /** Backoff bounds between reconnects. */
  minDelayMs?: number;
  maxDelayMs?: number;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Follows the watch stream until `signal` aborts, reconnecting with `Last-Event-ID` (the last event or bookmark
 * seen) so no change is missed or repeated. Refusals (bad token, unknown kind, bad selector) end the watch with
 * their error; a server that cannot be reached on the first attempt does too, since nothing was ever watched.
 */
export async function runWatch(client: PlinthClient, params: WatchParams, hooks: WatchHooks): Promise<void> {
  const { signal } = hooks;
  const minDelay = hooks.minDelayMs ?? 500;
  const maxDelay = hooks.maxDelayMs ?? 10_000;
  const idleTimeout = hooks.idleTimeoutMs ?? 45_000;
  let lastId: number | undefined = params.since;
  let connectedOnce = false;
  let delay = minDelay;
  while (!signal.aborted) {
    const conn = new AbortController();
    const onAbort = (): void => conn.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    let idle: NodeJS.Timeout | undefined;
    let idledOut = false;
    const armIdle = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        idledOut = true;
        conn.abort();
      }, idleTimeout);
    };
    let resync: { revision: number; compactedRevision?: number } | undefined;
    try {
      const query: Query = { kinds: params.kinds.length ? params.kinds.join(',') : undefined, namespace: params.namespace, selector: params.selector };
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      if (lastId !== undefined) {
        // Both, so a proxy that strips Last-Event-ID still resumes correctly; the header wins on the server.
        query['since'] = lastId;
        headers['last-event-id'] = String(lastId);
      }
      armIdle();
      const res = await client.send('GET', '/v1/watch', { query, headers, signal: conn.signal, timeoutMs: 0 });
      if (connectedOnce) hooks.onNote?.(`reconnected${lastId !== undefined ? `, resuming after revision ${lastId}` : ''}`);
      connectedOnce = true;
      delay = minDelay;
      const parser = new SseParser((m) => {
        if (m.event === 'RESYNC') {
          resync = JSON.parse(m.data) as { revision: number; compactedRevision?: number };
          return;
        }
        if (m.id !== undefined && /^\d+$/.test(m.id)) lastId = Number(m.id);
        if (m.event === 'BOOKMARK' || m.event === 'message') return;
        const ev = JSON.parse(m.data) as WatchEvent;
        if (typeof ev.revision === 'number') lastId = Math.max(lastId ?? 0, ev.revision);
        hooks.onEvent(ev);
      });
      const decoder = new TextDecoder();
      const reader = res.body?.getReader();
      if (!reader) throw new Error('the server sent no stream');
      try {
        while (true) {
          const { done, value } = await reader.read();
          if (done) break;
          armIdle();
          parser.feed(decoder.decode(value, { stream: true }));
        }
      } finally {
        reader.releaseLock();
      }
      if (resync) {
        // The server compacted past our position: changes in between are gone. Say so, and follow from now.
        hooks.onNote?.(`resync: revision ${lastId ?? 0} is older than the compacted history${resync.compactedRevision !== undefined ? ` (${resync.compactedRevision})` : ''}; changes in between were missed, following from revision ${resync.revision}`);
        lastId = resync.revision;
        continue;
      }
      if (!signal.aborted) hooks.onNote?.('watch stream ended; reconnecting');
    } catch (e) {
      if (signal.aborted) break;
      if (e instanceof ApiError) {
        // 503 while a server starts or fails over is worth waiting for; other refusals will not change.
        if (e.status !== 503 && e.status !== 502 && e.status !== 504) throw e;
      } else if (e instanceof UnreachableError) {
        if (!connectedOnce) throw e;
      } else if (e instanceof SyntaxError) {
        throw new CliError(`the server sent an event that is not valid JSON: ${e.message}`, ExitCode.REFUSED);
      } else if (!(e instanceof Error && e.name === 'AbortError')) {
        if (!connectedOnce) throw e;
      }
      const why = idledOut ? `no data for ${Math.round(idleTimeout / 1000)}s` : e instanceof CliError ? e.message : networkReason(e);
      hooks.onNote?.(`watch connection lost (${why}); reconnecting in ${(delay / 1000).toFixed(1)}s`);
    } finally {
      clearTimeout(idle);
      signal.removeEventListener('abort', onAbort);
    }
    await sleep(delay, signal);
    delay = Math.min(maxDelay, delay * 2);
  }
}

export function registerWatch(program: Command): void {
  program
    .command('watch')
    .description('print changes as they happen (reconnects and resumes on its own; Ctrl-C to stop)')
    .argument('[kinds...]', 'kinds to watch (default: every kind you may watch)')
    .option('-n, --namespace <ns>', 'only this namespace (default: all namespaces)')
    .option('-l, --selector <selector>', 'label selector')
    .option('--since <R>', 'start after revision R (default: only new changes)', sinceArg)
    .addHelpText('after', '\nTable output: one line per event, "TYPE Kind/namespace/name rev R". -o json: one JSON event per line.')
    .action(async (kindArgs: string[], opts: { namespace?: string; selector?: string; since?: number }, cmd: Command) => {
      const format: OutputFormat = outputOf(cmd);
      const selector = checkSelector(opts.selector);
      const client = await clientOf(cmd);
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await runWatch(
          client,
          { kinds: kindArgs.map((k) => resolveKind(k)), namespace: opts.namespace, selector, since: opts.since },
          { signal: stop.signal, onEvent: (e) => out(formatWatchEvent(e, format)), onNote: (t) => note(t) },
        );
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
