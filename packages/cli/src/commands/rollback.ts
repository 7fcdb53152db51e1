import type { Command } from 'commander';
import { resolveKind } from '../kinds.js';
import { formatResource, resourceRef } from '../output.js';
import { clientOf, namespaceOf, out, outputOf, revisionArg } from './common.js';

export function registerRollback(program: Command): void {
  program
    .command('rollback')
    .description("write a new revision with the labels, annotations and spec of an earlier one")
    .argument('<kind>', 'kind')
    .argument('<name>', 'resource name')
    .option('-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")')
    .requiredOption('--to <R>', 'the revision to return to', revisionArg)
    .action(async (kindArg: string, name: string, opts: { namespace?: string; to: number }, cmd: Command) => {
      const format = outputOf(cmd);
      const client = await clientOf(cmd);
      const r = await client.rollback(resolveKind(kindArg), namespaceOf(opts.namespace), name, opts.to);
      out(format === 'table' ? `${resourceRef(r)} rolled back to revision ${opts.to} (new revision ${r.metadata.revision})` : formatResource(r, format));
    });
}
