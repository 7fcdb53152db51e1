/**
 * Errors of the control-plane client. Match on `code`, never on message text: the control plane's own
 * codes (`unauthenticated`, `forbidden`, `revision_compacted`, ... see docs/api.md) pass through unchanged;
 * the client adds `client_closed`, `http_error` (an answer that is not a problem document, e.g. from a proxy),
 * `protocol_error` (a watch stream it cannot read) and `watch_idle`.
 */
export class ControlPlaneError extends Error {
  readonly code: string;
  /** HTTP status when the error is an answer from the server; 0 otherwise. */
  readonly status: number;

  constructor(code: string, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ControlPlaneError';
    this.code = code;
    this.status = options.status ?? 0;
  }
}

export function isControlPlaneError(e: unknown, code?: string): e is ControlPlaneError {
  return e instanceof ControlPlaneError && (code === undefined || e.code === code);
}

export const CLIENT_CLOSED = 'client_closed';
export const HTTP_ERROR = 'http_error';
export const PROTOCOL_ERROR = 'protocol_error';
export const WATCH_IDLE = 'watch_idle';
export const UNAUTHENTICATED = 'unauthenticated';
export const REVISION_COMPACTED = 'revision_compacted';
