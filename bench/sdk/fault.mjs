// Scenario 3: three upstream instances, closed-loop idempotent GETs through Plinth's client, one instance
// SIGKILLed mid-run. Which instance each try went to is read from undici's own diagnostics channel
// (`undici:request:create`, published for every request a connection pool takes on), so the client is
// measured as it ships, with no tap of ours inside it.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import { closedLoop } from './load.mjs';
import { plinthClient, SERVICE } from './plinth.mjs';

/** A pause longer than this between two tries to the dead instance ends the first burst of them. */
export const BURST_GAP_MS = 1000;

export async function killOne({ upstreams, concurrency, warmupMs, beforeMs, afterMs }) {
  const addresses = upstreams.map((u) => u.address);
  const victim = upstreams[1];
  const tries = new Map(addresses.map((a) => [a, 0]));
  const deadTries = []; // performance.now() of each try routed to the victim after the kill
  let killedAt = Infinity;
  const onCreate = ({ request }) => {
    tries.set(request.origin, (tries.get(request.origin) ?? 0) + 1);
    if (request.origin === victim.address && performance.now() >= killedAt) deadTries.push(performance.now());
  };
  subscribe('undici:request:create', onCreate);

  const client = plinthClient({ addresses });
  const call = () => client.request(SERVICE, { method: 'GET', path: '/fault' });
  // Unmeasured: connections open and the JIT settles before the measured run starts.
  await closedLoop(call, { concurrency, durationMs: warmupMs });
  for (const a of addresses) tries.set(a, 0);
  let afterCalls = 0;
  let afterErrors = 0;
  let retried = 0;
  let fallbacks = 0;
  const errorOffsets = [];
  const onResult = (_started, r, e) => {
    const now = performance.now();
    if (r !== undefined) {
      if (r.attempts > 1) retried++;
      if (r.fallback) fallbacks++;
    }
    if (now < killedAt) return;
    afterCalls++;
    if (e !== undefined) {
      afterErrors++;
      if (errorOffsets.length < 50) errorOffsets.push(now - killedAt);
    }
  };
  const timer = setTimeout(() => {
    killedAt = performance.now();
    victim.child.kill('SIGKILL');
  }, beforeMs);
  let load;
  try {
    load = await closedLoop(call, {
      concurrency,
      durationMs: beforeMs + afterMs,
      onResult,
    });
  } finally {
    clearTimeout(timer);
    unsubscribe('undici:request:create', onCreate);
    await client.close();
  }

  const offsets = deadTries.map((t) => t - killedAt);
  let burstEnd = 0;
  for (let i = 0; i < offsets.length && (i === 0 || offsets[i] - offsets[i - 1] <= BURST_GAP_MS); i++) burstEnd = i + 1;
  return {
    load,
    afterCalls,
    afterErrors,
    errorOffsetsMs: errorOffsets,
    retried,
    fallbacks,
    triesPerInstance: Object.fromEntries([...tries].map(([a, n]) => [a === victim.address ? `${a} (killed)` : a, n])),
    deadTriesAfterKill: offsets.length,
    // The end of the first burst of tries to the dead instance: by then the client has stopped sending it
    // regular traffic. Later tries (a half-open breaker's probes) are reported on their own.
    ejectionMs: burstEnd === 0 ? 0 : offsets[burstEnd - 1],
    lastDeadTryMs: offsets.length === 0 ? 0 : offsets[offsets.length - 1],
    burstTries: burstEnd,
    laterTryOffsetsMs: offsets.slice(burstEnd, burstEnd + 20),
    laterTries: offsets.length - burstEnd,
  };
}
