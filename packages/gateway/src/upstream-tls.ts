/**
 * TLS to upstreams: how the gateway (edge or sidecar egress) talks to instances registered with an
 * `https://` address. With a CA bundle the instances are verified against it instead of the system's roots;
 * with a certificate and key the gateway presents them (mutual TLS, as sidecars of one mesh do to each
 * other). Instances of a mesh register IP addresses that their certificates do not name, so the server's
 * identity can be checked by its SPIFFE ID instead of by hostname. The files are reloaded when they change:
 * new connections use the new ones, open ones keep theirs.
 */
import type { ConnectionOptions, PeerCertificate } from 'node:tls';
import { trustDomain } from '@plinth/core';
import { defaultPool, guardedConnector, type UpstreamProtocol } from '@plinth/sdk/client';
import { Pool, buildConnector, type Dispatcher } from 'undici';
import { spiffeIdOf } from './client-cert.js';
import { checkCaBundle, checkPair, readPem, readPemAsync, same, TlsConfigError, watchPemFiles, type TlsWatcher } from './tls.js';

export interface UpstreamTlsOptions {
  /** PEM bundle of the CAs upstream certificates are verified against. Default: the system's roots. */
  ca?: string;
  /** PEM certificate (chain) the gateway presents to upstreams that ask for one; with `key`. */
  cert?: string;
  /** PEM private key of `cert`. */
  key?: string;
  /**
   * How an upstream's certificate must name it. `hostname` (default): the address's host, as any HTTPS client
   * checks. `spiffe`: exactly one SPIFFE ID `spiffe://<trust-domain>/ns/<namespace>/sa/<name>`, in one of
   * `trustDomains` when given; the host is not checked (mesh instances register IPs their certificates omit).
   */
  serverIdentity?: 'hostname' | 'spiffe';
  /** With `serverIdentity: spiffe`: the trust domains accepted. Default: any. */
  trustDomains?: string[];
  /** Oldest TLS version offered. Default TLSv1.2. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /**
   * Offer HTTP/2 (ALPN `h2`) beside HTTP/1.1 to https:// upstreams, which then pick: gRPC services need it
   * (their answers end in trailers). One connection per upstream then carries many requests at once.
   * Default false.
   */
  http2?: boolean;
  /** How often the files are checked for a change. Default 5 s. */
  reloadIntervalMs?: number;
}

const SERVER_IDENTITIES = ['hostname', 'spiffe'] as const;

interface Material {
  ca: Buffer | undefined;
  cert: Buffer | undefined;
  key: Buffer | undefined;
}

type Connector = ReturnType<typeof buildConnector>;

/** node's tls.connect options, as undici's buildConnector passes them on. */
type ConnectorOptions = ConnectionOptions;

/**
 * The gateway's TLS client side. `dispatcher(origin, …)` makes the pool of one upstream; every pool connects
 * through `connect`, which reads the current material, so a reload reaches pools already made.
 */
export class UpstreamTls {
  private connector: Connector;
  private current!: Material;
  private watcher: TlsWatcher | undefined;

  private constructor(
    private readonly o: UpstreamTlsOptions,
    material: Material,
  ) {
    this.connector = this.build(material);
  }

  /** Reads and checks the files; a missing or unusable one is a TlsConfigError naming it. */
  static load(o: UpstreamTlsOptions): UpstreamTls {
    validate(o);
    return new UpstreamTls(o, {
      ca: o.ca === undefined ? undefined : readPem('upstream TLS CA bundle', o.ca),
      cert: o.cert === undefined ? undefined : readPem('upstream TLS certificate', o.cert),
      key: o.key === undefined ? undefined : readPem('upstream TLS key', o.key),
    }).checked();
  }

  /** What undici's Pool takes as `connect`: the current connector, whatever was reloaded since. */
  readonly connect = (opts: buildConnector.Options, cb: buildConnector.Callback): void => {
    this.connector(opts, cb);
  };

  /** The dispatcher of one upstream origin: TLS through `connect` for https, plain (HTTP/1.1 or h2c) otherwise. */
  dispatcher(origin: string, protocol: UpstreamProtocol, connections: number): Dispatcher {
    if (!origin.startsWith('https:')) return defaultPool(origin, protocol, connections);
    // Over HTTP/2 an upstream takes many streams on one connection; undici opens more only past its limit.
    return this.o.http2 === true ? new Pool(origin, { connections, allowH2: true, connect: this.connect }) : new Pool(origin, { connections, pipelining: 1, connect: this.connect });
  }

  /** node:https request options for a one-off connection (a WebSocket handshake). */
  requestOptions(): ConnectorOptions {
    return this.options(this.current);
  }

