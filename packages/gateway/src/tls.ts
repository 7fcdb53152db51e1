/**
 * TLS at the edge: the certificate and key files, loaded and checked as a pair, and reloaded when they change
 * so a renewed certificate is served without a restart; with them, the client CA bundle that client
 * certificates (mutual TLS) are verified against, reloaded the same way.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContextOptions } from 'node:tls';

export interface TlsOptions {
  /** PEM certificate (chain) file: the server certificate first, then intermediates. */
  cert: string;
  /** PEM private key file of that certificate. */
  key: string;
  /** Oldest TLS version accepted. Default TLSv1.2. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** How often the two files are checked for a change. Default 5 s. */
  reloadIntervalMs?: number;
  /** Offer HTTP/2 (ALPN `h2`) beside HTTP/1.1 on the same port. Default true. */
  http2?: boolean;
  /**
   * PEM bundle of the CAs that client certificates are verified against (mutual TLS). Absent: no client
   * certificate is asked for, and routes of auth mode mtls answer 503.
   */
  clientCa?: string;
  /**
   * With `clientCa`. `request` (the default): a certificate is asked for, a connection without one (or with
   * one that does not verify) still shakes hands, and each route decides. `require`: the handshake fails
   * without a certificate that verifies.
   */
  clientCert?: 'request' | 'require';
}

export const CLIENT_CERT_MODES = ['request', 'require'] as const;

/** What node:https and setSecureContext are given; the same object shape both times. */
export type TlsContext = SecureContextOptions & { ALPNProtocols: string[]; requestCert?: boolean; rejectUnauthorized?: boolean };

/** An unusable certificate, key or CA bundle: a configuration error, so startGateway's callers treat it as bad input. */
export class TlsConfigError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = 'TlsConfigError';
  }
}

function reason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT') return 'no such file';
  if (err.code === 'EACCES' || err.code === 'EPERM') return 'permission denied';
  if (err.code === 'EISDIR') return 'is a directory';
  return err instanceof Error ? err.message : String(e);
}

/**
 * Checks the pair as node would use it, naming the file at fault: each must parse on its own, and the key
 * must belong to the certificate.
 */
export function tlsContext(o: TlsOptions, cert: Buffer, key: Buffer, ca?: Buffer): TlsContext {
  checkPair(o.cert, o.key, cert, key, 'TLS');
  const ctx: TlsContext = {
    cert,
    key,
    minVersion: o.minVersion ?? 'TLSv1.2',
    // Said explicitly, and the same on every reload: without HTTP/2, a client offering h2 falls back to 1.1.
    ALPNProtocols: o.http2 === false ? ['http/1.1'] : ['h2', 'http/1.1'],
  };
  if (o.clientCa !== undefined && ca !== undefined) {
    checkCaBundle(o.clientCa, ca, 'TLS client CA bundle');
    ctx.ca = ca;
    ctx.requestCert = true;
    // 'request': node still verifies, and says how it went in socket.authorized; the routes decide.
    ctx.rejectUnauthorized = o.clientCert === 'require';
  }
  return ctx;
}

/**
 * A certificate and its key as node would use them, naming the file at fault: each must parse on its own,
 * and the key must belong to the certificate. `what` names the pair in messages ("TLS", "upstream TLS client").
 */
