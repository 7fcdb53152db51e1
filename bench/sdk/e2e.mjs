// Scenario 2: Plinth's client against a bare undici Pool, same upstream, same connections, same load. The Pool
// is driven two ways: `request()` (the API most callers use) and a bare `dispatch()` with a minimal buffering
// handler (the lower-level API Plinth's transport itself uses, so the least any client over undici can cost).
import { Pool } from 'undici';
import { bareDispatch } from './fake-dispatcher.mjs';
import { closedLoop } from './load.mjs';
import { plinthClient, SERVICE } from './plinth.mjs';

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Each side first gets `warmupMs` unmeasured; then `rounds` rounds of A/B/C, each side `durationMs` per round.
 * Other work on a shared machine comes in bursts that can halve one round, so a side's figure is the median
 * of its rounds and a ratio is the median of per-round ratios (neighbouring runs share the same background).
 */
export async function endToEnd({ address, connections, concurrency, durationMs, warmupMs, rounds }) {
  const sdk = plinthClient({ addresses: [address], connectionsPerEndpoint: connections });
  const pool = new Pool(address, { connections });
  const pool2 = new Pool(address, { connections });
  const dispatchOpts = { origin: address, method: 'GET', path: '/e2e', headers: null, body: null };
  const sides = {
    sdk: () => sdk.request(SERVICE, { method: 'GET', path: '/e2e' }),
    undici: async () => {
      const res = await pool.request({ method: 'GET', path: '/e2e' });
      const body = Buffer.from(await res.body.arrayBuffer());
      return { status: res.statusCode, body };
    },
    undici_dispatch: () => bareDispatch(pool2, dispatchOpts),
  };
  const names = Object.keys(sides);
  const runs = Object.fromEntries(names.map((n) => [n, []]));
  try {
    for (const side of names) await closedLoop(sides[side], { concurrency, durationMs: warmupMs });
    for (let r = 0; r < rounds; r++) {
      for (const side of names) runs[side].push(await closedLoop(sides[side], { concurrency, durationMs }));
    }
  } finally {
    await Promise.allSettled([sdk.close(), pool.close(), pool2.close()]);
  }
  const summary = (side) => ({
    rps: median(runs[side].map((x) => x.rps)),
    cpuUsPerCall: median(runs[side].map((x) => x.cpuUsPerCall)),
    failed: runs[side].reduce((a, x) => a + x.failed, 0),
  });
  const ratio = (a, b) => median(runs[a].map((x, i) => x.rps / runs[b][i].rps));
  return {
    sdk: summary('sdk'),
    undici: summary('undici'),
    undiciDispatch: summary('undici_dispatch'),
    sdkOverUndici: ratio('sdk', 'undici'),
    sdkOverDispatch: ratio('sdk', 'undici_dispatch'),
    runs,
  };
}
