/**
 * A small typed emitter. Node's EventEmitter would do, but its untyped names and its special 'error' event
 * (which throws when nobody listens) are the wrong contract for a client whose listeners are optional.
 * A listener that throws is reported through `onListenerError` and never breaks delivery to the others or
 * the client's watch loop.
 */
export class TypedEmitter<Events extends { [K in keyof Events]: unknown[] }> {
  private readonly listeners: { [K in keyof Events]?: Set<(...args: Events[K]) => void> } = {};

  constructor(private readonly onListenerError: (event: keyof Events, error: unknown) => void) {}

  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof Events>(event: K, listener: (...args: Events[K]) => void): () => void {
    const set = (this.listeners[event] ??= new Set());
    set.add(listener);
    return () => this.off(event, listener);
  }

  off<K extends keyof Events>(event: K, listener: (...args: Events[K]) => void): void {
    this.listeners[event]?.delete(listener);
  }

  /** True when someone listens, so callers can skip building an event nobody reads. */
  has(event: keyof Events): boolean {
    return (this.listeners[event]?.size ?? 0) > 0;
  }

  emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    const set = this.listeners[event];
    if (!set) return;
    for (const fn of set) {
      try {
        fn(...args);
      } catch (e) {
        this.onListenerError(event, e);
      }
    }
  }
}