export function checkPair(certPath: string, keyPath: string, cert: Buffer, key: Buffer, what: string): void {
  try {
    new X509Certificate(cert);
  } catch (e) {
    throw new TlsConfigError(`the ${what} certificate ${certPath} is not a PEM certificate (${reason(e)})`);
  }
  try {
    createPrivateKey(key);
  } catch (e) {
    throw new TlsConfigError(`the ${what} key ${keyPath} is not a PEM private key (${reason(e)})`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    const mismatch = /key values mismatch/i.test(reason(e));
    throw new TlsConfigError(mismatch ? `the ${what} key ${keyPath} does not belong to the certificate ${certPath}` : `cannot use the ${what} certificate ${certPath} with the key ${keyPath} (${reason(e)})`);
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Each certificate of the bundle must parse; a bundle with none would make every verification fail. */
export function checkCaBundle(path: string, ca: Buffer, what: string): void {
  const blocks = ca.toString('latin1').match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new TlsConfigError(`the ${what} ${path} holds no PEM certificate`);
  blocks.forEach((pem, i) => {
    try {
      new X509Certificate(pem);
    } catch (e) {
      throw new TlsConfigError(`the ${what} ${path} has a certificate that does not parse (number ${i + 1}: ${reason(e)})`);
    }
  });
}

/** A file's role in messages: "TLS certificate", "upstream TLS CA bundle", ... */
export function unreadable(what: string, path: string, e: unknown): TlsConfigError {
  return new TlsConfigError(`cannot read the ${what} ${path}: ${reason(e)}`);
}

export function readPem(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw unreadable(what, path, e);
  }
}

/** At startup: a missing, unreadable or mismatched file is an error naming it. */
export function loadTls(o: TlsOptions): TlsContext {
  if (o.clientCert !== undefined && !(CLIENT_CERT_MODES as readonly string[]).includes(o.clientCert)) throw new TlsConfigError(`tls.clientCert is 'request' or 'require', not ${JSON.stringify(o.clientCert)}`);
  if (o.clientCert !== undefined && o.clientCa === undefined) throw new TlsConfigError('tls.clientCert needs tls.clientCa: the CA bundle client certificates are verified against');
  return tlsContext(o, readPem('TLS certificate', o.cert), readPem('TLS key', o.key), o.clientCa === undefined ? undefined : readPem('TLS client CA bundle', o.clientCa));
}

async function reload(o: TlsOptions): Promise<TlsContext> {
  const ca = o.clientCa;
  const [cert, key, bundle] = await Promise.all([
    readPemAsync('TLS certificate', o.cert),
    readPemAsync('TLS key', o.key),
    ca === undefined ? undefined : readPemAsync('TLS client CA bundle', ca),
  ]);
  return tlsContext(o, cert, key, bundle);
}

export interface TlsWatcher {
  close(): void;
}

/**
 * Polls the files (the client CA bundle too; stat, which follows symlinks: a Kubernetes secret volume swaps a symlink) and, once
 * either changed, loads the pair again and hands it to `apply`. Renewal tools write the two files one after
 * the other, so a reload waits a little for the second one; a pair that still does not work is reported and
 * the one being served stays, until the next change.
 */
export function watchTls(o: TlsOptions, current: TlsContext, apply: (ctx: TlsContext) => void, onError: (e: Error) => void): TlsWatcher {
  const files = o.clientCa === undefined ? [o.cert, o.key] : [o.cert, o.key, o.clientCa];
  return watchPemFiles(files, o.reloadIntervalMs ?? 5000, current, () => reload(o), (a, b) => same(a.cert, b.cert) && same(a.key, b.key) && (a.ca === undefined || same(a.ca, b.ca)), apply, onError);
}

/**
 * The polling behind watchTls, for any set of PEM files loaded together: `load` reads and checks them all,
 * `equal` tells a load that found nothing new (the second file of a pair often changes after both were read).
 */
export function watchPemFiles<T>(files: readonly string[], intervalMs: number, current: T, load: () => Promise<T>, equal: (a: T, b: T) => boolean, apply: (t: T) => void, onError: (e: Error) => void): TlsWatcher {
  const settleMs = Math.min(1000, Math.max(20, Math.floor(intervalMs / 2)));
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let closed = false;
  let served = current;
  const run = (): void => {
    timer = undefined;
    running = running.then(async () => {
      if (closed) return;
      try {
        const next = await load();
        if (closed || equal(next, served)) return;
        apply(next);
        served = next;
      } catch (e) {
        if (!closed) onError(e instanceof Error ? e : new Error(String(e)));
      }
    });
  };
  const changed = (curr: Stats, prev: Stats): void => {
    // watchFile also reports reads (atime); only content, inode or a file appearing or vanishing matter.
    if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size && curr.ctimeMs === prev.ctimeMs) return;
    if (closed) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(run, settleMs);
    timer.unref();
  };
  // persistent: false, so a gateway that is otherwise done does not stay alive for its watcher.
  for (const f of files) watchFile(f, { interval: intervalMs, persistent: false }, changed);
  return {
    close: () => {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      for (const f of files) unwatchFile(f, changed);
    },
  };
}

export function readPemAsync(what: string, path: string): Promise<Buffer> {
  return readFile(path).catch((e: unknown) => Promise.reject(unreadable(what, path, e)));
}

export function same(a: unknown, b: unknown): boolean {
  return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
}
