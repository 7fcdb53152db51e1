import type { Command } from 'commander';
import { resolveKind } from '../kinds.js';
import { formatHistory } from '../output.js';
import { clientOf, namespaceOf, out, outputOf, revisionArg } from './common.js';

export function registerHistory(program: Command): void {
  program
    .command('history')
    .description("list a resource's revisions, newest first")
    .argument('<kind>', 'kind')
    .argument('<name>', 'resource name')
    .option('-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")')
    .option('--limit <N>', 'at most N revisions', revisionArg)
    .action(async (kindArg: string, name: string, opts: { namespace?: string; limit?: number }, cmd: Command) => {
      const format = outputOf(cmd);
      const client = await clientOf(cmd);
      const items = await client.history(resolveKind(kindArg), namespaceOf(opts.namespace), name, opts.limit);
      out(formatHistory(items, format));
    });
}
