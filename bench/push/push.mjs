// Push latency: N watchers, C changes spaced evenly, latency = receive time − time just before the write
// was issued, for every (watcher, change). The same driver runs against plinth (SSE) and etcd (gRPC Watch).
import http from 'node:http';
import { Pool } from 'undici';
import { cpuTimes, machineBusySeconds, memoryMiB, sleep, summarize } from './lib.mjs';

/** Every change's value carries `change-<i>`; warm-up writes carry `warmup-<k>` and are not measured. */
const CHANGE = /change-(\d+)/;

class Recorder {
  constructor(subscribers, changes) {
    this.changes = changes;
    this.sentAt = new Float64Array(changes).fill(NaN);
    this.receivedAt = new Float64Array(subscribers * changes).fill(NaN);
    this.duplicates = 0;
    this.delivered = 0;
  }

  /** Called from a subscriber's data callback with the text that holds the change's value. */
  got(subscriber, text, now) {
    const m = CHANGE.exec(text);
    if (!m) return;
    const slot = subscriber * this.changes + Number(m[1]);
    if (!Number.isNaN(this.receivedAt[slot])) this.duplicates++;
    else {
      this.receivedAt[slot] = now;
      this.delivered++;
    }
  }

  result() {
    const lat = [];
    let missed = 0;
    for (let slot = 0; slot < this.receivedAt.length; slot++) {
      const r = this.receivedAt[slot];
      if (Number.isNaN(r)) missed++;
      else lat.push(r - this.sentAt[slot % this.changes]);
    }
    return { ...summarize(lat), missed, duplicates: this.duplicates };
  }
}

/**
 * Drives one system: `subscribe(rec)` opens every watcher and resolves once all are caught up;
 * `write(value, i)` applies one change; `pid` is the server process, for its CPU and memory.
 * Writes run open-loop on a fixed schedule, so a slow answer never stretches the spacing.
 */
async function drive({ subscribers, changes, spacingMs, warmup, subscribe, write, pid }) {
  const rec = new Recorder(subscribers, changes);
  const idleMemory = memoryMiB(pid); // before any watcher: what the watchers themselves cost shows apart
  const t = performance.now();
  await subscribe(rec);
  const subscribeMs = performance.now() - t;

  // Warm-up writes (same for both systems) so the measured changes see steady state, not first-call JIT.
  for (let k = 0; k < warmup; k++) {
    await write(`warmup-${k}`, k);
    await sleep(spacingMs);
  }
  await sleep(500);

  const writes = [];
  const ackMs = [];
  let writeErrors = 0;
  const cpu0 = { server: cpuTimes(pid), self: process.cpuUsage(), machine: machineBusySeconds() };
  const t0 = performance.now();
  for (let i = 0; i < changes; i++) {
    const wait = t0 + i * spacingMs - performance.now();
    if (wait > 0) await sleep(wait);
    const sent = (rec.sentAt[i] = performance.now());
    writes.push(write(`change-${i}`, i).then(() => ackMs.push(performance.now() - sent), () => writeErrors++));
  }
  await Promise.all(writes);
  const total = subscribers * changes;
  for (const deadline = performance.now() + 5000; rec.delivered < total && performance.now() < deadline; ) await sleep(20);
  // CPU of both sides over the measured phase: a saturated receiver would inflate the latencies.
  const wallS = (performance.now() - t0) / 1000;
  const self = process.cpuUsage(cpu0.self);
  const server = cpuTimes(pid);
  const serverS = server.user + server.system - cpu0.server.user - cpu0.server.system;
  const selfS = (self.user + self.system) / 1e6;
  const cpu = {
    serverPct: (serverS / wallS) * 100,
    serverSysPct: ((server.system - cpu0.server.system) / wallS) * 100,
    receiverPct: (selfS / wallS) * 100,
    otherPct: Math.max(0, ((machineBusySeconds() - cpu0.machine - serverS - selfS) / wallS) * 100), // ±tick jitter
  };
  // Memory is read while every watcher is still connected.
  return { ...rec.result(), writeErrors, subscribeMs, write: summarize(ackMs), cpu, idleMemory, memory: memoryMiB(pid) };
}

