import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { Idempotency, type IdempotencyOptions } from './idempotency.js';
import { MemoryIdempotencyStore } from './memory-store.js';

export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The routes every binding's test app serves, with counters the tests read. */
export class Routes {
  orders = 0;
  failures = 0;
  lists = 0;
  /** While set, POST /orders holds its answer until it resolves. */
  gate: Promise<void> | undefined;

  /** POST /orders: a non-idempotent write. */
  async order(body: string): Promise<Answer> {
    const n = ++this.orders;
    await this.gate;
    return { status: 201, headers: { 'content-type': 'application/json', 'x-order': String(n) }, body: JSON.stringify({ id: n, got: body }) };
  }

  /** POST /fail: the upstream is down. */
  fail(): Answer {
    this.failures++;
    return { status: 503, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ attempt: this.failures }) };
  }

  crashes = 0;

  /** POST /throw: the handler fails with an exception. */
  crash(): never {
    this.crashes++;
    throw new Error('handler bug');
  }

  /** GET /orders. */
  list(): Answer {
    this.lists++;
    return { status: 200, headers: { 'content-type': 'text/plain' }, body: `list ${this.lists}` };
  }
}

export type StartApp = (idem: Idempotency<unknown>, routes: Routes) => Promise<Server>;

async function call(base: string, method: string, path: string, key: string | undefined, body?: string): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (key !== undefined) headers['idempotency-key'] = key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, { method, headers, ...(body === undefined ? {} : { body }) });
  return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() };
}

const code = (a: Answer) => (JSON.parse(a.body) as { code: string }).code;

