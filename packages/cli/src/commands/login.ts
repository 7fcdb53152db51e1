import type { Command } from 'commander';
import { PlinthClient } from '../client.js';
import { normalizeUrl, readTokenValue, resolveConnection, saveCredentials } from '../config.js';
import { UsageError } from '../errors.js';
import { json, yaml } from '../output.js';
import { note, out, outputOf, type GlobalOptions } from './common.js';

/** Expiry of a JWT, when the token is one; raw credentials (plinth_…) do not expire by themselves. */
export function jwtExpiry(token: string): Date | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' ? new Date(payload.exp * 1000) : undefined;
  } catch {
    return undefined;
  }
}

export function registerLogin(program: Command): void {
  program
    .command('login')
    .description('check a token against the server and save it for later commands')
    .addHelpText(
      'after',
      '\nThe token is a service-account credential (plinth_…) or a JWT; "@path" reads it from a file, e.g.\n' +
        '  plinth login --url http://127.0.0.1:7070 --token @.plinth/admin.token\n' +
        'Saved (mode 0600) to ${XDG_CONFIG_HOME:-~/.config}/plinth/credentials.json, and only ever sent to that URL.',
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      const raw = g.token ?? (process.env['PLINTH_TOKEN'] || undefined);
      if (raw === undefined) throw new UsageError('login needs --token TOKEN (or --token @file)');
      const token = await readTokenValue(raw);
      const url = g.url !== undefined ? normalizeUrl(g.url) : (await resolveConnection({ token })).url;
      const who = await new PlinthClient({ url, token }).whoami();
      const path = await saveCredentials(url, token);
      const format = outputOf(cmd);
      if (format !== 'table') return out((format === 'json' ? json : yaml)({ url, ...who, credentialsFile: path }));
      out(`logged in to ${url} as ${who.subject} (via ${who.via})`);
      note(`saved to ${path}`);
      const exp = jwtExpiry(token);
      if (exp) note(`note: this token is a JWT and expires at ${exp.toISOString()}; log in with a credential (plinth_…) for a lasting login`);
    });
}