// ---- plinth: SSE over one HTTP/1.1 connection per watcher ----
export async function plinthPush({ url, token }, opts) {
  const auth = { authorization: `Bearer ${token}` };
  const writer = new Pool(url, { connections: 4 });
  const streams = [];
  const put = async (name, content) => {
    const res = await writer.request({
      method: 'PUT',
      path: `/v1/resources/Config/bench/${name}`,
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ spec: { format: 'text', content: `${content}\n` } }),
    });
    const body = await res.body.text();
    if (res.statusCode !== 200 && res.statusCode !== 201) throw new Error(`PUT ${name}: ${res.statusCode} ${body}`);
  };

  const openOne = (idx, rec) =>
    new Promise((ok, fail) => {
      const req = http.get(
        `${url}/v1/watch?kinds=Config&namespace=bench`,
        { agent: false, headers: { ...auth, accept: 'text/event-stream' } },
        (res) => {
          if (res.statusCode !== 200) return fail(new Error(`watch: ${res.statusCode}`));
          res.setEncoding('utf8');
          let buf = '';
          res.on('data', (chunk) => {
            const now = performance.now();
            buf += chunk;
            // Minimal SSE framing: frames end with a blank line; only the event name and our marker matter.
            for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
              const frame = buf.slice(0, end);
              buf = buf.slice(end + 2);
              if (frame.includes('event: BOOKMARK')) ok();
              else rec.got(idx, frame, now);
            }
          });
          res.on('error', () => {});
        },
      );
      req.on('error', fail);
      streams.push(req);
    });

  try {
    // Ten Configs exist before anyone watches, so every measured change is a MODIFIED of a live resource.
    for (let n = 0; n < 10; n++) await put(`c${n}`, 'initial');
    return await drive({
      ...opts,
      // Connect in batches: a thousand simultaneous SYNs would overflow the listen backlog (511) and
      // measure TCP retransmits instead of the server.
      subscribe: async (rec) => {
        for (let i = 0; i < opts.subscribers; i += 100) {
          const batch = [];
          for (let j = i; j < Math.min(opts.subscribers, i + 100); j++) batch.push(openOne(j, rec));
          await Promise.all(batch);
        }
      },
      write: (value, i) => put(`c${i % 10}`, value),
    });
  } finally {
    for (const s of streams) s.destroy();
    await writer.destroy();
  }
}

// ---- etcd: native gRPC Watch, watchers multiplexed over a few client connections ----
export async function etcdPush({ endpoint, connections }, opts) {
  const { Etcd3 } = await import('etcd3');
  // One Etcd3 client = one HTTP/2 connection carrying one Watch stream for all its watchers. grpc-js
  // shares one connection among all channels to the same address unless each keeps a local pool.
  const own = { hosts: endpoint, grpcOptions: { 'grpc.use_local_subchannel_pool': 1 } };
  const clients = Array.from({ length: connections }, () => new Etcd3(own));
  const writer = new Etcd3(own);
  try {
    for (let n = 0; n < 10; n++) await writer.put(`bench/c${n}`).value('initial');
    return await drive({
      ...opts,
      subscribe: async (rec) => {
        const created = [];
        for (let idx = 0; idx < opts.subscribers; idx++) {
          const client = clients[idx % connections];
          created.push(
            client
              .watch()
              .prefix('bench/')
              .create()
              .then((w) => w.on('put', (kv) => rec.got(idx, kv.value.toString(), performance.now()))),
          );
        }
        // create() resolves once etcd confirmed the watch: from then on it sees every later revision.
        await Promise.all(created);
      },
      write: (value, i) => writer.put(`bench/c${i % 10}`).value(value),
    });
  } finally {
    for (const c of [...clients, writer]) c.close();
  }
}

// ---- etcd: the same watch through etcd's own HTTP/JSON gateway, one HTTP/1.1 connection per watcher ----
// Like for like with plinth's SSE: every subscriber is its own connection (as a fleet of service instances
// would be), and the receiver parses a text stream in both cases.
export async function etcdHttpPush({ endpoint }, opts) {
  const b64 = (s) => Buffer.from(s).toString('base64');
  const writer = new Pool(endpoint, { connections: 4 });
  const streams = [];
  const put = async (key, value) => {
    const res = await writer.request({ method: 'POST', path: '/v3/kv/put', body: JSON.stringify({ key: b64(key), value: b64(value) }) });
    const body = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`etcd put: ${res.statusCode} ${body}`);
  };
  const openOne = (idx, rec) =>
    new Promise((ok, fail) => {
      const req = http.request(`${endpoint}/v3/watch`, { method: 'POST', agent: false }, (res) => {
        if (res.statusCode !== 200) return fail(new Error(`etcd watch: ${res.statusCode}`));
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk) => {
          const now = performance.now();
          buf += chunk;
          for (let end = buf.indexOf('\n'); end >= 0; end = buf.indexOf('\n')) {
            const line = buf.slice(0, end);
            buf = buf.slice(end + 1);
            if (!line.trim()) continue;
            const result = JSON.parse(line).result ?? {};
            if (result.created) ok();
            for (const ev of result.events ?? []) rec.got(idx, Buffer.from(ev.kv?.value ?? '', 'base64').toString(), now);
          }
        });
        res.on('error', () => {});
      });
      req.on('error', fail);
      // The watch stays open: the request body is left unfinished on purpose, as etcd's gateway expects.
      req.write(JSON.stringify({ create_request: { key: b64('bench/'), range_end: b64('bench0') } }));
      streams.push(req);
    });
  try {
    for (let n = 0; n < 10; n++) await put(`bench/c${n}`, 'initial');
    return await drive({
      ...opts,
      subscribe: async (rec) => {
        for (let i = 0; i < opts.subscribers; i += 100) {
          const batch = [];
          for (let j = i; j < Math.min(opts.subscribers, i + 100); j++) batch.push(openOne(j, rec));
          await Promise.all(batch);
        }
      },
      write: (value, i) => put(`bench/c${i % 10}`, value),
    });
  } finally {
    for (const s of streams) s.destroy();
    await writer.destroy();
  }
}
