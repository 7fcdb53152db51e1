import type { Command } from 'commander';
import { resolveKind } from '../kinds.js';
import { formatResource, resourceRef } from '../output.js';
import { clientOf, namespaceOf, out, outputOf } from './common.js';

export function registerDelete(program: Command): void {
  program
    .command('delete')
    .description('delete a resource')
    .argument('<kind>', 'kind')
    .argument('<name>', 'resource name')
    .option('-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")')
    .action(async (kindArg: string, name: string, opts: { namespace?: string }, cmd: Command) => {
      const format = outputOf(cmd);
      const client = await clientOf(cmd);
      const r = await client.deleteResource(resolveKind(kindArg), namespaceOf(opts.namespace), name);
      out(format === 'table' ? `${resourceRef(r)} deleted (revision ${r.metadata.revision})` : formatResource(r, format));
    });
}
