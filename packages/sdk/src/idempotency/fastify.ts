import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { Headers } from '@plinth/core';
import type { Execution, Idempotency } from './idempotency.js';
import { readStream, sendTooLarge } from './node-io.js';

/** The parts of fastify this plugin touches, so the SDK does not depend on fastify's types. */
export interface FastifyRequestLike {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface FastifyReplyLike {
  readonly statusCode: number;
  readonly raw: ServerResponse;
  code(status: number): unknown;
  header(name: string, value: unknown): unknown;
  send(payload?: unknown): unknown;
  getHeaders(): Record<string, string | string[] | number | undefined>;
  hijack(): unknown;
}

export interface FastifyInstanceLike {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- fastify's overloads type each hook by name
  addHook(name: string, hook: (...args: any[]) => unknown): unknown;
}

interface State {
  key: string;
  body: Buffer;
  execution?: Execution;
}

/**
 * A fastify plugin: a request with an `Idempotency-Key` reaches its handler once; replays get the stored response.
 * The raw body is buffered in `preParsing` (byte-exact fingerprint, then handed on to fastify's parsers as a new
 * stream), the key is claimed in `preHandler` (after validation, so a rejected request claims nothing, as
 * Stripe does), and the response is captured in `onSend`. Marked `skip-override` so its hooks apply to the
 * scope it is registered in without depending on fastify-plugin; register it before the routes it guards.
 */
export function fastifyIdempotency<Req extends FastifyRequestLike>(idem: Idempotency<Req>) {
  const states = new WeakMap<object, State>();

  const plugin = (instance: FastifyInstanceLike, _opts: unknown, done: (err?: Error) => void): void => {
    instance.addHook('preParsing', async (request: Req, reply: FastifyReplyLike, payload: Readable) => {
      const key = idem.keyOf(request.method, request.headers[Headers.idempotencyKey]);
      if (key === undefined) return payload;
      const body = await readStream(payload, idem.maxBodyBytes);
      if (body === undefined) {
        // Answering through reply here would let fastify go on parsing; hijacking stops the chain at once.
        reply.hijack();
        sendTooLarge(reply.raw, idem.maxBodyBytes);
        return payload;
      }
      states.set(request, { key, body });
      return Object.assign(Readable.from([body]), { receivedEncodedLength: body.length });
    });

    instance.addHook('preHandler', async (request: Req, reply: FastifyReplyLike) => {
      const key = idem.keyOf(request.method, request.headers[Headers.idempotencyKey]);
      if (key === undefined) return;
      // No preParsing state: fastify skipped parsing (no body), so the body is empty.
      const state = states.get(request) ?? { key, body: Buffer.alloc(0) };
      states.set(request, state);
      const d = await idem.begin(request, { method: request.method, target: request.url, key: state.key, body: state.body });
      if (d.kind === 'respond') {
        reply.code(d.response.status);
        for (const name in d.response.headers) reply.header(name, d.response.headers[name]);
        reply.send(d.response.body);
        return reply;
      }
      state.execution = d.execution;
      reply.raw.once('close', () => void d.execution.finish(undefined));
      return undefined;
    });

    instance.addHook('onSend', async (request: Req, reply: FastifyReplyLike, payload: unknown) => {
      const execution = states.get(request)?.execution;
      if (execution === undefined) return payload;
      let body: Buffer;
      let out = payload;
      if (payload === undefined || payload === null) body = Buffer.alloc(0);
      else if (typeof payload === 'string') body = Buffer.from(payload);
      else if (Buffer.isBuffer(payload)) body = payload;
      else if (payload instanceof Uint8Array) body = Buffer.from(payload);
      else if (payload instanceof Readable) out = body = Buffer.concat(await payload.toArray());
      else body = Buffer.from(String(payload));
      await execution.finish({ status: reply.statusCode, headers: reply.getHeaders(), body });
      return out;
    });

    done();
  };
  return Object.assign(plugin, { [Symbol.for('skip-override')]: true, [Symbol.for('fastify.display-name')]: 'plinth-idempotency' });
}
