import { AsyncLocalStorage } from 'node:async_hooks';
import type { Baggage } from './balancing/baggage.js';
import type { TraceContext } from './balancing/traceparent.js';

/**
 * What one inbound request carries to every outbound call made while serving it: trace context, baggage
 * (lane, pressure-test mark, user id) and the deadline. The inbound middleware creates it; the outbound client
 * reads it, so the lane, the stress mark and the shrinking deadline follow the call chain without the
 * handler passing anything along.
 */
export interface RequestContext {
  /** The span this hop works under; outbound calls are its children. Undefined in propagation-less contexts. */
  readonly trace: TraceContext | undefined;
  /** W3C baggage, as received (minus internal keys from untrusted clients) plus what the hop added. */
  readonly baggage: Baggage;
  /** Absolute deadline on the monotonic clock (`monotonicClock.now()` ms); undefined = none. */
  readonly deadlineAt: number | undefined;
  /** The calling service, when it said who it is (`plinth-caller` header) or was authenticated. */
  readonly caller: string | undefined;
}

const storage = new AsyncLocalStorage<RequestContext>();

/** The context of the request being served, if any. */
export function currentContext(): RequestContext | undefined {
  return storage.getStore();
}

/** Runs `fn` with `ctx` as the current request context (for its whole async continuation). */
export function runWithContext<T>(ctx: RequestContext, fn: () => T): T {
  return storage.run(ctx, fn);
}
