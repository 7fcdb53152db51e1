import { context, createContextKey, ROOT_CONTEXT, type Context, type ContextManager, type Span } from '@opentelemetry/api';
import { currentScope, enterScope, scopeOf, Scope } from '../context.js';

/**
 * The OpenTelemetry context on AsyncLocalStorage, for processes where no OpenTelemetry SDK installed one:
 * without it `context.with` is a no-op and an instrumentation (pg, redis) inside a handler could not see the
 * span Plinth made active. What `@opentelemetry/context-async-hooks` does, minus binding EventEmitters (which
 * only SDK-side instrumentations ask for, and those come with their own manager), so the SDK needs no
 * dependency for it.
 *
 * It keeps its contexts in the storage of Plinth's request context (`Scope` in context.ts) instead of a
 * storage of its own: each AsyncLocalStorage costs every promise the process makes, and a traced request
 * then enters one scope for both. Disabling it leaves that storage alone (Plinth's request context still
 * needs it); a disabled manager sees only ROOT_CONTEXT.
 */
export class AsyncLocalContextManager implements ContextManager {
  private enabled = true;

  /** False once `context.disable()` (or `disable()`) retired this manager. */
  get isEnabled(): boolean {
    return this.enabled;
  }

  active(): Context {
    return this.enabled ? (currentScope() ?? ROOT_CONTEXT) : ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    const call = thisArg === undefined && args.length === 0 ? (fn as () => ReturnType<F>) : () => fn.apply(thisArg, args);
    return this.enabled ? enterScope(scopeOf(ctx), call) : call();
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const scope = scopeOf(ctx);
    const fn = target as unknown as (...a: unknown[]) => unknown;
    return function (this: unknown, ...a: unknown[]) {
      return enterScope(scope, () => fn.apply(this, a));
    } as unknown as T;
  }

  enable(): this {
    this.enabled = true;
    return this;
  }

  disable(): this {
    this.enabled = false;
    return this;
  }
}

const PROBE = createContextKey('plinth.tracing.probe');

/** True when a context manager that actually carries context is registered (the api's default carries none). */
export function hasContextManager(): boolean {
  return context.with(ROOT_CONTEXT.setValue(PROBE, true), () => context.active().getValue(PROBE) === true);
}

/** The manager this module registered, while it is the registered one. */
let installed: AsyncLocalContextManager | undefined;

/**
 * Registers the AsyncLocalStorage context manager unless one is there. Probing first instead of relying on
 * `setGlobalContextManager` refusing a second one: a refusal is logged as an error through the app's diag logger.
 */
export function ensureContextManager(): void {
  if (installed?.isEnabled === true || hasContextManager()) return;
  const m = new AsyncLocalContextManager();
  if (context.setGlobalContextManager(m)) installed = m;
}

/**
 * Whether the registered OpenTelemetry context manager is the one this module installed, so that entering
 * a request scope with the span set (`runInScope`) is what `context.with` would have done. The api retires
 * a manager only through `context.disable()`, which disables it: one flag read per request.
 */
export function sharesRequestScope(): boolean {
  return installed !== undefined && installed.isEnabled;
}

/** The key the api keeps the active span under (`trace.setSpan`); `createContextKey` is `Symbol.for`. */
export const SPAN_KEY = createContextKey('OpenTelemetry Context Key SPAN');

/** The active context with `span` set as the active span. */
export function activeWithSpan(span: Span): Context {
  const active = context.active();
  return (active instanceof Scope ? active : scopeOf(active)).setValue(SPAN_KEY, span);
}
