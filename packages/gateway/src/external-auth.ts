/**
 * Auth mode external: each request is put to an authorization service of the shop's own, the way Traefik's
 * ForwardAuth and nginx's auth_request put it (so oauth2-proxy, Authelia and Authentik work unchanged): a GET
 * to the route's `path`, the request described in X-Forwarded-Method, -Proto, -Host, -Uri and -For, with
 * the client headers the route names. 2xx lets the request through; any other answer but a 5xx is the
 * client's answer, as the service gave it.
 *
 * The check is a call through the gateway's engine like any other, so the service is discovered,
 * balanced, retried under its FaultTolerance rules and guarded by its breakers. When it cannot answer (down,
 * too slow for the route's `timeoutMs`, a 5xx, a breaker open) the request gets 503: a gateway that let
 * requests through whenever its authorization service failed would be open to whoever could overload it.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { RouteExternalAuth } from '@plinth/core';
import { isCallError, outboundCall, type EndpointPools, type OutboundEngine, type TryContext, type TryOutcome } from '@plinth/sdk/client';
import type { Expirable, TimerWheel } from '@plinth/sdk/resilience';
import { refuse, type AuthOutcome, type Identity } from './auth.js';
import { GatewayCodes } from './errors.js';
import { HEADER_SAFE, SUBJECT_SAFE } from './identity-headers.js';

/** A refusal's body beyond this is not passed on (the check counts as failed). */
const MAX_REFUSAL_BYTES = 64 * 1024;
const EMPTY = Buffer.alloc(0);

/** The route's external auth, its header names lower-cased once. */
export interface CompiledExternalAuth {
  readonly spec: RouteExternalAuth;
  readonly requestHeaders: readonly string[];
  readonly upstreamHeaders: readonly string[];
  readonly clientHeaders: readonly string[];
  readonly userHeader: string | undefined;
}

export function compileExternalAuth(spec: RouteExternalAuth): CompiledExternalAuth {
  const lower = (names: readonly string[]): string[] => [...new Set(names.map((n) => n.toLowerCase()))];
  return { spec, requestHeaders: lower(spec.requestHeaders), upstreamHeaders: lower(spec.upstreamHeaders), clientHeaders: lower(spec.clientHeaders), userHeader: spec.userHeader?.toLowerCase() };
}

/** The headers the gateway sends upstream for a route in place of any the client sent under those names. */
export function externalAuthNames(auth: CompiledExternalAuth | undefined): string[] {
  if (auth === undefined) return [];
  return auth.userHeader !== undefined ? [...auth.upstreamHeaders, auth.userHeader] : [...auth.upstreamHeaders];
}

/** The service's answer to one check. */
interface Verdict {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** What the check needs of the listener: the scheme the client used and its address, as the proxy judges them. */
export interface RequestFacts {
  schemeOf(req: IncomingMessage): 'http' | 'https';
  clientIp(req: IncomingMessage): string | undefined;
}

export class ExternalAuthorizer {
  constructor(
    private readonly engine: OutboundEngine,
    private readonly pools: EndpointPools,
    private readonly facts: RequestFacts,
    private readonly wheel: TimerWheel,
  ) {}

