import type { Command } from 'commander';
import { createTwoFilesPatch } from 'diff';
import { ApiError, ExitCode } from '../errors.js';
import { resolveKind } from '../kinds.js';
import { diffView, formatChanges, json, yaml } from '../output.js';
import { clientOf, namespaceOf, note, out, outputOf, revisionArg } from './common.js';

/** A unified diff of two YAML texts; empty when they are equal. */
export function unifiedYamlDiff(label: string, fromRev: number, toRev: number, before: unknown, after: unknown): string {
  const a = yaml(before) + '\n';
  const b = yaml(after) + '\n';
  if (a === b) return '';
  return createTwoFilesPatch(`${label}@${fromRev}`, `${label}@${toRev}`, a, b, undefined, undefined, { context: 3 })
    .replace(/^=+\n/, '')
    .trimEnd();
}

export function registerDiff(program: Command): void {
  program
    .command('diff')
    .description('show what changed in a resource between two revisions')
    .argument('<kind>', 'kind')
    .argument('<name>', 'resource name')
    .option('-n, --namespace <ns>', 'namespace (default: $PLINTH_NAMESPACE or "default")')
    .requiredOption('--from <R1>', 'older revision', revisionArg)
    .option('--to <R2>', 'newer revision (default: the current one)', revisionArg)
    .action(async (kindArg: string, name: string, opts: { namespace?: string; from: number; to?: number }, cmd: Command) => {
      const format = outputOf(cmd);
      const kind = resolveKind(kindArg);
      const ns = namespaceOf(opts.namespace);
      const client = await clientOf(cmd);
      const d = await client.diff(kind, ns, name, opts.from, opts.to);
      if (format === 'json') return out(json(d));
      if (format === 'yaml') return out(yaml(d));
      out(`${kind}/${ns}/${name}: revision ${d.from} -> ${d.to}`);
      out(formatChanges(d.changes ?? []));
      // The server's change list is exact; the line diff shows the same change in context, the way reviewers read it.
      let before, after;
      try {
        [before, after] = await Promise.all([
          client.getResource(kind, ns, name, { revision: d.from }),
          client.getResource(kind, ns, name, { revision: d.to }),
        ]);
      } catch (e) {
        // A revision may be compacted from history (or be a deletion); the change list above still stands.
        if (e instanceof ApiError && e.exitCode === ExitCode.REFUSED) {
          note(`(no line diff: ${e.message})`);
          return;
        }
        throw e;
      }
      const patch = unifiedYamlDiff(`${kind}/${ns}/${name}`, d.from, d.to, diffView(before), diffView(after));
      if (patch) out('\n' + patch);
    });
}
