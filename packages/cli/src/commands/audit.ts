import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { AuditVerifier, type AuditVerifyResult } from '@plinth/core';
import { PlinthClient } from '../client.js';
import { CliError, ExitCode, UsageError } from '../errors.js';
import { json, yaml } from '../output.js';
import { connectionOf, out, outputOf, type GlobalOptions } from './common.js';

const PAGE = 1000;

export interface VerifyOutcome extends AuditVerifyResult {
  head: { seq: number; hash: string } | undefined;
}

/**
 * Pages through the whole log and recomputes the chain, then checks the end against the head the server keeps
 * apart from the entries (which catches removal of the newest entries). Entries appended while we read are
 * fine: we only compare with a head read after the last entry we saw.
 */
export async function verifyAudit(client: PlinthClient): Promise<VerifyOutcome> {
  const v = new AuditVerifier();
  let after = 0;
  let head: { seq: number; hash: string } | undefined;
  let settleTries = 0;
  while (true) {
    const page = await client.audit(after, PAGE);
    head = page.head;
    const items = page.items ?? [];
    for (const e of items) {
      if (!v.push(e)) return { ...v.finish(), head };
      after = e.seq;
    }
    if (items.length > 0) continue;
    // The log may have grown between reading the items and the head; read again before calling it truncated.
    if (head && head.seq > after && settleTries++ < 3) continue;
    break;
  }
  return { ...v.finish(head), head };
}

export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('the hash-chained audit log');
  audit
    .command('verify')
    .description('read the whole audit log and verify its hash chain against the server-kept head')
    .option('--data <dir>', "authenticate with the admin credential in DIR/admin.token (on the server's host)")
    .action(async (opts: { data?: string }, cmd: Command) => {
      const conn = await connectionOf(cmd);
      const g = cmd.optsWithGlobals<GlobalOptions>();
      if (opts.data !== undefined && g.token === undefined) {
        const file = join(opts.data, 'admin.token');
        try {
          conn.token = (await readFile(file, 'utf8')).trim();
        } catch (e) {
          throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
      }
      const r = await verifyAudit(new PlinthClient(conn));
      const format = outputOf(cmd);
      if (format !== 'table') out((format === 'json' ? json : yaml)(r));
      if (r.ok) {
        if (format === 'table') out(`audit log OK: ${r.checked} entries`);
        return;
      }
      throw new CliError(`audit log is broken at entry ${r.problem?.seq ?? '?'}: ${r.problem?.reason ?? 'unknown problem'} (${r.checked} entries verified before it)`, ExitCode.REFUSED);
    });
}
