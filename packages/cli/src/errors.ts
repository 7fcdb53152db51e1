import type { FieldError } from '@plinth/core';

/**
 * Exit codes are part of the CLI's contract: scripts branch on them, so each class of failure keeps its own
 * number and text may change freely.
 */
export const ExitCode = {
  OK: 0,
  /** The server refused: validation, not found, conflict, or any other problem answer. */
  REFUSED: 1,
  /** Bad flags, a missing file, a manifest that cannot be read. */
  USAGE: 2,
  /** The server could not be reached at all. */
  UNREACHABLE: 3,
  /** 401/403: the token is missing, wrong, expired, or lacks the permission. */
  AUTH: 4,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export const EXIT_CODES_HELP = `Exit codes:
  0  success
  1  the server refused the request (validation failed, not found, conflict, ...)
  2  usage error (bad flags or arguments, missing or unreadable file)
  3  cannot connect to the plinth server
  4  unauthenticated or forbidden (missing, bad or expired token; no permission)`;

/** An expected failure: printed as `error: message` (no stack trace) and mapped to an exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    /** Extra lines printed under the message (field errors, hints). */
    readonly details: readonly string[] = [],
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export class UsageError extends CliError {
  constructor(message: string, details: readonly string[] = []) {
    super(message, ExitCode.USAGE, details);
    this.name = 'UsageError';
  }
}

export class UnreachableError extends CliError {
  constructor(url: string, reason: string) {
    super(`cannot reach plinth server at ${url} (${reason})`, ExitCode.UNREACHABLE);
    this.name = 'UnreachableError';
  }
}

/** A problem+json answer (or any non-2xx answer) from the server. */
export class ApiError extends CliError {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly fieldErrors: readonly FieldError[] = [],
    readonly problem: Record<string, unknown> | undefined = undefined,
  ) {
    super(`${detail} (${code})`, status === 401 || status === 403 ? ExitCode.AUTH : ExitCode.REFUSED, fieldErrors.map((e) => `${e.field}: ${e.message}`));
    this.name = 'ApiError';
  }
}

/** Lines to print on stderr for an expected failure. */
export function formatCliError(e: CliError): string {
  return [`error: ${e.message}`, ...e.details.map((d) => `  ${d}`)].join('\n');
}
