import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UsageError } from './errors.js';
import { formatManifestError, loadManifests } from './manifest.js';

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'plinth-manifest-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(rel: string, text: string): Promise<string> {
  const p = join(dir, rel);
  await mkdir(join(p, '..'), { recursive: true });
  await writeFile(p, text);
  return p;
}

const config = (name: string, ns?: string): string =>
  `apiVersion: plinth.dev/v1\nkind: Config\nmetadata:\n  name: ${name}\n${ns ? `  namespace: ${ns}\n` : ''}spec:\n  content: "x"\n`;

void describe('loadManifests', () => {
  void it('reads every document of a multi-document YAML file, skipping empty ones', async () => {
    // A comment before the first `---` belongs to the first document, so `a` is document 1.
    const p = await file('multi.yaml', `# leading comment\n---\n${config('a', 'retail')}---\n${config('b', 'retail')}---\n# only a comment\n---\n`);
    const { docs, errors } = await loadManifests([p]);
    assert.deepEqual(errors, []);
    assert.deepEqual(
      docs.map((d) => [d.kind, d.namespace, d.name, d.document]),
      [
        ['Config', 'retail', 'a', 1],
        ['Config', 'retail', 'b', 2],
      ],
    );
  });

  void it('applies the default namespace only where a document names none', async () => {
    const p = await file('ns.yaml', `${config('a')}---\n${config('b', 'other')}`);
    const { docs } = await loadManifests([p], { defaultNamespace: 'dflt' });
    assert.deepEqual(docs.map((d) => d.namespace), ['dflt', 'other']);
    assert.equal((docs[0]!.body['metadata'] as { namespace: string }).namespace, 'dflt');
  });

  void it('reads a directory: manifest files only, sorted, not recursive unless asked', async () => {
    const d = join(dir, 'tree');
    await file('tree/b.yml', config('b', 'ns'));
    await file('tree/a.json', JSON.stringify({ kind: 'Config', metadata: { name: 'a', namespace: 'ns' }, spec: { content: '' } }));
    await file('tree/c.yaml', config('c', 'ns'));
    await file('tree/notes.txt', 'not a manifest');
    await file('tree/.hidden.yaml', config('hidden', 'ns'));
    await file('tree/sub/d.yaml', config('d', 'ns'));
    const flat = await loadManifests([d]);
    assert.deepEqual(flat.docs.map((x) => x.name), ['a', 'b', 'c']);
    const deep = await loadManifests([d], { recursive: true });
    assert.deepEqual(deep.docs.map((x) => x.name), ['a', 'b', 'c', 'd']);
  });

  void it('reports each bad document with its file and document number, and keeps the good ones', async () => {
    const p = await file(
      'bad.yaml',
      [
        config('good', 'ns'),
        'kind: Config\nmetadata: {namespace: ns}\nspec: {}\n',
        'metadata: {name: x, namespace: ns}\n',
        'kind: Config\nmetadata: {name: nons}\nspec: {}\n',
        'key: [unclosed\n',
        '- a list\n',
        config('good2', 'ns'),
      ].join('---\n'),
    );
    const { docs, errors } = await loadManifests([p]);
    assert.deepEqual(docs.map((d) => d.name), ['good', 'good2']);
    assert.deepEqual(
      errors.map((e) => [e.document, e.message.split(':')[0]!.replace(/ at line .*/, '')]),
      [
        [2, 'metadata.name'],
        [3, 'kind'],
        [4, 'metadata.namespace'],
        [5, 'invalid YAML'],
        [6, 'expected a mapping with kind, metadata and spec'],
      ],
    );
    assert.equal(formatManifestError(errors[0]!), `${p} (document 2): metadata.name: required`);
  });

  void it('reports invalid JSON with the file', async () => {
    const p = await file('broken.json', '{"kind": ');
    const { docs, errors } = await loadManifests([p]);
    assert.equal(docs.length, 0);
    assert.equal(errors[0]!.file, p);
    assert.match(errors[0]!.message, /^invalid JSON/);
  });

  void it('expands List documents, as get -o yaml prints them', async () => {
    const p = await file('list.yaml', `kind: List\nitems:\n  - {kind: Config, metadata: {name: a, namespace: ns, revision: 5, createdAt: x}, spec: {content: ''}}\n  - {kind: Config, metadata: {namespace: ns}}\n`);
    const { docs, errors } = await loadManifests([p]);
    assert.deepEqual(docs.map((d) => d.name), ['a']);
    assert.equal(errors[0]!.message, 'items[1]: metadata.name: required');
  });

  void it('drops server-owned metadata (a stale revision in a file must not block apply)', async () => {
    const p = await file('stale.yaml', 'kind: Config\nmetadata: {name: a, namespace: ns, revision: 3, createRevision: 1, createdAt: t, updatedAt: t, labels: {x: y}}\nspec: {content: ""}\n');
    const { docs } = await loadManifests([p]);
    assert.deepEqual(docs[0]!.body['metadata'], { name: 'a', namespace: 'ns', labels: { x: 'y' } });
  });

  void it('reads stdin for "-"', async () => {
    const { docs } = await loadManifests(['-'], { readStdin: () => Promise.resolve(config('in', 'ns')) });
    assert.equal(docs[0]!.file, '<stdin>');
    assert.equal(docs[0]!.name, 'in');
  });

  void it('treats a missing path, an empty directory and no -f as usage errors', async () => {
    await assert.rejects(loadManifests([join(dir, 'missing.yaml')]), (e: unknown) => e instanceof UsageError && /no such file/.test(e.message));
    await mkdir(join(dir, 'empty'));
    await assert.rejects(loadManifests([join(dir, 'empty')]), UsageError);
    await assert.rejects(loadManifests([]), UsageError);
  });

  void it('refuses YAML alias bombs', async () => {
    const bomb = 'a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n';
    const p = await file('bomb.yaml', bomb);
    const { errors } = await loadManifests([p]);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /invalid YAML/);
  });
});
