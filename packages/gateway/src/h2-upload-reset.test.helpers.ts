/**
 * A program, run by fuzz-h2-upstream.test.ts in a child process because the defect it checks for freezes the
 * process it happens in: a gateway proxies three POSTs to an h2c service that never reads ahead (no
 * WINDOW_UPDATE). The first spends nearly all of the connection's window and is answered; the second's upload
 * stalls on what is left, and the route's deadline resets it; on the third, the service opens the window and
 * goes away gracefully, in one write. Without the stream-close guard (sdk `h2-close-guard.ts`) node destroys
 * the second stream without resetting it, and the open window sends nghttp2 into an endless loop of empty
 * DATA frames: this program never prints. With it, it prints `{ statuses, idleCpuMs }` and exits 0.
 */
import { PROTOCOL_METADATA } from '@plinth/core';
import { END_HEADERS, END_STREAM, frame, type H2Answer, h2Service, HEADERS, hpackField, stopH2Service, windowThenGoaway } from './h2-frames.test.helpers.js';
import { call, instance, route, sleep, staticGateway } from './testkit.test.helpers.js';

const answers: ((stream: number) => H2Answer)[] = [
  (id) => [frame(HEADERS, END_HEADERS | END_STREAM, id, hpackField(':status', '200'))],
  () => 'silence',
  windowThenGoaway,
];
const up = await h2Service((id) => answers.shift()?.(id) ?? 'silence');
const { gw, governance, routes } = await staticGateway({});
governance.set({ instances: [instance('h2-1', 'h2up', up.address, { metadata: { [PROTOCOL_METADATA]: 'h2c' } })] });
routes.set([route('up', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/' } }, service: 'h2up', timeoutMs: 400 })]);

const statuses: number[] = [];
for (const size of [60_000, 20_000, 10_000]) {
  statuses.push(await call(`${gw.url}/upload`, { method: 'POST', body: Buffer.alloc(size, 'u') }).then((r) => r.status, () => 0));
}
// A session left spinning takes the CPU while nothing is asked of the gateway.
await sleep(200);
const before = process.cpuUsage();
await sleep(500);
const idle = process.cpuUsage(before);
process.stdout.write(`${JSON.stringify({ statuses, idleCpuMs: (idle.user + idle.system) / 1000 })}\n`);
await gw.close();
stopH2Service(up);
process.exit(0);
