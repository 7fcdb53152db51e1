import { InvalidArgumentError, type Command } from 'commander';
import { parseSelector, PlinthError } from '@plinth/core';
import { PlinthClient } from '../client.js';
import { defaultNamespace, resolveConnection, type Connection } from '../config.js';
import { ExitCode, UsageError } from '../errors.js';
import { parseOutputFormat, type OutputFormat } from '../output.js';

export interface GlobalOptions {
  url?: string;
  token?: string;
  output?: string;
}

function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>();
}

export async function connectionOf(cmd: Command): Promise<Connection> {
  const g = globals(cmd);
  return resolveConnection({ url: g.url, token: g.token });
}

export async function clientOf(cmd: Command): Promise<PlinthClient> {
  return new PlinthClient(await connectionOf(cmd));
}

export function outputOf(cmd: Command): OutputFormat {
  return parseOutputFormat(globals(cmd).output);
}

export function namespaceOf(ns: string | undefined): string {
  return ns ?? defaultNamespace();
}

/** Writes a line to stdout. */
export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

/** Writes a line to stderr: notes and progress, kept apart from output scripts parse. */
export function note(text: string): void {
  process.stderr.write(text.endsWith('\n') ? text : text + '\n');
}

/** Commander argument parser for revisions: positive integers only, rejected as a usage error otherwise. */
export function revisionArg(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError('expected a revision number (a positive integer).');
  }
  return Number(value);
}

/** Like revisionArg, but 0 is allowed (watch from the beginning). */
export function sinceArg(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new InvalidArgumentError('expected a revision number.');
  return Number(value);
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Checks a selector locally, so a typo is a usage error (exit 2) with the parser's explanation. */
export function checkSelector(selector: string | undefined): string | undefined {
  if (selector === undefined || selector.trim() === '') return undefined;
  try {
    parseSelector(selector);
  } catch (e) {
    if (e instanceof PlinthError) throw new UsageError(e.message);
    throw e;
  }
  return selector;
}

/**
 * Keeps a long-running command (server, gateway) up until SIGINT/SIGTERM, then closes it gracefully. A second
 * signal means "now": exit 130 without waiting for the drain.
 */
export async function runUntilSignal(close: () => Promise<void>, draining: string, force?: () => void): Promise<void> {
  await new Promise<void>((done) => {
    let closing = false;
    const stop = (sig: NodeJS.Signals): void => {
      if (closing) {
        note(`${sig} again: exiting without ${draining}`);
        force?.();
        process.exit(130);
      }
      closing = true;
      note(`${sig}: shutting down`);
      close().then(
        () => done(),
        (e: unknown) => {
          note(`error while shutting down: ${(e as Error).message}`);
          process.exitCode = ExitCode.REFUSED;
          done();
        },
      );
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  note('stopped');
}