/** The same HTTP behaviour, over loopback, for every binding. */
export function httpBindingSuite(name: string, start: StartApp): void {
  describe(`${name} binding`, () => {
    async function app(options: Omit<IdempotencyOptions, 'store'> = {}) {
      const routes = new Routes();
      const idem = new Idempotency({ store: new MemoryIdempotencyStore(), logger: { warn: () => {}, debug: () => {} }, ...options });
      const server = await start(idem, routes);
      let arrivals = 0;
      server.on('request', () => arrivals++);
      const { port } = server.address() as AddressInfo;
      const base = `http://127.0.0.1:${port}`;
      return {
        routes,
        arrivals: () => arrivals,
        post: (path: string, key: string | undefined, body = '{"item":"tea"}') => call(base, 'POST', path, key, body),
        get: (path: string, key?: string) => call(base, 'GET', path, key),
        close: () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections();
            server.close(() => resolve());
          }),
      };
    }

    it('runs the handler once across sequential retries and replays the first answer', async () => {
      const a = await app();
      try {
        const first = await a.post('/orders', 'order-1');
        assert.equal(first.status, 201);
        assert.equal(first.headers['idempotent-replayed'], undefined);
        for (let i = 0; i < 3; i++) {
          const again = await a.post('/orders', '"order-1"');
          assert.equal(again.status, 201);
          assert.equal(again.body, first.body);
          assert.equal(again.headers['x-order'], '1');
          assert.match(again.headers['content-type'] ?? '', /^application\/json/);
          assert.equal(again.headers['idempotent-replayed'], 'true');
        }
        assert.equal(a.routes.orders, 1);
      } finally {
        await a.close();
      }
    });

    it('runs the handler once for 20 concurrent duplicates, which all get its answer', async () => {
      const a = await app();
      try {
        let open!: () => void;
        a.routes.gate = new Promise((r) => (open = r));
        const all = Promise.all(Array.from({ length: 20 }, () => a.post('/orders', 'order-2')));
        while (a.arrivals() < 20) await new Promise((r) => setTimeout(r, 5));
        open();
        const answers = await all;
        assert.equal(a.routes.orders, 1);
        for (const x of answers) {
          assert.equal(x.status, 201);
          assert.equal(x.body, answers[0]!.body);
        }
        assert.equal(answers.filter((x) => x.headers['idempotent-replayed'] === 'true').length, 19);
      } finally {
        await a.close();
      }
    });

    it("answers concurrent duplicates with 409 in 'reject' mode", async () => {
      const a = await app({ concurrent: 'reject' });
      try {
        let open!: () => void;
        a.routes.gate = new Promise((r) => (open = r));
        const pending = Array.from({ length: 20 }, () => a.post('/orders', 'order-3'));
        const settled: Answer[] = [];
        for (const p of pending) void p.then((x) => settled.push(x));
        while (settled.length < 19) await new Promise((r) => setTimeout(r, 5));
        open();
        const answers = await Promise.all(pending);
        assert.equal(a.routes.orders, 1);
        const conflicts = answers.filter((x) => x.status === 409);
        assert.equal(conflicts.length, 19);
        assert.equal(answers.filter((x) => x.status === 201).length, 1);
        for (const c of conflicts) {
          assert.equal(c.headers['content-type'], 'application/problem+json');
          assert.equal(code(c), 'idempotency_key_in_use');
        }
      } finally {
        await a.close();
      }
    });

    it('answers 422 when the key comes back with a different body', async () => {
      const a = await app();
      try {
        assert.equal((await a.post('/orders', 'order-4')).status, 201);
        const other = await a.post('/orders', 'order-4', '{"item":"coffee"}');
        assert.equal(other.status, 422);
        assert.equal(other.headers['content-type'], 'application/problem+json');
        assert.equal(code(other), 'idempotency_key_reused');
        assert.equal(a.routes.orders, 1);
      } finally {
        await a.close();
      }
    });

    it('does not store a 5xx: the retry runs the handler again', async () => {
      const a = await app();
      try {
        const first = await a.post('/fail', 'order-5');
        const second = await a.post('/fail', 'order-5');
        assert.equal(first.status, 503);
        assert.equal(second.status, 503);
        assert.equal(second.headers['idempotent-replayed'], undefined);
        assert.equal(a.routes.failures, 2);
      } finally {
        await a.close();
      }
    });

    it('releases the key when the handler throws: the retry runs it again', async () => {
      const a = await app();
      try {
        const first = await a.post('/throw', 'order-7');
        const second = await a.post('/throw', 'order-7');
        assert.equal(first.status, 500);
        assert.equal(second.status, 500);
        assert.equal(a.routes.crashes, 2);
      } finally {
        await a.close();
      }
    });

    it('answers 400 problem+json for a bad key without running the handler', async () => {
      const a = await app();
      try {
        for (const bad of ['k'.repeat(256), '""']) {
          const r = await a.post('/orders', bad);
          assert.equal(r.status, 400);
          assert.equal(r.headers['content-type'], 'application/problem+json');
          assert.equal(code(r), 'idempotency_key_invalid');
        }
        assert.equal(a.routes.orders, 0);
      } finally {
        await a.close();
      }
    });

    it('answers 413 for a body above the limit without running the handler', async () => {
      const a = await app({ maxBodyBytes: 1024 });
      try {
        const r = await a.post('/orders', 'order-6', JSON.stringify({ pad: 'x'.repeat(2048) }));
        assert.equal(r.status, 413);
        assert.equal(code(r), 'payload_too_large');
        assert.equal(a.routes.orders, 0);
      } finally {
        await a.close();
      }
    });

    it('passes a GET, and a POST without a key, through untouched', async () => {
      const a = await app();
      try {
        const one = await a.get('/orders', 'list-1');
        const two = await a.get('/orders', 'list-1');
        assert.deepEqual([one.body, two.body], ['list 1', 'list 2']);
        assert.equal(two.headers['idempotent-replayed'], undefined);
        await a.post('/orders', undefined);
        const again = await a.post('/orders', undefined);
        assert.equal(again.status, 201);
        assert.equal(a.routes.orders, 2);
        assert.match(again.body, /tea/);
      } finally {
        await a.close();
      }
    });
  });
}
