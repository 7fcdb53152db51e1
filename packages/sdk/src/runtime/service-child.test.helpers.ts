/**
 * A process that uses createService the way an application does, for the tests that need a real process:
 * SIGTERM (the runtime's own signal handling and exit code) and SIGKILL (a crash: no deregistration).
 * Reports on stdout, one JSON line per event; a request to /slow is held until "release" arrives on stdin.
 */
import { createService } from './service.js';

const env = process.env;
const out = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);

const service = createService({
  name: 'orders',
  version: '2.0.0',
  namespace: env.PLINTH_NS ?? 'retail',
  controlPlane: { url: env.PLINTH_URL ?? '', token: env.PLINTH_TOKEN ?? '' },
  leaseTtlSeconds: Number(env.PLINTH_TTL ?? 15),
  deregisterDelayMs: 100,
  backoff: { initialMs: 20, maxMs: 200 },
  logger: { warn: (m) => process.stderr.write(`child: ${m}\n`), debug: () => {} },
});

let release!: () => void;
const held = new Promise<void>((r) => (release = r));
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d: string) => {
  if (d.includes('release')) release();
});

for (const event of ['registered', 'draining', 'stopped'] as const) service.on(event, () => out({ event }));

const { port } = await service.listen((req, res) => {
  if (req.url === '/slow') {
    out({ event: 'in-flight' });
    void held.then(() => res.end('slow done'));
    return;
  }
  res.end('ok');
});
out({ event: 'listening', port, instanceId: service.instanceId });
