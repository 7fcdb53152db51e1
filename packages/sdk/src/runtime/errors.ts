/**
 * Errors of the service runtime, matched on `code`. Failures talking to the control plane are the SDK's
 * `ControlPlaneError` (codes from docs/api.md, plus `unavailable` for network failures); these are misuse.
 */
export class ServiceError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'ServiceError';
    this.code = code;
  }
}

/** `listen` was called a second time: one service, one server, one registration. */
export const ALREADY_LISTENING = 'already_listening';
/** `listen` after `shutdown` began. */
export const SERVICE_STOPPED = 'service_stopped';
