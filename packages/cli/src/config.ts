import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { UsageError } from './errors.js';

export const DEFAULT_URL = 'http://127.0.0.1:7070';
export const DEFAULT_NAMESPACE = 'default';

export type Env = Readonly<Record<string, string | undefined>>;

/** Where to reach the server and with which bearer token. */
export interface Connection {
  url: string;
  token: string | undefined;
}

/**
 * Saved logins, one per server URL. A token is only ever sent to the URL it was saved for, so pointing
 * PLINTH_URL at another server never leaks the credential to it.
 */
export interface CredentialsFile {
  current?: string;
  servers: Record<string, { token: string; savedAt?: string }>;
}

export function credentialsPath(env: Env = process.env): string {
  const base = env['XDG_CONFIG_HOME'] || join(env['HOME'] || homedir(), '.config');
  return join(base, 'plinth', 'credentials.json');
}

/** Validates and canonicalizes a server URL (no trailing slash), so saved logins match however it was typed. */
export function normalizeUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new UsageError(`invalid server URL ${JSON.stringify(raw)} (expected e.g. ${DEFAULT_URL})`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UsageError(`invalid server URL ${JSON.stringify(raw)}: only http and https are supported`);
  }
  if (u.search || u.hash) throw new UsageError(`invalid server URL ${JSON.stringify(raw)}: no query or fragment expected`);
  return u.href.replace(/\/+$/, '');
}

/** A token value, or `@path` to read it from a file (so it stays out of shell history and `ps`). */
export async function readTokenValue(value: string): Promise<string> {
  if (!value.startsWith('@')) return value.trim();
  const path = value.slice(1);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read token file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const token = text.trim();
  if (token === '') throw new UsageError(`token file ${path} is empty`);
  return token;
}

export async function loadCredentials(env: Env = process.env): Promise<CredentialsFile> {
  const path = credentialsPath(env);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { servers: {} };
    throw new UsageError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const parsed = JSON.parse(text) as Partial<CredentialsFile>;
    const servers = parsed.servers && typeof parsed.servers === 'object' ? parsed.servers : {};
    return typeof parsed.current === 'string' ? { current: parsed.current, servers } : { servers };
  } catch {
    throw new UsageError(`${path} is not valid JSON; fix or remove it, then run plinth login again`);
  }
}

export async function saveCredentials(url: string, token: string, env: Env = process.env): Promise<string> {
  const path = credentialsPath(env);
  const creds = await loadCredentials(env);
  creds.current = url;
  creds.servers[url] = { token, savedAt: new Date().toISOString() };
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  // Write a private temp file and rename it over the old one: the token is never readable by others,
  // not even for an instant, and a crash never leaves a half-written file.
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
  await chmod(tmp, 0o600); // mode is ignored when the file already existed
  await rename(tmp, path);
  return path;
}

export interface ConnectionFlags {
  url?: string | undefined;
  token?: string | undefined;
}

/** Flags win over the environment, which wins over the saved login. */
export async function resolveConnection(flags: ConnectionFlags, env: Env = process.env): Promise<Connection> {
  let saved: CredentialsFile | undefined;
  const creds = async (): Promise<CredentialsFile> => (saved ??= await loadCredentials(env));
  const rawUrl = flags.url ?? (env['PLINTH_URL'] || undefined) ?? (await creds()).current ?? DEFAULT_URL;
  const url = normalizeUrl(rawUrl);
  const rawToken = flags.token ?? (env['PLINTH_TOKEN'] || undefined);
  const token = rawToken !== undefined ? await readTokenValue(rawToken) : (await creds()).servers[url]?.token;
  return { url, token };
}

export function defaultNamespace(env: Env = process.env): string {
  return env['PLINTH_NAMESPACE'] || DEFAULT_NAMESPACE;
}