  /** Polls the files and swaps the material in when they change; `onError` hears of a change that cannot be used. */
  watch(onReload: () => void, onError: (e: Error) => void): void {
    const files = [this.o.ca, this.o.cert, this.o.key].filter((f): f is string => f !== undefined);
    if (files.length === 0 || this.watcher !== undefined) return;
    this.watcher = watchPemFiles(
      files,
      this.o.reloadIntervalMs ?? 5000,
      this.current,
      () => this.reload(),
      (a, b) => sameOrAbsent(a.ca, b.ca) && sameOrAbsent(a.cert, b.cert) && sameOrAbsent(a.key, b.key),
      (m) => {
        this.current = m;
        this.connector = this.build(m);
        onReload();
      },
      onError,
    );
  }

  close(): void {
    this.watcher?.close();
  }

  private checked(): this {
    this.check(this.current);
    return this;
  }

  /** The bundle must hold certificates, and the key belong to the certificate (messages name the file). */
  private check(m: Material): void {
    if (this.o.ca !== undefined && m.ca !== undefined) checkCaBundle(this.o.ca, m.ca, 'upstream TLS CA bundle');
    if (this.o.cert !== undefined && this.o.key !== undefined && m.cert !== undefined && m.key !== undefined) checkPair(this.o.cert, this.o.key, m.cert, m.key, 'upstream TLS');
  }

  private async reload(): Promise<Material> {
    const [ca, cert, key] = await Promise.all([
      this.o.ca === undefined ? undefined : readPemAsync('upstream TLS CA bundle', this.o.ca),
      this.o.cert === undefined ? undefined : readPemAsync('upstream TLS certificate', this.o.cert),
      this.o.key === undefined ? undefined : readPemAsync('upstream TLS key', this.o.key),
    ]);
    const m = { ca, cert, key };
    this.check(m);
    return m;
  }

  private build(m: Material): Connector {
    this.current = m;
    const base = buildConnector({ ...this.options(m), allowH2: this.o.http2 === true } as buildConnector.BuildOptions);
    // ALPN may pick h2: its sessions get the close guard (a protocol-breaking upstream must not crash the gateway).
    return this.o.http2 === true ? guardedConnector(base) : base;
  }

  private options(m: Material): ConnectorOptions {
    // ALPN is buildConnector's: http/1.1, and h2 with allowH2.
    const opts: ConnectorOptions = { minVersion: this.o.minVersion ?? 'TLSv1.2' };
    if (m.ca !== undefined) opts.ca = m.ca;
    if (m.cert !== undefined) opts.cert = m.cert;
    if (m.key !== undefined) opts.key = m.key;
    if (this.o.serverIdentity === 'spiffe') {
      const domains = this.o.trustDomains === undefined || this.o.trustDomains.length === 0 ? undefined : new Set(this.o.trustDomains);
      opts.checkServerIdentity = (_host, cert) => spiffeServerCheck(cert, domains);
    }
    return opts;
  }
}

/**
 * The SPIFFE check of an upstream's certificate (chain verification is OpenSSL's, before this): exactly one
 * SPIFFE ID of Plinth's form, in an accepted trust domain. An Error refuses the connection.
 */
export function spiffeServerCheck(cert: PeerCertificate, trustDomains: ReadonlySet<string> | undefined): Error | undefined {
  const id = spiffeIdOf(cert.subjectaltname, 'upstream');
  if (typeof id === 'string') return new Error(id);
  if (trustDomains !== undefined && !trustDomains.has(id.trustDomain)) return new Error(`the upstream certificate's trust domain ${id.trustDomain} is not accepted (${[...trustDomains].join(', ')})`);
  return undefined;
}

function validate(o: UpstreamTlsOptions): void {
  if ((o.cert === undefined) !== (o.key === undefined)) throw new TlsConfigError('upstream TLS: give both a certificate and its key, or neither');
  if (o.serverIdentity !== undefined && !(SERVER_IDENTITIES as readonly string[]).includes(o.serverIdentity)) {
    throw new TlsConfigError(`upstream TLS serverIdentity is 'hostname' or 'spiffe', not ${JSON.stringify(o.serverIdentity)}`);
  }
  if (o.trustDomains !== undefined && o.trustDomains.length > 0 && o.serverIdentity !== 'spiffe') {
    throw new TlsConfigError('upstream TLS trustDomains apply to serverIdentity spiffe only');
  }
  for (const d of o.trustDomains ?? []) {
    const r = trustDomain.safeParse(d);
    if (!r.success) throw new TlsConfigError(`upstream TLS trust domain ${JSON.stringify(d)}: ${r.error.issues[0]?.message ?? 'not a trust domain'}`);
  }
}

function sameOrAbsent(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined ? b === undefined : same(a, b);
}
