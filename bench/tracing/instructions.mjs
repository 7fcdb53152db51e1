// User-space instructions per request of each service variant on its main thread, counted by valgrind's
// callgrind (../push/callgrind.mjs says how and what it leaves out): the view of the tracing overhead that
// other work on a shared machine does not move. Losses computed from instructions are larger than from
// time, since the kernel's socket work, the same for every variant, is not counted. It is the third view of
// the same target, not a replacement for the timed one.
import { countUnderCallgrind } from '../push/callgrind.mjs';

export { callgrindAvailable } from '../push/callgrind.mjs';

const REQUEST = { method: 'GET', path: '/hello' };

/**
 * Instructions per request for each of `variants`, `parallel` at a time (one per core: callgrind runs a
 * process on one thread). Returns { variant: instructions per request }.
 */
export async function instructionCounts(script, variants, sinkUrl, o) {
  const out = {};
  const queue = [...variants];
  await Promise.all(
    Array.from({ length: Math.max(1, o.parallel) }, async () => {
      for (let v = queue.shift(); v !== undefined; v = queue.shift()) {
        const t0 = Date.now();
        const r = await countUnderCallgrind({ ...o, label: v, nodeArgs: [script, v, sinkUrl], request: REQUEST });
        out[v] = r.median;
        o.log?.(`    ${v.padEnd(8)} ${Math.round(r.median)} instructions/req (windows ${r.windows.map(Math.round).join(', ')}; ${Math.round((Date.now() - t0) / 1000)} s)`);
      }
    }),
  );
  return out;
}
