#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { registerApply } from './commands/apply.js';
import { registerAudit } from './commands/audit.js';
import { registerDelete } from './commands/delete.js';
import { registerDiff } from './commands/diff.js';
import { registerGateway } from './commands/gateway.js';
import { registerGet } from './commands/get.js';
import { registerHistory } from './commands/history.js';
import { registerIdentity } from './commands/identity.js';
import { registerLogin } from './commands/login.js';
import { registerRollback } from './commands/rollback.js';
import { registerServer } from './commands/server.js';
import { registerTrace } from './commands/trace.js';
import { registerApm } from './commands/apm.js';
import { registerWatch } from './commands/watch.js';
import { CliError, EXIT_CODES_HELP, ExitCode, formatCliError } from './errors.js';
import { OUTPUT_FORMATS } from './output.js';

const ENV_HELP = `Environment:
  PLINTH_URL        server URL (default http://127.0.0.1:7070, or the one saved by plinth login)
  PLINTH_TOKEN      bearer token, or @path to read it from a file (default: the token saved by plinth login)
  PLINTH_NAMESPACE  namespace when -n is not given (default "default")`;

export function buildProgram(): Command {
  const program = new Command('plinth');
  program
    .description('Plinth: a thin middle platform for TypeScript microservices')
    .version('0.1.0')
    // Before any .command(): subcommands copy these settings when they are created.
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ showGlobalOptions: true })
    .addOption(new Option('--url <url>', 'plinth server URL (overrides $PLINTH_URL)'))
    .addOption(new Option('--token <token>', 'bearer token or @file (overrides $PLINTH_TOKEN)'))
    .addOption(new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('table'))
    .addHelpText('after', `\n${ENV_HELP}\n\n${EXIT_CODES_HELP}`);
  registerServer(program);
  registerGateway(program);
  registerApply(program);
  registerGet(program);
  registerDelete(program);
  registerHistory(program);
  registerDiff(program);
  registerRollback(program);
  registerWatch(program);
  registerLogin(program);
  registerAudit(program);
  registerIdentity(program);
  registerTrace(program);
  registerApm(program);
  return program;
}

/** Runs the CLI and returns the exit code; expected failures print `error: …` without a stack trace. */
export async function run(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander has already printed the message or the help.
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return ExitCode.OK;
      return ExitCode.USAGE;
    }
    if (e instanceof CliError) {
      process.stderr.write(formatCliError(e) + '\n');
      return e.exitCode;
    }
    // A bug, not an expected failure: keep the stack, it is what a bug report needs.
    process.stderr.write(`error: unexpected failure: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return ExitCode.REFUSED;
  }
}

function isMain(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    // npm's bin links are symlinks; compare real paths.
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  // `plinth get ... | head` closes stdout early; that is not an error worth a stack trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(ExitCode.OK);
    throw e;
  });
  const code = await run(process.argv.slice(2));
  process.exitCode = code;
}
