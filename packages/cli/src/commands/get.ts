import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { resolveKind } from '../kinds.js';
import { formatResource, formatResourceList } from '../output.js';
import { checkSelector, clientOf, namespaceOf, note, out, outputOf, revisionArg } from './common.js';

interface GetOptions {
  namespace?: string;
  selector?: string;
  allNamespaces?: boolean;
  revision?: number;
  reveal?: boolean;
}

export function registerGet(program: Command): void {
  program
    .command('get')
    .description('show one resource, or list resources of a kind')
    .argument('<kind>', 'kind, e.g. Config, configs, instance')
    .argument('[name]', 'resource name (omit to list)')
    .option('-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")')
    .option('-A, --all-namespaces', 'list in every namespace you may read')
    .option('-l, --selector <selector>', 'label selector, e.g. team=orders,tier!=canary')
    .option('--revision <R>', 'show the resource as it was at revision R', revisionArg)
    .option('--reveal', 'include Secret values (needs the reveal permission)')
    .action(async (kindArg: string, name: string | undefined, opts: GetOptions, cmd: Command) => {
      const kind = resolveKind(kindArg);
      const format = outputOf(cmd);
      if (name !== undefined) {
        if (opts.allNamespaces) throw new UsageError('--all-namespaces lists resources; it cannot be used with a name');
        if (opts.selector !== undefined) throw new UsageError('--selector filters lists; it cannot be used with a name');
        const client = await clientOf(cmd);
        const r = await client.getResource(kind, namespaceOf(opts.namespace), name, { revision: opts.revision, reveal: opts.reveal });
        out(formatResource(r, format));
        return;
      }
      if (opts.revision !== undefined) throw new UsageError('--revision needs a resource name');
      if (opts.reveal) throw new UsageError('--reveal needs a resource name (lists never carry secret values)');
      if (opts.allNamespaces && opts.namespace !== undefined) throw new UsageError('use either --namespace or --all-namespaces');
      const selector = checkSelector(opts.selector);
      const namespace = opts.allNamespaces ? undefined : namespaceOf(opts.namespace);
      const client = await clientOf(cmd);
      const list = await client.listAll(kind, { namespace, selector });
      if (format === 'table' && list.items.length === 0) {
        note(`No ${kind} resources found${namespace === undefined ? '' : ` in namespace ${namespace}`}${selector ? ` matching ${selector}` : ''}.`);
        return;
      }
      out(formatResourceList(list.items, format, list.revision));
    });
}
