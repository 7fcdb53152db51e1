import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { UsageError } from './errors.js';

/** One resource document from a manifest file, ready to PUT. */
export interface ManifestDoc {
  file: string;
  /** 1-based position of the document in its file, as a user counts `---` sections. */
  document: number;
  kind: string;
  namespace: string;
  name: string;
  body: Record<string, unknown>;
}

/** A document that cannot be applied, addressed by file and document number. */
export interface ManifestError {
  file: string;
  document: number | undefined;
  message: string;
}

export interface LoadOptions {
  /** Descend into subdirectories of directory arguments. */
  recursive?: boolean;
  /** Namespace for documents that do not name one. */
  defaultNamespace?: string | undefined;
  /** Reads `-` (tests pass their own). */
  readStdin?: () => Promise<string>;
}

export interface LoadResult {
  docs: ManifestDoc[];
  errors: ManifestError[];
}

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** Metadata the server owns. A revision in a file is stale by nature; applying desired state ignores it. */
const SERVER_FIELDS = ['revision', 'createRevision', 'createdAt', 'updatedAt'];

export function formatManifestError(e: ManifestError): string {
  return e.document === undefined ? `${e.file}: ${e.message}` : `${e.file} (document ${e.document}): ${e.message}`;
}

async function readStdinText(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Expands arguments to files: a file as given; a directory's manifest files sorted by name (recursing with -R). */
export async function expandPaths(paths: readonly string[], recursive: boolean): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      // Hidden entries are tooling (.git, editor files), never manifests.
      if (e.name.startsWith('.')) continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (recursive) await walk(p);
      } else if (EXTENSIONS.has(extname(e.name).toLowerCase())) out.push(p);
    }
  };
  for (const p of paths) {
    if (p === '-') {
      out.push(p);
      continue;
    }
    let st;
    try {
      st = await stat(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new UsageError(code === 'ENOENT' ? `${p}: no such file or directory` : `${p}: ${code ?? (e as Error).message}`);
    }
    if (st.isDirectory()) {
      const before = out.length;
      await walk(p);
      if (out.length === before) throw new UsageError(`${p}: no .yaml, .yml or .json files${recursive ? '' : ' (use -R to include subdirectories)'}`);
    } else out.push(p);
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

type Parsed = { document: number; value: unknown } | { document: number; error: string };

/** Parses a file's text into plain values, one per document (or that document's error), in file order. */
export function parseManifestText(file: string, text: string): Parsed[] {
  if (extname(file).toLowerCase() === '.json') {
    try {
      return [{ document: 1, value: JSON.parse(text) as unknown }];
    } catch (e) {
      return [{ document: 1, error: `invalid JSON: ${(e as Error).message}` }];
    }
  }
  const docs = parseAllDocuments(text);
  // An empty file parses to an empty stream (not an array of documents in every yaml version).
  const list = Array.isArray(docs) ? docs : [];
  return list.map((doc, i): Parsed => {
    const document = i + 1;
    if (doc.errors.length > 0) {
      const err = doc.errors[0]!;
      const line = err.linePos?.[0];
      const where = line ? ` at line ${line.line}, column ${line.col}` : '';
      return { document, error: `invalid YAML${where}: ${err.message.split('\n')[0]}` };
    }
    try {
      // maxAliasCount guards against alias bombs ("billion laughs") in untrusted files.
      return { document, value: doc.toJS({ maxAliasCount: 100 }) as unknown };
    } catch (e) {
      return { document, error: `invalid YAML: ${(e as Error).message.split('\n')[0]}` };
    }
  });
}

/** Checks one parsed document and addresses it; `List` documents (as `get -o yaml` prints) expand to their items. */
export function toManifestDocs(file: string, document: number, value: unknown, defaultNamespace: string | undefined): { docs: ManifestDoc[]; errors: ManifestError[] } {
  const docs: ManifestDoc[] = [];
  const errors: ManifestError[] = [];
  // A document holding only comments (or a trailing `---`) is nothing to apply.
  if (value === null || value === undefined) return { docs, errors };
  const fail = (message: string): { docs: ManifestDoc[]; errors: ManifestError[] } => {
    errors.push({ file, document, message });
    return { docs, errors };
  };
  if (!isObject(value)) return fail('expected a mapping with kind, metadata and spec');
  if (value['kind'] === 'List' && Array.isArray(value['items'])) {
    value['items'].forEach((item, i) => {
      const r = toManifestDocs(file, document, item, defaultNamespace);
      docs.push(...r.docs);
      errors.push(...r.errors.map((e) => ({ ...e, message: `items[${i}]: ${e.message}` })));
    });
    return { docs, errors };
  }
  const kind = value['kind'];
  if (typeof kind !== 'string' || kind === '') return fail('kind: required');
  const md = value['metadata'];
  if (!isObject(md)) return fail('metadata: required (with name and namespace)');
  const name = md['name'];
  if (typeof name !== 'string' || name === '') return fail('metadata.name: required');
  const ns = md['namespace'] ?? defaultNamespace;
  if (typeof ns !== 'string' || ns === '') return fail('metadata.namespace: required (or pass --namespace)');
  const metadata: Record<string, unknown> = { ...md, namespace: ns };
  for (const f of SERVER_FIELDS) delete metadata[f];
  docs.push({ file, document, kind, namespace: ns, name, body: { ...value, metadata } });
  return { docs, errors };
}

/**
 * Reads every manifest. Problems with one document do not stop the others: they are collected with their
 * file and document number, so a user fixes them all in one pass. A path that does not exist is a usage error.
 */
export async function loadManifests(paths: readonly string[], opts: LoadOptions = {}): Promise<LoadResult> {
  if (paths.length === 0) throw new UsageError('no manifest given: pass -f FILE or -f DIR');
  const files = await expandPaths(paths, opts.recursive ?? false);
  const docs: ManifestDoc[] = [];
  const errors: ManifestError[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = file === '-' ? await (opts.readStdin ?? readStdinText)() : await readFile(file, 'utf8');
    } catch (e) {
      throw new UsageError(`${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const name = file === '-' ? '<stdin>' : file;
    for (const p of parseManifestText(name, text)) {
      if ('error' in p) {
        errors.push({ file: name, document: p.document, message: p.error });
        continue;
      }
      const r = toManifestDocs(name, p.document, p.value, opts.defaultNamespace);
      docs.push(...r.docs);
      errors.push(...r.errors);
    }
  }
  return { docs, errors };
}
