/**
 * Every error Plinth reports carries a stable code and the HTTP status it maps to.
 * Users and tests match on codes; message text may change.
 */
export const ErrorCodes = {
  BAD_REQUEST: { code: 'bad_request', status: 400, title: 'Bad request' },
  MALFORMED_BODY: { code: 'malformed_body', status: 400, title: 'The request body could not be parsed' },
  VALIDATION_FAILED: { code: 'validation_failed', status: 422, title: 'The resource is not valid' },
  INVALID_SELECTOR: { code: 'invalid_selector', status: 400, title: 'The label selector is not valid' },
  INVALID_PARAMETER: { code: 'invalid_parameter', status: 400, title: 'A query parameter is not valid' },
  UNKNOWN_KIND: { code: 'unknown_kind', status: 404, title: 'No such kind' },
  NOT_FOUND: { code: 'not_found', status: 404, title: 'Not found' },
  ROUTE_NOT_FOUND: { code: 'route_not_found', status: 404, title: 'No such endpoint' },
  METHOD_NOT_ALLOWED: { code: 'method_not_allowed', status: 405, title: 'Method not allowed' },
  REVISION_CONFLICT: { code: 'revision_conflict', status: 409, title: 'The resource changed since the given revision' },
  ALREADY_EXISTS: { code: 'already_exists', status: 409, title: 'The resource already exists' },
  REVISION_COMPACTED: { code: 'revision_compacted', status: 410, title: 'The revision has been compacted' },
  PAYLOAD_TOO_LARGE: { code: 'payload_too_large', status: 413, title: 'The request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { code: 'unsupported_media_type', status: 415, title: 'Unsupported content type' },
  HEADERS_TOO_LARGE: { code: 'headers_too_large', status: 431, title: 'Request headers too large' },
  UNAUTHENTICATED: { code: 'unauthenticated', status: 401, title: 'Authentication required' },
  FORBIDDEN: { code: 'forbidden', status: 403, title: 'Not allowed' },
  ESCALATION_DENIED: { code: 'escalation_denied', status: 403, title: 'A role cannot grant more than its author holds' },
  LEASE_NOT_FOUND: { code: 'lease_not_found', status: 404, title: 'No live lease' },
  UNAVAILABLE: { code: 'unavailable', status: 503, title: 'Service unavailable' },
  INTERNAL: { code: 'internal', status: 500, title: 'Internal error' },
} as const;

export type ErrorCodeName = keyof typeof ErrorCodes;
export type ErrorCode = (typeof ErrorCodes)[ErrorCodeName]['code'];

/** One invalid field, addressed the way a user reads it: `spec.rules[2].threshold`. */
export interface FieldError {
  field: string;
  message: string;
}

export class PlinthError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly title: string;
  readonly errors: FieldError[] | undefined;
  readonly extra: Record<string, unknown> | undefined;

  constructor(
    name: ErrorCodeName,
    detail?: string,
    options?: { errors?: FieldError[]; cause?: unknown; extra?: Record<string, unknown> },
  ) {
    const def = ErrorCodes[name];
    super(detail ?? def.title, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PlinthError';
    this.code = def.code;
    this.status = def.status;
    this.title = def.title;
    this.errors = options?.errors;
    this.extra = options?.extra;
  }
}

/** RFC 9457 problem document, with Plinth's stable `code` extension. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  code: string;
  errors?: FieldError[];
  [extension: string]: unknown;
}

export const PROBLEM_TYPE_BASE = 'https://plinth.dev/problems/';

export function toProblem(err: PlinthError, instance?: string): Problem {
  const p: Problem = {
    type: PROBLEM_TYPE_BASE + err.code,
    title: err.title,
    status: err.status,
    detail: err.message,
    code: err.code,
    ...(err.extra ?? {}),
  };
  if (instance !== undefined) p.instance = instance;
  if (err.errors) p.errors = err.errors;
  return p;
}

export function isPlinthError(e: unknown): e is PlinthError {
  return e instanceof PlinthError;
}
