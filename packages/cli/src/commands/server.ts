import { resolve } from 'node:path';
import { inheritedSocket } from '@plinth/core';
import type { Command } from 'commander';
import { CliError, ExitCode, UsageError } from '../errors.js';
import { out, runUntilSignal } from './common.js';

interface ServerFlags {
  data: string;
  listen: string;
  store?: string;
  secretKeyFile?: string;
  logLevel?: string;
  otlpForward?: string;
  spanRetention?: string;
}

/** `7d`, `36h`, `90m` → ms; the CLI's own unit syntax, as SLO windows use. */
function durationMs(flag: string, v: string): number {
  const m = /^([1-9]\d{0,4})([mhd])$/.exec(v);
  if (!m) throw new UsageError(`${flag} expects a duration such as 90m, 36h or 7d, not ${JSON.stringify(v)}`);
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
}

/** Shell-quotes a path for the copy-paste hints, so a data dir with spaces still works. */
function sh(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function registerServer(program: Command): void {
  program
    .command('server')
    .description('run the plinth control plane until SIGINT/SIGTERM')
    .option('--data <dir>', 'data directory: SQLite file, secret keys, admin token', './.plinth')
    .option('--listen <host:port>', 'address to listen on (port 0 picks a free one); fd:N or systemd[:NAME] for a listening socket the server was started with (socket activation)', '127.0.0.1:7070')
    .option('--store <store>', 'sqlite, or a postgres:// URL (default: $PLINTH_STORE or sqlite)')
    .option('--secret-key-file <file>', 'secret sealing key file (default: DATA/secret.keys; or set $PLINTH_SECRET_KEYS)')
    .option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent', 'info')
    .option('--otlp-forward <url>', 'also send every stored span to this OTLP/HTTP traces URL (another OpenTelemetry backend)')
    .option('--span-retention <duration>', 'how long raw spans are kept, e.g. 7d (rollups: 35d)', '7d')
    .action(async (opts: ServerFlags) => {
      let forward: { url: string } | undefined;
      if (opts.otlpForward !== undefined) {
        let u: URL;
        try {
          u = new URL(opts.otlpForward);
        } catch {
          throw new UsageError(`--otlp-forward expects an http(s) URL, not ${JSON.stringify(opts.otlpForward)}`);
        }
        if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError('--otlp-forward expects an http:// or https:// URL');
        forward = { url: u.href };
      }
      const spansMs = durationMs('--span-retention', opts.spanRetention ?? '7d');
      try {
        inheritedSocket(opts.listen);
      } catch (e) {
        throw new UsageError(`--listen ${(e as Error).message}`);
      }
      const dataDir = resolve(opts.data);
      const store = opts.store ?? (process.env['PLINTH_STORE'] || undefined);
      const secretKeys = process.env['PLINTH_SECRET_KEYS'] || undefined;
      if (secretKeys !== undefined && opts.secretKeyFile !== undefined) {
        throw new UsageError('give the secret keys either in $PLINTH_SECRET_KEYS or with --secret-key-file, not both');
      }
      // Loaded only here: the server pulls in SQLite and the rest of the control plane, which no other
      // command needs, and every other command should start fast.
      const { startServer } = await import('@plinth/server');
      let running;
      try {
        running = await startServer({
          dataDir,
          listen: opts.listen,
          ...(store !== undefined ? { store } : {}),
          ...(secretKeys !== undefined ? { secretKeys } : {}),
          ...(opts.secretKeyFile !== undefined ? { secretKeyFile: resolve(opts.secretKeyFile) } : {}),
          ...(opts.logLevel !== undefined ? { logLevel: opts.logLevel } : {}),
          apm: { retention: { spansMs }, ...(forward ? { forward } : {}) },
        });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const why = code === 'EADDRINUSE' ? `${opts.listen} is already in use` : (e as Error).message;
        throw new CliError(`cannot start the server: ${why}`, ExitCode.REFUSED);
      }
      out(`plinth server listening on ${running.url} (data: ${dataDir})`);
      if (running.adminTokenFile) {
        out(`created the admin credential: ${running.adminTokenFile} (keep it secret)`);
        out('use it with:');
        out(`  export PLINTH_URL=${running.url}`);
        out(`  export PLINTH_TOKEN=$(cat ${sh(running.adminTokenFile)})`);
        out(`or save it once with: plinth login --url ${running.url} --token @${sh(running.adminTokenFile)}`);
      }
      const server = running;
      await runUntilSignal(() => server.close(), 'a clean shutdown');
    });
}
