import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/**
 * `${name}-${hostname}-${pid}-${random}`, made a valid resource name: host names may carry upper case and
 * characters names may not. The random part tells apart a restarted process that reused a pid (containers
 * always start at pid 1).
 */
export function defaultInstanceId(service: string, host: string = hostname(), pid: number = process.pid): string {
  const raw = `${service}-${host}-${pid}-${randomBytes(3).toString('hex')}`;
  const clean = raw
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/-{2,}/g, '-');
  // Keep the unique tail when a long host name pushes the name over the limit.
  const tail = clean.slice(clean.lastIndexOf('-', clean.lastIndexOf('-') - 1));
  const head = clean.slice(0, 253 - tail.length);
  return (head + tail).replace(/^[^a-z0-9]+/, '');
}

const WILDCARDS = new Set(['', '0.0.0.0', '::', '[::]']);

/** Where others reach a server bound to host:port: the host itself when specific, else loopback. */
export function derivedAddress(host: string, port: number, scheme: 'http' | 'https' = 'http'): string {
  const h = WILDCARDS.has(host) ? '127.0.0.1' : host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `${scheme}://${h}:${port}`;
}
