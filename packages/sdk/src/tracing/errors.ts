/** Errors of the tracing module; match on `code`. */
export class TracingError extends Error {
  readonly code: string;
  /** HTTP status of a refused export; 0 otherwise. */
  readonly status: number;

  constructor(code: string, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TracingError';
    this.code = code;
    this.status = options.status ?? 0;
  }
}

/** A tracing or exporter option out of range (thrown by the constructors). */
export const TRACING_INVALID_OPTION = 'tracing_invalid_option';
/** A batch the collector refused or could not be reached for (logged, counted in `failed`; never thrown at callers). */
export const TRACING_EXPORT_FAILED = 'tracing_export_failed';
