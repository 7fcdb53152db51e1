import type { Command } from 'commander';
import { json, yaml, type OutputFormat } from '../output.js';
import { clientOf, namespaceOf, note, out, outputOf } from './common.js';

function structured(format: OutputFormat, body: unknown): boolean {
  if (format === 'table') return false;
  out(format === 'json' ? json(body ?? {}) : yaml(body ?? {}));
  return true;
}

/** A short description of a rotation answer whose exact shape this CLI does not depend on. */
function summary(body: unknown): string {
  if (!body || typeof body !== 'object') return '';
  const fields = Object.entries(body as Record<string, unknown>)
    .filter(([, v]) => typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
    .map(([k, v]) => `${k}=${String(v)}`);
  return fields.length ? ` (${fields.join(', ')})` : '';
}

export function registerIdentity(program: Command): void {
  const auth = program.command('auth').description('tokens and signing keys');
  auth
    .command('token')
    .description('exchange the current credential for a short-lived JWT and print it')
    .addHelpText('after', '\nExample: export PLINTH_TOKEN=$(plinth auth token)')
    .action(async (_opts: unknown, cmd: Command) => {
      const client = await clientOf(cmd);
      const t = await client.issueToken();
      if (!structured(outputOf(cmd), t)) out(t.access_token);
    });
  auth
    .command('rotate-keys')
    .description('start signing tokens with a new key (old keys stay in the JWKS until their tokens expire)')
    .action(async (_opts: unknown, cmd: Command) => {
      const body = await (await clientOf(cmd)).rotateSigningKeys();
      if (!structured(outputOf(cmd), body)) out(`signing key rotated${summary(body)}`);
    });

  const secrets = program.command('secrets').description('secret sealing keys');
  secrets
    .command('rotate-key')
    .description('seal Secrets with a new key and re-seal every stored Secret')
    .action(async (_opts: unknown, cmd: Command) => {
      const body = await (await clientOf(cmd)).rotateSecretKey();
      if (!structured(outputOf(cmd), body)) out(`secret key rotated${summary(body)}`);
    });

  const sa = program.command('serviceaccount').alias('sa').description('service accounts');
  sa.command('create-credential')
    .description('issue a credential (plinth_…) for an existing ServiceAccount; the token is shown only once')
    .argument('<name>', 'service account name')
    .option('-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")')
    .action(async (name: string, opts: { namespace?: string }, cmd: Command) => {
      const c = await (await clientOf(cmd)).createCredential(namespaceOf(opts.namespace), name);
      if (structured(outputOf(cmd), c)) return;
      // The token alone on stdout, so `plinth sa create-credential x -n y > token` stores exactly it.
      out(c.token);
      note(`credential ${c.id} created; the token is shown only once (revoke: DELETE /v1/serviceaccounts/${namespaceOf(opts.namespace)}/${name}/credentials/${c.id})`);
    });
}
