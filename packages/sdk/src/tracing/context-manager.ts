import { AsyncLocalStorage } from 'node:async_hooks';
import { context, createContextKey, ROOT_CONTEXT, trace, type Context, type ContextManager, type Span } from '@opentelemetry/api';

/**
 * The OpenTelemetry context on AsyncLocalStorage, for processes where no OpenTelemetry SDK installed one:
 * without it `context.with` is a no-op and an instrumentation (pg, redis) inside a handler could not see the
 * span Plinth made active. What `@opentelemetry/context-async-hooks` does, minus binding EventEmitters (which
 * only SDK-side instrumentations ask for, and those come with their own manager), so the SDK needs no
 * dependency for it.
 */
export class AsyncLocalContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.storage.run(ctx, thisArg === undefined && args.length === 0 ? (fn as () => ReturnType<F>) : () => fn.apply(thisArg, args));
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const run = (fn: (...a: unknown[]) => unknown, self: unknown, a: unknown[]): unknown => this.storage.run(ctx, () => fn.apply(self, a));
    const fn = target as unknown as (...a: unknown[]) => unknown;
    return function (this: unknown, ...a: unknown[]) {
      return run(fn, this, a);
    } as unknown as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.storage.disable();
    return this;
  }
}

const PROBE = createContextKey('plinth.tracing.probe');

/** True when a context manager that actually carries context is registered (the api's default carries none). */
export function hasContextManager(): boolean {
  return context.with(ROOT_CONTEXT.setValue(PROBE, true), () => context.active().getValue(PROBE) === true);
}

/**
 * Registers the AsyncLocalStorage context manager unless one is there. Probing first instead of relying on
 * `setGlobalContextManager` refusing a second one: a refusal is logged as an error through the app's diag logger.
 */
export function ensureContextManager(): void {
  if (!hasContextManager()) context.setGlobalContextManager(new AsyncLocalContextManager());
}

const NO_KEY = Symbol('plinth.tracing.none');

/**
 * A Context as a chain of single entries. Setting a value costs one small object, where the api's own
 * context copies its whole Map; the handler's context is set once per request, so that copy is on the hot path.
 */
class LinkedContext implements Context {
  constructor(
    private readonly parent: Context,
    private readonly key: symbol,
    private readonly value: unknown,
  ) {}

  getValue(key: symbol): unknown {
    return key === this.key ? this.value : this.parent.getValue(key);
  }

  setValue(key: symbol, value: unknown): Context {
    return new LinkedContext(this, key, value);
  }

  deleteValue(key: symbol): Context {
    return new LinkedContext(this, key, undefined);
  }
}

const LINKED_ROOT = new LinkedContext(ROOT_CONTEXT, NO_KEY, undefined);

/** The active context with `span` set as the active span. */
export function activeWithSpan(span: Span): Context {
  const active = context.active();
  const base = active === ROOT_CONTEXT ? LINKED_ROOT : active instanceof LinkedContext ? active : new LinkedContext(active, NO_KEY, undefined);
  return trace.setSpan(base, span);
}
