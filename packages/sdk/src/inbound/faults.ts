import { FaultInjectionRule, faultInjectionExpired, type FaultInjectionSpec, type RequestMatch, type Resource } from '@plinth/core';
import { compileTarget, requestMatches, type CompiledTarget, type MatchRequest } from '../governance/match.js';
import { InboundCodes, problemRejection, type Rejection } from './rejection.js';

/** One FaultInjection rule for this service, compiled once per governance version. */
export interface CompiledFault {
  readonly name: string;
  readonly targets: readonly CompiledTarget[];
  /** Lanes the fault applies to ("base" = no lane); undefined = every lane. */
  readonly lanes: ReadonlySet<string> | undefined;
  readonly headers: RequestMatch | undefined;
  readonly delayMs: number;
  readonly delayPercent: number;
  /** Prebuilt answer for an abort: the same object serves every aborted request. */
  readonly abort: Rejection | undefined;
  readonly abortPercent: number;
  /** Epoch ms when the experiment ends (Infinity: never): it can expire between two snapshots. */
  readonly expiresAt: number;
}

/** The fault rules of every unexpired FaultInjection resource that target `service`. */
export function compileFaults(resources: readonly Resource<FaultInjectionSpec>[], service: string, nowMs: number): CompiledFault[] {
  const out: CompiledFault[] = [];
  for (const res of resources) {
    const spec = res.spec;
    if (spec === undefined || !Array.isArray(spec.rules)) continue;
    if (faultInjectionExpired(spec, nowMs)) continue;
    const expiresAt = spec.expiresAt === undefined ? Infinity : Date.parse(spec.expiresAt);
    for (const raw of spec.rules) {
      // Parse rather than trust: a hand-built or older resource may lack defaults (percentage) or be invalid.
      const parsed = FaultInjectionRule.safeParse(raw);
      if (!parsed.success) continue;
      const r = parsed.data;
      const targets = r.targets.filter((t) => t.service === service).map(compileTarget);
      if (targets.length === 0) continue;
      const abort =
        r.abort === undefined
          ? undefined
          : r.abort.body !== undefined
            ? { ok: false as const, status: r.abort.statusCode, headers: {}, body: r.abort.body, contentType: 'text/plain; charset=utf-8', code: InboundCodes.faultInjected }
            : problemRejection(InboundCodes.faultInjected, r.abort.statusCode, `fault injected by ${res.metadata.name}/${r.name}`);
      out.push({
        name: `${res.metadata.namespace}/${res.metadata.name}/${r.name}`,
        targets,
        lanes: r.match?.lanes === undefined ? undefined : new Set(r.match.lanes),
        headers: r.match?.headers === undefined ? undefined : { headers: r.match.headers },
        delayMs: r.delay?.fixedDelayMs ?? 0,
        delayPercent: r.delay?.percentage ?? 0,
        abort,
        abortPercent: r.abort?.percentage ?? 0,
        expiresAt: Number.isNaN(expiresAt) ? Infinity : expiresAt,
      });
    }
  }
  return out;
}

/** Whether the fault's targets and conditions select this request. */
export function faultMatches(f: CompiledFault, req: MatchRequest, caller: string | undefined, lane: string | undefined): boolean {
  let hit = false;
  for (const t of f.targets)
    if (t.matches(req.method, req.path, caller)) {
      hit = true;
      break;
    }
  if (!hit) return false;
  if (f.lanes !== undefined && !f.lanes.has(lane ?? 'base')) return false;
  return f.headers === undefined || requestMatches(f.headers, req);
}

/** A percentage draw: 100 always, 0 never (without spending the random number). */
export function chance(percent: number, random: () => number): boolean {
  if (percent >= 100) return true;
  if (percent <= 0) return false;
  return random() * 100 < percent;
}
