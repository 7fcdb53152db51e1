/** What the client logs through. `console` fits; so does a thin adapter over pino or winston. */
export interface Logger {
  warn(message: string, details?: Record<string, unknown>): void;
  debug(message: string, details?: Record<string, unknown>): void;
}

/** Warnings reach stderr, because a client that silently serves stale data is worse than a noisy one. */
export const defaultLogger: Logger = {
  warn: (message, details) => (details ? console.warn(`plinth-sdk: ${message}`, details) : console.warn(`plinth-sdk: ${message}`)),
  debug: () => {},
};

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
