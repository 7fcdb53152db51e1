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

/** The part of an OpenTelemetry Context a Scope reads through (structurally the api's `Context`). */
interface ValueSource {
  getValue(key: symbol): unknown;
}

const NO_KEY = Symbol('plinth.scope.none');

/**
 * What the process's one AsyncLocalStorage holds: the request context, and the OpenTelemetry context as a
 * chain of single entries (it implements the api's `Context`: `getValue`, `setValue`, `deleteValue`).
 *
 * One storage for both because under Node 20's async_hooks every AsyncLocalStorage adds its own work to
 * every promise and async resource the process creates; a second one (an OpenTelemetry context manager
 * next to Plinth's request context) measured at 1.5–2 µs per request of a plain fastify service. Plinth's
 * context manager (tracing/context-manager.ts) reads and writes this same storage, so a traced request
 * enters one scope holding its context and its span. Setting a value costs one small object, where the
 * api's own context copies its whole Map.
 */
export class Scope {
  constructor(
    /** The request being served, carried along by every OpenTelemetry context derived from this one. */
    readonly request: RequestContext | undefined,
    private readonly parent: ValueSource | undefined,
    private readonly key: symbol,
    private readonly value: unknown,
  ) {}

  getValue(key: symbol): unknown {
    return key === this.key ? this.value : this.parent?.getValue(key);
  }

  setValue(key: symbol, value: unknown): Scope {
    return new Scope(this.request, this, key, value);
  }

  deleteValue(key: symbol): Scope {
    return new Scope(this.request, this, key, undefined);
  }
}

const storage = new AsyncLocalStorage<Scope>();

/** The context of the request being served, if any. */
export function currentContext(): RequestContext | undefined {
  return storage.getStore()?.request;
}

/** Runs `fn` with `ctx` as the current request context (for its whole async continuation). */
export function runWithContext<T>(ctx: RequestContext, fn: () => T): T {
  return storage.run(new Scope(ctx, storage.getStore(), NO_KEY, undefined), fn);
}

/** The scope being run in, if any (for the context manager and the inbound runtime). */
export function currentScope(): Scope | undefined {
  return storage.getStore();
}

/**
 * Runs `fn` in a scope holding `request` and, on top of the current OpenTelemetry context, `key` = `value`
 * (the active span, say): what `runWithContext` around `context.with` does, in one storage run.
 */
export function runInScope<T>(request: RequestContext | undefined, key: symbol, value: unknown, fn: () => T): T {
  return storage.run(new Scope(request, storage.getStore(), key, value), fn);
}

/** Runs `fn` in `scope` as it is (an OpenTelemetry context made by this module, entered again). */
export function enterScope<T>(scope: Scope, fn: () => T): T {
  return storage.run(scope, fn);
}

/**
 * `ctx` (any OpenTelemetry Context) as a Scope. A foreign one (the api's ROOT_CONTEXT, one from another
 * manager) is wrapped, keeping the request context being served: entering it changes what OpenTelemetry
 * sees, not which request this is.
 */
export function scopeOf(ctx: ValueSource): Scope {
  return ctx instanceof Scope ? ctx : new Scope(storage.getStore()?.request, ctx, NO_KEY, undefined);
}
