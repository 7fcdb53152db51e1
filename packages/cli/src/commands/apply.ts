import type { Command } from 'commander';
import { deepEqual, LANE_LABEL, PlinthError, SERVICE_LABEL, validateResource } from '@plinth/core';
import type { PlinthClient } from '../client.js';
import { ApiError, CliError, ExitCode } from '../errors.js';
import { formatManifestError, loadManifests, type ManifestDoc } from '../manifest.js';
import { clientOf, collect, note, out, outputOf } from './common.js';

interface ApplyOptions {
  filename: string[];
  recursive?: boolean;
  namespace?: string;
  dryRun?: boolean;
}

/**
 * What a PUT would do, decided locally: validate with the same schemas the server uses (which also fill
 * defaults, so omitted defaulted fields do not look like changes), then compare with the stored resource.
 */
async function dryRun(client: PlinthClient, doc: ManifestDoc): Promise<string> {
  const md = (doc.body['metadata'] ?? {}) as { labels?: Record<string, string>; annotations?: Record<string, string> };
  let desired = { labels: md.labels ?? {}, annotations: md.annotations ?? {}, spec: doc.body['spec'] as unknown };
  try {
    const v = validateResource(doc.body, { kind: doc.kind, namespace: doc.namespace, name: doc.name });
    desired = { labels: { ...v.labels }, annotations: v.annotations, spec: v.spec };
  } catch (e) {
    if (!(e instanceof PlinthError)) throw e;
    // A kind this CLI does not know may be known to a newer server: compare without local validation.
    if (e.code !== 'unknown_kind') throw new ApiError(e.status, e.code, e.message, e.errors ?? []);
  }
  const current = await client.findResource(doc.kind, doc.namespace, doc.name);
  if (!current) return 'created (dry run)';
  if (doc.kind === 'Secret') return 'updated (dry run; secret values are not compared)';
  if (doc.kind === 'Instance') {
    // The server labels every Instance with its service and lane; expect those too.
    const spec = desired.spec as { service?: string; lane?: string };
    if (spec.service) desired.labels[SERVICE_LABEL] = spec.service;
    if (spec.lane) desired.labels[LANE_LABEL] = spec.lane;
  }
  const same =
    deepEqual(desired.labels, current.metadata.labels ?? {}) &&
    deepEqual(desired.annotations, current.metadata.annotations ?? {}) &&
    deepEqual(desired.spec, current.spec);
  return same ? 'unchanged (dry run)' : 'updated (dry run)';
}

export function registerApply(program: Command): void {
  program
    .command('apply')
    .description('create or update resources from YAML/JSON manifests (multi-document YAML; idempotent)')
    .option('-f, --filename <path>', 'manifest file or directory, "-" for stdin (repeatable)', collect, [])
    .option('-R, --recursive', 'also read subdirectories of directory arguments')
    .option('-n, --namespace <ns>', 'namespace for documents without metadata.namespace (default: $PLINTH_NAMESPACE)')
    .option('--dry-run', 'validate and show what would change, without writing anything')
    .addHelpText('after', '\nPrints one line per document: Kind/namespace/name created|updated|unchanged.\nA failed document is reported with its file and document number; the others are still applied.')
    .action(async (opts: ApplyOptions, cmd: Command) => {
      const format = outputOf(cmd);
      const { docs, errors } = await loadManifests(opts.filename, {
        recursive: opts.recursive ?? false,
        defaultNamespace: opts.namespace ?? (process.env['PLINTH_NAMESPACE'] || undefined),
      });
      for (const e of errors) note(`error: ${formatManifestError(e)}`);
      if (docs.length === 0 && errors.length === 0) {
        note('nothing to apply: no documents found');
        return;
      }
      const client = docs.length > 0 ? await clientOf(cmd) : undefined;
      let failed = errors.length;
      for (const doc of docs) {
        const ref = `${doc.kind}/${doc.namespace}/${doc.name}`;
        try {
          let result: string;
          let revision: number | undefined;
          if (opts.dryRun) result = await dryRun(client!, doc);
          else {
            const r = await client!.putResource(doc.kind, doc.namespace, doc.name, doc.body);
            result = r.result;
            revision = r.resource?.metadata?.revision;
          }
          if (format === 'json') out(JSON.stringify({ file: doc.file, document: doc.document, kind: doc.kind, namespace: doc.namespace, name: doc.name, result, revision }));
          else out(`${ref} ${result}`);
        } catch (e) {
          // Unreachable server or a bad token fails every document alike: stop at once with that exit code.
          if (!(e instanceof ApiError) || e.exitCode === ExitCode.AUTH) throw e;
          failed++;
          note([`error: ${doc.file} (document ${doc.document}): ${ref}: ${e.message}`, ...e.details.map((d) => `  ${d}`)].join('\n'));
        }
      }
      if (failed > 0) {
        const total = docs.length + errors.length;
        throw new CliError(`${failed} of ${total} document${total === 1 ? '' : 's'} failed`, ExitCode.REFUSED);
      }
    });
}