  async authorize(req: IncomingMessage, auth: CompiledExternalAuth): Promise<AuthOutcome> {
    const spec = auth.spec;
    const headers: Record<string, string> = {
      'x-forwarded-method': req.method ?? 'GET',
      'x-forwarded-proto': this.facts.schemeOf(req),
      'x-forwarded-host': typeof req.headers.host === 'string' ? req.headers.host : '',
      'x-forwarded-uri': req.url ?? '/',
      'x-forwarded-for': this.facts.clientIp(req) ?? '',
    };
    for (const name of auth.requestHeaders) {
      const v = req.headers[name];
      if (v !== undefined) headers[name] = Array.isArray(v) ? v.join(', ') : v;
    }
    let verdict: Verdict;
    try {
      const r = await this.engine.call(spec.service, outboundCall({ method: 'GET', path: spec.path, headers, timeoutMs: spec.timeoutMs }), (t) => this.check(t, spec.path, headers));
      if (r.kind === 'fallback') return unavailable(spec.service, 'its breaker is open');
      verdict = r.response;
    } catch (e) {
      return unavailable(spec.service, isCallError(e) ? e.message : String(e));
    }
    const status = verdict.status;
    if (status >= 500) return unavailable(spec.service, `it answered ${status}`);
    if (status < 200 || status >= 300) return { ok: false, status, code: status === 403 ? GatewayCodes.forbidden : GatewayCodes.unauthenticated, detail: `refused by ${spec.service}`, answer: refusalOf(verdict, auth.clientHeaders) };
    let pairs: string[] | undefined;
    for (const name of auth.upstreamHeaders) {
      if (name === auth.userHeader) continue;
      const v = textOf(verdict.headers[name]);
      if (v !== undefined && HEADER_SAFE.test(v)) (pairs ??= []).push(name, v);
    }
    let identity: Identity | undefined;
    if (auth.userHeader !== undefined) {
      const user = textOf(verdict.headers[auth.userHeader]);
      if (user === undefined || !SUBJECT_SAFE.test(user)) return unavailable(spec.service, `its answer names no user in ${auth.userHeader}`);
      identity = { subject: `User:${user}`, via: 'external', audiences: [], expiresAt: 0, userId: user, headers: [auth.userHeader, user] };
    }
    return { ok: true, identity, headers: pairs };
  }

  /** One try, cut at its deadline by the wheel: no timer is set per check. */
  private async check(t: TryContext, path: string, headers: Record<string, string>): Promise<TryOutcome<Verdict>> {
    const wheel = this.wheel;
    const deadline = new CheckDeadline();
    if (t.deadlineAt !== undefined) deadline.token = wheel.add(t.deadlineAt, deadline);
    try {
      const d = this.pools.get(t.service, t.endpoint.address, t.endpoint.metadata);
      const r = await d.request({ path, method: 'GET', headers, signal: deadline.controller.signal });
      const ok = r.statusCode >= 200 && r.statusCode < 300;
      let body = EMPTY;
      if (ok || r.statusCode >= 500) await r.body.dump();
      else {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of r.body as AsyncIterable<Buffer>) {
          size += c.length;
          if (size > MAX_REFUSAL_BYTES) {
            r.body.destroy();
            throw new Error(`a refusal of more than ${MAX_REFUSAL_BYTES} bytes`);
          }
          chunks.push(c);
        }
        body = Buffer.concat(chunks);
      }
      return { status: r.statusCode, retryAfter: textOf(r.headers['retry-after']), response: { status: r.statusCode, headers: r.headers, body }, error: undefined, timedOut: false };
    } catch (error) {
      return { status: 0, retryAfter: undefined, response: undefined, error, timedOut: deadline.controller.signal.aborted };
    } finally {
      if (deadline.token >= 0) wheel.remove(deadline.token, deadline);
    }
  }
}

const CHECK_TIMEOUT = Object.freeze(new Error('the authorization check timed out'));

/** A check's deadline on the gateway's timer wheel (undici's own timers are a second coarse). */
class CheckDeadline implements Expirable {
  readonly controller = new AbortController();
  token = -1;

  onExpire(): void {
    this.token = -1;
    this.controller.abort(CHECK_TIMEOUT);
  }
}

function unavailable(service: string, why: string): AuthOutcome {
  return refuse(`the authorization service ${service} could not decide: ${why}`, 503, GatewayCodes.authUnavailable);
}

/** The service's refusal for the client: its status and body, its content type and the headers the route passes. */
function refusalOf(v: Verdict, names: readonly string[]): { status: number; contentType: string; body: Buffer; headers: readonly string[] } {
  const headers: string[] = [];
  for (const name of names) {
    const value = v.headers[name];
    if (value === undefined) continue;
    for (const x of Array.isArray(value) ? value : [value]) if (HEADER_SAFE.test(x)) headers.push(name, x);
  }
  return { status: v.status, contentType: textOf(v.headers['content-type']) ?? 'text/plain; charset=utf-8', body: v.body, headers };
}

function textOf(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
