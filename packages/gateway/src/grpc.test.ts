/**
 * gRPC through the edge gateway, on loopback with @grpc/grpc-js at both ends: the client speaks HTTP/2 over
 * TLS to the gateway, the gateway HTTP/2 over TLS (ALPN h2, upstreamTls.http2) to the gRPC server, and the
 * status carried in trailers comes back. Services are defined with raw Buffer codecs: no .proto needed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { constants as http2Constants, createServer as createHttp2Server, connect as http2Connect, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { Agent, request } from 'undici';
import { FaultToleranceSpec, PROTOCOL_METADATA } from '@plinth/core';
import { createTracing } from '@plinth/sdk/tracing';
import type { AppHealthOptions } from './app-health.js';
import { startGateway, type Gateway, type GatewayOptions } from './gateway.js';
import { call, certAuthority, clientCertificate, controlPlane, instance, resource, route, selfSigned, spanAttribute, spanCollector, staticGateway, until, upstream, type Ca, type CertPair, type ClientCertFiles, type TestControlPlane, type Upstream } from './testkit.test.helpers.js';

const raw = (b: Buffer): Buffer => b;
const SAY = '/plinth.test.Echo/Say';
const FAIL = '/plinth.test.Echo/Fail';
const CRASH = '/plinth.test.Echo/Crash';
const LIST = '/plinth.test.Echo/List';
const JOIN = '/plinth.test.Echo/Join';
const CHAT = '/plinth.test.Echo/Chat';
const SLOW = '/plinth.test.Echo/Slow';
const LIMITED = '/plinth.test.Echo/Limited';

const definition: grpc.ServiceDefinition = {
  Say: { path: SAY, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  Fail: { path: FAIL, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  Crash: { path: CRASH, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  Join: { path: JOIN, requestStream: true, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  List: { path: LIST, requestStream: false, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  Chat: { path: CHAT, requestStream: true, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  Slow: { path: SLOW, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
};

/** A unary call; resolves at its status, whose metadata is the answer's trailers. */
function unary(client: grpc.Client, path: string, body: string, metadata = new grpc.Metadata(), timeoutMs = 5000): Promise<{ value: string; trailers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let value: Buffer | undefined;
    const call = client.makeUnaryRequest(path, raw, raw, Buffer.from(body), metadata, { deadline: Date.now() + timeoutMs }, (err, v) => {
      if (err) reject(err);
      else value = v;
    });
    call.on('status', (s: grpc.StatusObject) => {
      if (s.code === grpc.status.OK) resolve({ value: value!.toString(), trailers: s.metadata });
    });
  });
}

/** A server-streaming call: its messages, once its status is OK. */
function serverStream(client: grpc.Client, path: string, body: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const got: string[] = [];
    const call = client.makeServerStreamRequest(path, raw, raw, Buffer.from(body), new grpc.Metadata(), { deadline: Date.now() + 5000 });
    call.on('data', (m: Buffer) => got.push(m.toString()));
    call.on('error', reject);
    call.on('status', (s: grpc.StatusObject) => (s.code === grpc.status.OK ? resolve(got) : reject(new Error(s.details))));
  });
}

/**
 * A bidirectional call in turns: each message is written only once the answer to the one before came, so
 * it completes only if both directions stream while the call is open. Resolves with the answers at OK.
 */
function chat(client: grpc.Client, messages: readonly string[], timeoutMs = 5000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const got: string[] = [];
    const call = client.makeBidiStreamRequest(CHAT, raw, raw, new grpc.Metadata(), { deadline: Date.now() + timeoutMs });
    const next = (): void => {
      if (got.length < messages.length) call.write(Buffer.from(messages[got.length]!));
      else call.end();
    };
    call.on('data', (m: Buffer) => {
      got.push(m.toString());
      next();
    });
    call.on('error', reject);
    call.on('status', (s: grpc.StatusObject) => (s.code === grpc.status.OK ? resolve(got) : reject(new Error(s.details))));
    next();
  });
}

/** One try a FlakyJoin server saw: the call it belonged to, and the body bytes it had read when it answered. */
interface FlakyTry {
  call: string;
  bytes: number;
}

/**
 * Join served by hand over cleartext HTTP/2, failing each call's first try: it answers 503 once
 * `x-answer-after` bytes of the body came (the engine may retry that), while the client may still be
 * sending; a later try of the same call (`x-call`) is read to its end and answered with the messages joined.
 */
function flakyJoin(tries: FlakyTry[]): Http2Server {
  const server = createHttp2Server();
  const calls = new Set<string>();
  server.on('stream', (stream, headers) => {
    const id = String(headers['x-call']);
    const first = headers['x-ok'] !== '1' && (!calls.has(id) || headers['x-always-fail'] === '1');
    calls.add(id);
    const after = Number(headers['x-answer-after']);
    // `x-fail-as: grpc`: the failure is a trailers-only UNAVAILABLE (HTTP 200), as an overloaded gRPC server answers.
    // `reset`: the stream is reset mid-upload (RST_STREAM INTERNAL_ERROR), as a crashing server's would be.
    // `late`: a message, then UNAVAILABLE in the trailers, as a server failing mid-stream answers.
    const fail = (): void => {
      const as = headers['x-fail-as'];
      if (as === 'grpc') stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'overloaded' }, { endStream: true });
      else if (as === 'late') {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '14', 'grpc-message': 'lost its backend' }));
        stream.end(Buffer.from([0, 0, 0, 0, 4, 112, 97, 114, 116]));
      }
      else if (as === 'reset') stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR);
      else stream.respond({ ':status': 503 }, { endStream: true });
    };
    const chunks: Buffer[] = [];
    let bytes = 0;
    let answered = false;
    stream.on('error', () => {});
    stream.on('data', (c: Buffer) => {
      chunks.push(c);
      bytes += c.length;
      if (first && !answered && bytes >= after) {
        answered = true;
        tries.push({ call: id, bytes });
        fail();
      }
    });
    stream.on('end', () => {
      if (answered) return;
      tries.push({ call: id, bytes });
      if (first) return fail();
      const body = Buffer.concat(chunks);
      const parts: string[] = [];
      for (let at = 0; at + 5 <= body.length; ) {
        const len = body.readUInt32BE(at + 1);
        parts.push(body.subarray(at + 5, at + 5 + len).toString());
        at += 5 + len;
      }
      const payload = Buffer.from(parts.join('+'));
      const frame = Buffer.alloc(5 + payload.length);
      frame.writeUInt32BE(payload.length, 1);
      payload.copy(frame, 5);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(frame);
    });
  });
  return server;
}

/** A client-streaming Join: `first` at once, the rest after `laterMs`, so they are still coming when a first try fails. */
function joinInParts(client: grpc.Client, md: grpc.Metadata, first: string, rest: readonly string[], laterMs: number, path = JOIN): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const call = client.makeClientStreamRequest(path, raw, raw, md, { deadline: Date.now() + 5000 }, (e, v) => (e ? reject(e) : resolve(v!.toString())));
    call.write(Buffer.from(first));
    setTimeout(() => {
      for (const part of rest) call.write(Buffer.from(part));
      call.end();
    }, laterMs);
  });
}

/** The echo service; each call is remembered in `seen` with the caller its metadata named. */
/** What the echo service saw of a call: its path, the caller its metadata named, the deadline it was given. */
interface Seen {
  path: string;
  caller: string | undefined;
  deadline: number;
  clientCert: string | undefined;
}

/** What the echo servers' grpc.health.v1 Health/Check answers (HealthCheckResponse.status; 1 SERVING, 2 NOT_SERVING). */
const health = { status: 1 };
const healthDefinition: grpc.ServiceDefinition = {
  Check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
};

function echoServer(seen: Seen[]): grpc.Server {
  const server = new grpc.Server();
  server.addService(healthDefinition, {
    Check: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from([0x08, health.status])),
  });
  const remember = (call: grpc.ServerUnaryCall<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer>): void => {
    const md = call.metadata.getMap();
    const d = call.getDeadline();
    const text = (k: string): string | undefined => (typeof md[k] === 'string' ? md[k] : undefined);
    seen.push({ path: call.getPath(), caller: text('plinth-caller'), deadline: d instanceof Date ? d.getTime() : Number(d), clientCert: text('x-forwarded-client-cert') });
  };
  server.addService(definition, {
    Say: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      remember(call);
      const trailer = new grpc.Metadata();
      trailer.set('x-echo-count', String(seen.length));
      cb(null, Buffer.from(`echo:${call.request.toString()}`), trailer);
    },
    Fail: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      remember(call);
      cb({ code: grpc.status.NOT_FOUND, details: `no ${call.request.toString()} here` });
    },
    Crash: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      remember(call);
      cb({ code: grpc.status.INTERNAL, details: 'the store is down' });
    },
    Slow: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      remember(call);
      setTimeout(() => cb(null, Buffer.from('late')), 1500).unref();
    },
    Join: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const parts: string[] = [];
      call.on('data', (m: Buffer) => parts.push(m.toString()));
      call.on('end', () => cb(null, Buffer.from(parts.join('+'))));
    },
    List: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      remember(call);
      for (let i = 1; i <= 3; i++) call.write(Buffer.from(`item-${i}`));
      call.end();
    },
    Chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (m: Buffer) => call.write(Buffer.from(`re:${m.toString()}`)));
      call.on('end', () => call.end());
    },
  });
  return server;
}

/** What a gRPC-Web client reads of an answer: HTTP status and headers, the messages, the trailer frame's fields. */
interface WebAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  messages: string[];
  trailers: Record<string, string> | undefined;
  bodyBytes: number;
}

/** A gRPC-Web call as a browser client makes it (HTTP/1.1, one framed message), its answer unframed. */
async function webCall(base: string, dispatcher: Agent, path: string, message: string, mode: 'binary' | 'text', headers: Record<string, string> = {}): Promise<WebAnswer> {
  const payload = Buffer.from(message);
  const frame = Buffer.alloc(5 + payload.length);
  frame.writeUInt32BE(payload.length, 1);
  payload.copy(frame, 5);
  const r = await request(`${base}${path}`, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': mode === 'text' ? 'application/grpc-web-text+proto' : 'application/grpc-web+proto', accept: mode === 'text' ? 'application/grpc-web-text' : 'application/grpc-web', 'x-grpc-web': '1', ...headers },
    body: mode === 'text' ? frame.toString('base64') : frame,
  });
  const raw = Buffer.from(await r.body.arrayBuffer());
  // Text answers may be several padded base64 runs one after the other.
  const bytes = mode === 'text' ? Buffer.concat((raw.toString('latin1').match(/[A-Za-z0-9+/]+=*/g) ?? []).map((run) => Buffer.from(run, 'base64'))) : raw;
  const messages: string[] = [];
  let trailers: Record<string, string> | undefined;
  for (let at = 0; at < bytes.length; ) {
    const flag = bytes[at]!;
    const len = bytes.readUInt32BE(at + 1);
    const data = bytes.subarray(at + 5, at + 5 + len);
    at += 5 + len;
    if ((flag & 0x80) === 0) messages.push(data.toString());
    else {
      assert.equal(at, bytes.length, 'the trailer frame is the last one');
      trailers = Object.fromEntries(data.toString('latin1').split('\r\n').filter((l) => l !== '').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
    }
  }
  return { status: r.statusCode, headers: r.headers, messages, trailers, bodyBytes: raw.length };
}

describe('gRPC through the edge gateway (HTTP/2 both ways)', () => {
  let dir: string;
  let edgeCert: CertPair;
  let mesh: Ca;
  let serverCert: ClientCertFiles;
  let server: grpc.Server;
  let gw: Gateway;
  let client: grpc.Client;
  const seen: Seen[] = [];
  let upstreamAddress = '';
  let log: Record<string, unknown>[] = [];
  /** The access-log line of the next request to `path` after `from` lines (lines are written asynchronously). */
  const lineFor = async (path: string, from: number): Promise<Record<string, unknown>> => {
    let found: Record<string, unknown> | undefined;
    await until(`an access-log line for ${path}`, () => (found = log.slice(from).find((l) => l.path === path)) !== undefined, 3000);
    return found!;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-grpc-'));
    [edgeCert, mesh] = await Promise.all([selfSigned(dir, 'edge'), certAuthority(dir, 'mesh')]);
    serverCert = await clientCertificate(dir, 'echo', mesh, { server: true, ips: ['127.0.0.1'] });
    server = echoServer(seen);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(serverCert.pem), private_key: Buffer.from(serverCert.keyPem) }]), (e, p) => (e ? reject(e) : resolve(p))),
    );
    upstreamAddress = `https://127.0.0.1:${port}`;
    const started = await staticGateway({ tls: { cert: edgeCert.cert, key: edgeCert.key }, upstreamTls: { ca: mesh.cert, http2: true } });
    gw = started.gw;
    log = started.log;
    started.governance.set({
      instances: [instance('echo-1', 'echo', upstreamAddress)],
      faultTolerance: [
        resource<any>('FaultTolerance', 'limits', { rules: [{ name: 'limited', targets: [{ service: 'echo', endpoints: [LIMITED] }], strategies: [{ type: 'rateLimit', threshold: 1, statDurationSec: 60 }] }] }),
      ],
    });
    started.routes.set([route('grpc', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Echo/' } }, service: 'echo' })]);
    client = new grpc.Client(new URL(gw.url).host, grpc.credentials.createSsl(Buffer.from(edgeCert.pem)), { 'grpc.ssl_target_name_override': 'localhost' });
  });

  after(async () => {
    client?.close();
    await gw?.close();
    if (server) await new Promise<void>((r) => server.tryShutdown(() => r()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('carries a unary call and its trailers, the caller named upstream', async () => {
    const r = await unary(client, SAY, 'hello');
    assert.equal(r.value, 'echo:hello');
    assert.equal(r.trailers.get('x-echo-count')[0], String(seen.length), 'a custom trailer came back');
    const last = seen.at(-1)!;
    assert.equal(last.path, SAY);
    assert.equal(last.caller, 'gateway');
  });

  it('passes on a gRPC error status and message, and logs the call with its gRPC status', async () => {
    const from = log.length;
    await assert.rejects(unary(client, FAIL, 'order 42'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && e.details === 'no order 42 here');
    const line = await lineFor(FAIL, from);
    assert.equal(line.status, 200);
    assert.equal(line.grpcStatus, grpc.status.NOT_FOUND);
    const metrics = (await call(`${gw.adminUrl}/metrics`)).text;
    assert.match(metrics, /^plinth_gateway_grpc_requests_total\{route="edge\/grpc",grpc_code="5"\} [1-9]/m);
    assert.match(metrics, /^plinth_gateway_grpc_requests_total\{route="edge\/grpc",grpc_code="0"\} [1-9]/m);
  });

  it('streams a server-streaming answer message by message to its OK status', async () => {
    assert.deepEqual(await serverStream(client, LIST, 'all'), ['item-1', 'item-2', 'item-3']);
  });

  it('carries client-streaming calls: the messages, then the one answer', async () => {
    const joined = await new Promise<string>((resolve, reject) => {
      const call = client.makeClientStreamRequest(JOIN, raw, raw, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, v) => (e ? reject(e) : resolve(v!.toString())));
      for (const part of ['a', 'b', 'c']) call.write(Buffer.from(part));
      call.end();
    });
    assert.equal(joined, 'a+b+c');
  });

  it('carries bidirectional calls: each answer reaches the client while its stream is still open', async () => {
    const started = Date.now();
    assert.deepEqual(await chat(client, ['one', 'two', 'three'], 3000), ['re:one', 're:two', 're:three']);
    assert.ok(Date.now() - started < 2000, 'done in turns, not at the deadline');
  });

  it('answers its own refusals as gRPC statuses: no route UNIMPLEMENTED, a rate limit RESOURCE_EXHAUSTED', async () => {
    await assert.rejects(unary(client, '/plinth.test.Other/Nope', 'x'), (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED && /^no route for POST /.test(e.details));
    // The first call is let through (the server has no such method); the second is over the limit.
    await assert.rejects(unary(client, LIMITED, 'x'), (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED && !/rate/.test(e.details));
    const from = log.length;
    await assert.rejects(unary(client, LIMITED, 'x'), (e: grpc.ServiceError) => e.code === grpc.status.RESOURCE_EXHAUSTED && e.details === 'rate_limited');
    const line = await lineFor(LIMITED, from);
    assert.deepEqual([line.status, line.grpcStatus, line.reason], [429, grpc.status.RESOURCE_EXHAUSTED, 'rate_limited'], 'logged as the refusal it stands for');
    assert.equal((await unary(client, SAY, 'again')).value, 'echo:again');
  });

  it('takes grpc-timeout as the deadline: the upstream gets what is left, and a late answer is DEADLINE_EXCEEDED', async () => {
    const before = Date.now();
    await unary(client, SAY, 'timed', new grpc.Metadata(), 3000);
    const told = seen.at(-1)!.deadline;
    assert.ok(told > before && told <= before + 3000 + 50, `the upstream's deadline ${told - before} ms after the call began`);
    // A raw HTTP/2 request, so that only the gateway enforces the 300 ms (grpc-js would give up by itself).
    const s = http2Connect(gw.url, { ca: edgeCert.pem, servername: 'localhost' });
    try {
      const started = Date.now();
      const trailers = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const st = s.request({ ':method': 'POST', ':path': SLOW, 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '300m' });
        st.on('trailers', (t) => resolve(t));
        st.on('error', reject);
        st.on('data', () => {});
        st.end(Buffer.from([0, 0, 0, 0, 0]));
      });
      const took = Date.now() - started;
      assert.equal(trailers['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED));
      assert.ok(took >= 250 && took < 1400, `answered after ${took} ms`);
    } finally {
      s.close();
    }
  });

  it("ends the hop's spans with the call's gRPC status: an error by OpenTelemetry's RPC rules, so RED figures and SLOs count it", async () => {
    const collector = await spanCollector();
    const tracing = createTracing({ service: 'edge', namespace: 'edge', sampleRatio: 1, useGlobalProvider: 'never', exporter: { url: collector.url, flushMs: 20 } });
    const { gw: traced, governance, routes } = await staticGateway({ accessLog: false, h2c: true, tracing, upstreamTls: { ca: mesh.cert, http2: true } });
    const insecure = new grpc.Client(new URL(traced.url).host, grpc.credentials.createInsecure());
    const SERVER = 2;
    const CLIENT = 3;
    try {
      governance.set({
        instances: [instance('echo-1', 'echo', upstreamAddress)],
        faultTolerance: [
          resource<any>('FaultTolerance', 'limits', { rules: [{ name: 'limited', targets: [{ service: 'echo', endpoints: [LIMITED] }], strategies: [{ type: 'rateLimit', threshold: 1, statDurationSec: 60 }] }] }),
        ],
      });
      routes.set([route('grpc', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Echo/' } }, service: 'echo' })]);
      let n = 0;
      /** One call in a trace of its own; the hop's server span and its try's client span (none when the gateway refused). */
      const traced1 = async (path: string, expectCode: number, tries = 1) => {
        const traceId = (++n).toString(16).padStart(32, 'c');
        const md = new grpc.Metadata();
        md.set('traceparent', `00-${traceId}-00f067aa0ba902b7-01`);
        const outcome = await unary(insecure, path, 'x', md).then(
          () => grpc.status.OK,
          (e: grpc.ServiceError) => e.code,
        );
        assert.equal(outcome, expectCode, `${path} ended with code ${outcome}`);
        const spans = (await collector.spansOf(tracing, traceId, 1 + tries)).map((c) => c.span);
        return { server: spans.find((s) => s.kind === SERVER)!, client: spans.find((s) => s.kind === CLIENT) };
      };
      const ERROR = 2;
      const ok = await traced1(SAY, grpc.status.OK);
      assert.equal(spanAttribute(ok.server, 'rpc.system'), 'grpc');
      assert.equal(spanAttribute(ok.server, 'rpc.grpc.status_code'), 0);
      assert.equal(spanAttribute(ok.client!, 'rpc.grpc.status_code'), 0);
      assert.notEqual(ok.server.status.code, ERROR);
      assert.notEqual(ok.client!.status.code, ERROR);

      // INTERNAL is the server's failure: an error on both spans, though HTTP said 200.
      const crash = await traced1(CRASH, grpc.status.INTERNAL);
      assert.equal(spanAttribute(crash.server, 'http.response.status_code'), 200);
      assert.equal(spanAttribute(crash.server, 'rpc.grpc.status_code'), grpc.status.INTERNAL);
      assert.equal(crash.server.status.code, ERROR);
      assert.equal(spanAttribute(crash.server, 'error.type'), String(grpc.status.INTERNAL));
      assert.equal(crash.client!.status.code, ERROR);

      // NOT_FOUND is the caller's doing, like a 404: an error for the calling side only.
      const missing = await traced1(FAIL, grpc.status.NOT_FOUND);
      assert.equal(spanAttribute(missing.server, 'rpc.grpc.status_code'), grpc.status.NOT_FOUND);
      assert.notEqual(missing.server.status.code, ERROR);
      assert.equal(missing.client!.status.code, ERROR);
      assert.equal(spanAttribute(missing.client!, 'error.type'), String(grpc.status.NOT_FOUND));

      // The gateway's own refusal (a rate limit, answered RESOURCE_EXHAUSTED): no try; the server span
      // keeps the 429 it stands for, and slowing down is the caller's part, so it is no server error.
      await traced1(LIMITED, grpc.status.UNIMPLEMENTED);
      const limited = await traced1(LIMITED, grpc.status.RESOURCE_EXHAUSTED, 0);
      assert.equal(limited.client, undefined);
      assert.equal(spanAttribute(limited.server, 'http.response.status_code'), 429);
      assert.equal(spanAttribute(limited.server, 'rpc.grpc.status_code'), grpc.status.RESOURCE_EXHAUSTED);
      assert.notEqual(limited.server.status.code, ERROR);
    } finally {
      insecure.close();
      await traced.close();
      await tracing.shutdown();
      await collector.close();
    }
  });

  it('translates gRPC-Web from browsers, binary and text: messages, the status in the trailer frame, trailers-only errors', async () => {
    const agent = new Agent({ connect: { ca: edgeCert.pem, servername: 'localhost' } });
    try {
      for (const mode of ['binary', 'text'] as const) {
        const type = mode === 'text' ? 'application/grpc-web-text+proto' : 'application/grpc-web+proto';
        const from = log.length;
        const ok = await webCall(gw.url, agent, SAY, `web-${mode}`, mode);
        assert.equal(ok.status, 200);
        assert.equal(ok.headers['content-type'], type);
        assert.deepEqual(ok.messages, [`echo:web-${mode}`]);
        assert.equal(ok.trailers?.['grpc-status'], '0');
        assert.equal(ok.trailers?.['x-echo-count'], String(seen.length), "the upstream's custom trailer is in the frame");
        assert.equal(ok.headers['trailer'], undefined);
        const last = seen.at(-1)!;
        assert.equal(last.path, SAY, 'the upstream got plain gRPC over HTTP/2');
        assert.equal((await lineFor(SAY, from)).grpcStatus, 0);

        const streamed = await webCall(gw.url, agent, LIST, 'all', mode);
        assert.deepEqual(streamed.messages, ['item-1', 'item-2', 'item-3']);
        assert.equal(streamed.trailers?.['grpc-status'], '0');

        // Past the 64 KiB a body is kept whole for: it streams in, and text mode still decodes it whole.
        const big = 'b'.repeat(100_000);
        const large = await webCall(gw.url, agent, SAY, big, mode);
        assert.deepEqual([large.messages.length, large.messages[0]?.length, large.trailers?.['grpc-status']], [1, big.length + 5, '0']);

        // grpc-js answers an error with no message as trailers-only: the status stays in the headers.
        const failed = await webCall(gw.url, agent, FAIL, 'order 7', mode);
        assert.equal(failed.status, 200);
        assert.equal(failed.headers['grpc-status'], String(grpc.status.NOT_FOUND));
        assert.equal(decodeURIComponent(String(failed.headers['grpc-message'])), 'no order 7 here');
        assert.deepEqual([failed.messages, failed.bodyBytes], [[], 0]);
      }
    } finally {
      await agent.close();
    }
  });

  it('survives gRPC-Web bodies that are not what they claim, answering each with a status', async () => {
    const agent = new Agent({ connect: { ca: edgeCert.pem, servername: 'localhost' } });
    try {
      const bad: [string, string | Buffer][] = [
        ['application/grpc-web-text+proto', '!!!not base64###'],
        ['application/grpc-web-text+proto', 'AAAA=AAA==A'],
        ['application/grpc-web+proto', Buffer.from([0, 0, 0, 1])],
        ['application/grpc-web+proto', Buffer.alloc(0)],
        ['application/grpc-web-textual', 'x'],
      ];
      for (const [type, body] of bad) {
        const r = await request(`${gw.url}${SAY}`, { method: 'POST', dispatcher: agent, headers: { 'content-type': type }, body });
        await r.body.dump();
        assert.ok(r.statusCode === 200 || r.statusCode >= 400, `${type} ${String(body)}: HTTP ${r.statusCode}`);
      }
      // Still serving.
      assert.deepEqual((await webCall(gw.url, agent, SAY, 'after', 'text')).messages, ['echo:after']);
    } finally {
      await agent.close();
    }
  });

  it("answers the gateway's own refusals to gRPC-Web clients as trailers-only statuses", async () => {
    const agent = new Agent({ connect: { ca: edgeCert.pem, servername: 'localhost' } });
    try {
      // The LIMITED endpoint's one call a minute went in an earlier test.
      const from = log.length;
      const limited = await webCall(gw.url, agent, LIMITED, 'x', 'binary');
      assert.equal(limited.status, 200);
      assert.equal(limited.headers['content-type'], 'application/grpc-web+proto');
      assert.equal(limited.headers['grpc-status'], String(grpc.status.RESOURCE_EXHAUSTED));
      assert.equal(limited.headers['grpc-message'], 'rate_limited');
      assert.equal(limited.bodyBytes, 0);
      const line = await lineFor(LIMITED, from);
      assert.deepEqual([line.status, line.grpcStatus], [429, grpc.status.RESOURCE_EXHAUSTED]);
      const unrouted = await webCall(gw.url, agent, '/plinth.test.Other/Nope', 'x', 'text');
      assert.equal(unrouted.headers['content-type'], 'application/grpc-web-text+proto');
      assert.equal(unrouted.headers['grpc-status'], String(grpc.status.UNIMPLEMENTED));
    } finally {
      await agent.close();
    }
  });

  it('passes gRPC-Web through untouched on a route that says so, to an upstream that speaks it', async () => {
    const native = await upstream('native-web', (req, res) => {
      if (req.url?.startsWith('/plinth.test.Down/')) {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end('maintenance');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/grpc-web+proto', 'grpc-status': '0' });
      res.end();
    });
    const { gw: plain, governance, routes } = await staticGateway({ accessLog: false });
    const agent = new Agent();
    try {
      governance.set({ instances: [instance('web-1', 'webnative', native.address)] });
      routes.set([
        route('web', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Web/' } }, service: 'webnative', grpcWeb: 'passthrough' }),
        route('down', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Down/' } }, service: 'webnative' }),
      ]);
      // Translated, but the upstream answered no gRPC at all: its HTTP answer is passed on as it came.
      const down = await webCall(plain.url, agent, '/plinth.test.Down/Say', 'x', 'binary').catch((e: Error) => e);
      assert.ok(!(down instanceof Error), String(down));
      assert.equal(down.status, 503);
      assert.equal(down.headers['content-type'], 'text/plain');
      assert.equal(native.seen.at(-1)!.headers['content-type'], 'application/grpc+proto', 'the request was translated');
      const r = await webCall(plain.url, agent, '/plinth.test.Web/Say', 'as is', 'text');
      assert.equal(r.headers['grpc-status'], '0');
      const got = native.seen.at(-1)!;
      assert.equal(got.headers['content-type'], 'application/grpc-web-text+proto');
      assert.equal(got.headers['x-grpc-web'], '1');
      assert.equal(got.body, Buffer.from([0, 0, 0, 0, 5, ...Buffer.from('as is')]).toString('base64'));
    } finally {
      await agent.close();
      await plain.close();
      await native.close();
    }
  });

  it('takes gRPC clients over cleartext HTTP/2 (h2c) as well', async () => {
    const { gw: plain, governance, routes } = await staticGateway({ accessLog: false, h2c: true, upstreamTls: { ca: mesh.cert, http2: true } });
    const insecure = new grpc.Client(new URL(plain.url).host, grpc.credentials.createInsecure());
    try {
      governance.set({ instances: [instance('echo-1', 'echo', upstreamAddress)] });
      routes.set([route('grpc', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Echo/' } }, service: 'echo' })]);
      assert.equal((await unary(insecure, SAY, 'plain')).value, 'echo:plain');
      await assert.rejects(unary(insecure, FAIL, 'thing'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && e.details === 'no thing here');
    } finally {
      insecure.close();
      await plain.close();
    }
  });
});

describe('gRPC to a cleartext HTTP/2 (h2c) upstream, by its instance metadata', () => {
  let server: grpc.Server;
  let gw: Gateway;
  let client: grpc.Client;
  const seen: Seen[] = [];

  before(async () => {
    server = echoServer(seen);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    const started = await staticGateway({ accessLog: false, h2c: true });
    gw = started.gw;
    started.governance.set({ instances: [instance('echo-1', 'echo', `127.0.0.1:${port}`, { metadata: { [PROTOCOL_METADATA]: 'h2c' } })] });
    started.routes.set([route('grpc', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Echo/' } }, service: 'echo' })]);
    client = new grpc.Client(new URL(gw.url).host, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await gw?.close();
    if (server) await new Promise<void>((r) => server.tryShutdown(() => r()));
  });

  it('carries unary calls, statuses and streams over prior-knowledge HTTP/2 to the instance', async () => {
    const r = await unary(client, SAY, 'plain');
    assert.equal(r.value, 'echo:plain');
    assert.equal(r.trailers.get('x-echo-count')[0], String(seen.length));
    assert.equal(seen.at(-1)!.caller, 'gateway');
    await assert.rejects(unary(client, FAIL, 'item'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && e.details === 'no item here');
    assert.deepEqual(await serverStream(client, LIST, 'all'), ['item-1', 'item-2', 'item-3']);
  });

  it('carries large messages both ways, and an upload over the route limit leaves the gateway serving', async () => {
    // 200 KB each way: the request streams upstream, the answer is larger than undici delivers before its
    // trailers when paused, so a paused gRPC answer would arrive cut with an OK status.
    const big = 'm'.repeat(200_000);
    assert.equal((await unary(client, SAY, big)).value.length, big.length + 5);
    // 3 MB against the route's 1 MiB: the client, still uploading, gets RESOURCE_EXHAUSTED in trailers (a
    // reset sent before them once lost the status, and the call ran to its deadline), and the gateway goes
    // on serving (aborting the upstream stream while the body was piped into it once spun node's HTTP/2
    // session at full CPU, with no further request served).
    await assert.rejects(unary(client, SAY, 'x'.repeat(3_000_000), new grpc.Metadata(), 5000), (e: grpc.ServiceError) => e.code === grpc.status.RESOURCE_EXHAUSTED && /larger than 1048576 bytes/.test(e.details));
    const after = new grpc.Client(new URL(gw.url).host, grpc.credentials.createInsecure());
    try {
      assert.equal((await unary(after, SAY, 'still here')).value, 'echo:still here');
    } finally {
      after.close();
    }
  });

  it('carries bidirectional calls to a cleartext HTTP/2 instance', async () => {
    assert.deepEqual(await chat(client, ['a', 'b']), ['re:a', 're:b']);
  });

  it('survives bidirectional calls cancelled by their clients at any point, leaving nothing in flight', async () => {
    const cancelled = Array.from({ length: 24 }, (_, i) =>
      new Promise<void>((resolve) => {
        const call = client.makeBidiStreamRequest(CHAT, raw, raw, new grpc.Metadata(), { deadline: Date.now() + 5000 });
        let answers = 0;
        const stopAfter = i % 4; // 0 to 3 answers, then cancel mid-stream
        call.on('data', () => {
          if (++answers >= stopAfter) call.cancel();
          else call.write(Buffer.from(`m${answers}`));
        });
        call.on('error', () => {});
        call.on('status', () => resolve());
        if (stopAfter === 0) setImmediate(() => call.cancel());
        call.write(Buffer.from('m0'));
      }),
    );
    await Promise.all(cancelled);
    await until('nothing in flight', async () => /^plinth_gateway_in_flight 0$/m.test((await call(`${gw.adminUrl}/metrics`)).text), 3000);
    assert.deepEqual(await chat(client, ['after']), ['re:after']);
  });
});

describe('gRPC retries through the gateway, the request still streaming', () => {
  let flaky: Http2Server;
  let gw: Gateway;
  let client: grpc.Client;
  const tries: FlakyTry[] = [];
  const metadata = (id: string, answerAfter: number, idempotent: boolean, extra: Record<string, string> = {}): grpc.Metadata => {
    const md = new grpc.Metadata();
    md.set('x-call', id);
    md.set('x-answer-after', String(answerAfter));
    if (idempotent) md.set('idempotency-key', `key-${id}`);
    for (const [k, v] of Object.entries(extra)) md.set(k, v);
    return md;
  };
  const triesOf = (id: string): number[] => tries.filter((t) => t.call === id).map((t) => t.bytes);

  before(async () => {
    flaky = flakyJoin(tries);
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    const port = (flaky.address() as AddressInfo).port;
    const started = await staticGateway({ accessLog: false, h2c: true });
    gw = started.gw;
    // A port nothing listens on: every try of a call to `gone` fails to connect.
    const closed = createHttp2Server();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const h2c = { metadata: { [PROTOCOL_METADATA]: 'h2c' } };
    started.governance.set({
      instances: [
        instance('join-1', 'join', `127.0.0.1:${port}`, h2c),
        instance('gone-1', 'gone', `127.0.0.1:${closedPort}`, h2c),
        instance('sick-1', 'sick', `127.0.0.1:${port}`, h2c),
        instance('late-1', 'late', `127.0.0.1:${port}`, h2c),
      ],
      faultTolerance: [
        resource('FaultTolerance', 'sick', FaultToleranceSpec.parse({ rules: [{ name: 'breaker', targets: [{ service: 'sick' }], strategies: [{ type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 2, recoveryTimeoutMs: 60_000 }] }] })),
        resource('FaultTolerance', 'late', FaultToleranceSpec.parse({ rules: [{ name: 'breaker', targets: [{ service: 'late' }], strategies: [{ type: 'circuitBreaker', strategy: 'consecutiveFailures', threshold: 2, recoveryTimeoutMs: 60_000 }] }] })),
      ],
    });
    started.routes.set([
      route('sick', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Sick/' } }, service: 'sick' }),
      route('late', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Late/' } }, service: 'late' }),
      route('join', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Echo/' } }, service: 'join', retries: { attempts: 3, on: [503] } }),
      route('gone', { auth: { mode: 'anonymous' }, match: { path: { prefix: '/plinth.test.Gone/' } }, service: 'gone', retries: { attempts: 3 } }),
    ]);
    client = new grpc.Client(new URL(gw.url).host, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await gw?.close();
    if (flaky) await new Promise<void>((r) => flaky.close(() => r()));
  });

  it('retries a call with an Idempotency-Key that failed while its client was still sending: the new try gets the body from its start, then the rest as it comes', async () => {
    assert.equal(await joinInParts(client, metadata('live', 1, true), 'a', ['b', 'c'], 150), 'a+b+c');
    const [first, second] = triesOf('live');
    assert.equal(triesOf('live').length, 2);
    assert.equal(first, 6, "the first try failed after the first message (5 bytes of gRPC's frame and 1)");
    assert.equal(second, 18, 'the retry got all three messages');
  });

  it('sends a call only once without an Idempotency-Key, and once its body passed the 64 KiB kept for retries', async () => {
    await assert.rejects(joinInParts(client, metadata('post', 1, false), 'a', ['b'], 50), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE);
    assert.equal(triesOf('post').length, 1, 'POST is not retried without a key');
    const big = 'x'.repeat(70 * 1024);
    await assert.rejects(joinInParts(client, metadata('big', big.length, true), big, ['y'], 100), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE);
    assert.deepEqual(triesOf('big').length, 1, 'a body no longer kept is not sent again');
    // A small body is kept, so the same call with a key is retried, and the retry is answered.
    assert.equal(await joinInParts(client, metadata('small', 5, true), 'p', ['q'], 50), 'p+q');
    assert.equal(triesOf('small').length, 2);
  });

  it('judges a trailers-only gRPC error by its HTTP equivalent: UNAVAILABLE is retried as a 503, and opens the breaker', async () => {
    assert.equal(await joinInParts(client, metadata('grpc-fail', 1, true, { 'x-fail-as': 'grpc' }), 'a', ['b'], 50), 'a+b', 'retried after UNAVAILABLE');
    assert.equal(triesOf('grpc-fail').length, 2);
    // Every call to `sick` fails with UNAVAILABLE (HTTP 200): two in a row open its breaker, and the third is
    // answered by the gateway without reaching it.
    const sickCall = (n: number) =>
      joinInParts(client, metadata(`sick-${n}`, 1, false, { 'x-fail-as': 'grpc', 'x-always-fail': '1' }), 'x', [], 10, '/plinth.test.Sick/Join').then(
        () => 'ok',
        (e: grpc.ServiceError) => `${e.code} ${e.details}`,
      );
    const reached = (): number => tries.filter((t) => t.call.startsWith('sick-')).length;
    for (const n of [1, 2]) assert.equal(await sickCall(n), `${grpc.status.UNAVAILABLE} overloaded`);
    assert.equal(reached(), 2);
    const third = await sickCall(3);
    assert.match(third, new RegExp(`^${grpc.status.UNAVAILABLE} .*circuit`), 'the gateway answers for the open breaker');
    assert.equal(reached(), 2, 'the third call never reached the upstream');
  });

  it('judges a call whose status comes in trailers after its messages by that status: failures mid-stream open the breaker, a good end does not', async () => {
    const lateCall = (n: number, ok: boolean) =>
      joinInParts(client, metadata(`late-${n}`, 1, false, ok ? { 'x-ok': '1' } : { 'x-fail-as': 'late', 'x-always-fail': '1' }), 'x', ['y'], 10, '/plinth.test.Late/Join').then(
        (v) => `ok ${v}`,
        (e: grpc.ServiceError) => `${e.code} ${e.details}`,
      );
    const reached = (): number => tries.filter((t) => t.call.startsWith('late-')).length;
    // The answers start well (HTTP 200, a message): only their trailers say UNAVAILABLE.
    assert.equal(await lateCall(1, false), `${grpc.status.UNAVAILABLE} lost its backend`);
    assert.equal(await lateCall(2, true), 'ok x+y', 'an OK in the trailers is a success, and breaks the run of failures');
    assert.equal(await lateCall(3, false), `${grpc.status.UNAVAILABLE} lost its backend`);
    assert.equal(reached(), 3, 'one failure in a row: the breaker is still closed');
    assert.equal(await lateCall(4, false), `${grpc.status.UNAVAILABLE} lost its backend`);
    const fifth = await lateCall(5, true);
    assert.match(fifth, new RegExp(`^${grpc.status.UNAVAILABLE} .*circuit`), 'two failures in a row, known only at their ends, opened the breaker');
    assert.equal(reached(), 4, 'the fifth call never reached the upstream');
    const scrape = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(scrape, /^plinth_gateway_grpc_requests_total\{route="edge\/late",grpc_code="14"\} 4$/m, 'the open breaker answers UNAVAILABLE too');
  });

  it('retries a call whose upstream stream was reset while the client was still sending, replaying the body', async () => {
    assert.equal(await joinInParts(client, metadata('reset', 1, true, { 'x-fail-as': 'reset' }), 'a', ['b', 'c'], 100), 'a+b+c');
    assert.deepEqual(triesOf('reset'), [6, 18], 'reset after the first message; the retry got them all');
    // The reset try's body was let go of cleanly: the gateway serves on at once.
    const started = Date.now();
    assert.equal(await joinInParts(client, metadata('after-reset', 1, true), 'x', ['y'], 10), 'x+y');
    assert.ok(Date.now() - started < 2000);
  });

  it('retries a streaming call an instance refused, to the end of its tries, and goes on serving', async () => {
    const refused = new Promise<string>((resolve, reject) => {
      const call = client.makeClientStreamRequest('/plinth.test.Gone/Join', raw, raw, metadata('gone', 1, true), { deadline: Date.now() + 5000 }, (e, v) => (e ? reject(e) : resolve(v!.toString())));
      call.write(Buffer.from('a'));
      setTimeout(() => call.end(Buffer.from('b')), 50);
    });
    await assert.rejects(refused, (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE && /failed after 3 tries: connect ECONNREFUSED/.test(e.details));
    assert.equal(await joinInParts(client, metadata('after', 1, true), 'x', ['y'], 20), 'x+y');
  });
});

/** A gRPC app behind the inventory sidecar and a plain app behind the orders sidecar, whose gRPC client calls through its egress. */
interface SidecarPair {
  server: grpc.Server;
  inventory: Gateway;
  orders: Gateway;
  ordersApp: Upstream;
  /** The orders app's gRPC client: it names the service as the authority and speaks cleartext HTTP/2 to its egress. */
  viaEgress: grpc.Client;
  close(): Promise<void>;
}

async function sidecarPair(cp: TestControlPlane, namespace: string, seen: Seen[], inventoryExtra: Partial<GatewayOptions>, ordersExtra: Partial<GatewayOptions>, instanceId?: string, appHealth?: AppHealthOptions): Promise<SidecarPair> {
  const server = echoServer(seen);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const common = { namespace, controlPlane: { url: cp.url, token: cp.token }, listen: '127.0.0.1:0', accessLog: false as const };
  const inventory = await startGateway({
    ...common,
    ...inventoryExtra,
    sidecar: { app: `http://127.0.0.1:${port}`, appProtocol: 'h2c', service: 'inventory', version: '3.1.0', deregisterDelayMs: 0, ...(instanceId !== undefined ? { instanceId } : {}), ...(appHealth !== undefined ? { appHealth } : {}) },
  });
  const ordersApp = await upstream('orders-app');
  const orders = await startGateway({ ...common, ...ordersExtra, sidecar: { app: ordersApp.url, service: 'orders', version: '1.0.0', egress: '127.0.0.1:0', deregisterDelayMs: 0 } });
  const viaEgress = new grpc.Client(new URL(orders.egressUrl!).host, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'inventory' });
  return {
    server,
    inventory,
    orders,
    ordersApp,
    viaEgress,
    async close() {
      viaEgress.close();
      await orders.close();
      await inventory.close();
      await ordersApp.close();
      await new Promise<void>((r) => server.tryShutdown(() => r()));
    },
  };
}

describe('gRPC between apps behind sidecars (real control plane)', () => {
  let cp: TestControlPlane;
  let pair: SidecarPair;
  const seen: Seen[] = [];

  before(async () => {
    cp = await controlPlane();
    pair = await sidecarPair(cp, 'grpc', seen, { adminListen: '127.0.0.1:0' }, {}, 'inventory-1', { check: { grpc: '' }, intervalMs: 50, unhealthyThreshold: 2 });
  });

  after(async () => {
    await pair?.close();
    await cp?.destroy();
  });

  it('registers the gRPC app with plinth.dev/protocol h2c; its ingress still answers HTTP/1.1 probes', async () => {
    let found: { spec: Record<string, unknown> } | undefined;
    await until('the inventory instance', async () => (found = (await cp.list('Instance', 'grpc')).items.find((i) => i.metadata.name === 'inventory-1')) !== undefined, 10_000);
    assert.deepEqual(found!.spec.metadata, { [PROTOCOL_METADATA]: 'h2c' });
    assert.equal(found!.spec.address, pair.inventory.url);
    await until('the ingress ready', async () => (await call(`${pair.inventory.url}/readyz`)).status === 200, 10_000);
  });

  it('carries calls from one app to the other through both sidecars, as the calling app\'s service', async () => {
    let r: { value: string } | undefined;
    // The orders sidecar learns of the inventory instance through its watch: the first calls may race it.
    await until('a call through both sidecars', async () => (r = await unary(pair.viaEgress, SAY, 'from-orders').catch(() => undefined)) !== undefined, 10_000);
    assert.equal(r!.value, 'echo:from-orders');
    assert.equal(seen.at(-1)!.caller, 'orders');
    await assert.rejects(unary(pair.viaEgress, FAIL, 'stock'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && e.details === 'no stock here');
    assert.deepEqual(await serverStream(pair.viaEgress, LIST, 'all'), ['item-1', 'item-2', 'item-3']);
    assert.deepEqual(await chat(pair.viaEgress, ['x', 'y']), ['re:x', 're:y'], 'a bidirectional call through the egress, the mesh and the ingress');
  });

  it("registers the app's gRPC health (grpc.health.v1): NOT_SERVING makes the instance critical and calls stop, SERVING brings it back", async () => {
    const healthOf = async () => ((await cp.list('Instance', 'grpc')).items.find((i) => i.metadata.name === 'inventory-1')?.spec as { health?: string } | undefined)?.health;
    await until('passing', async () => (await healthOf()) === 'passing', 10_000);
    health.status = 2;
    try {
      await until('critical after NOT_SERVING', async () => (await healthOf()) === 'critical', 10_000);
      const metrics = (await call(`${pair.inventory.adminUrl}/metrics`)).text;
      assert.match(metrics, /^plinth_gateway_app_healthy 0$/m);
      // The orders sidecar's engine no longer routes to it: UNAVAILABLE without a call reaching the app.
      await until('the egress stops routing', async () => (await unary(pair.viaEgress, SAY, 'x').then(() => -1, (e: grpc.ServiceError) => e.code)) === grpc.status.UNAVAILABLE, 10_000);
      const reached = seen.length;
      await assert.rejects(unary(pair.viaEgress, SAY, 'y'), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE);
      assert.equal(seen.length, reached, 'no call reached the critical app');
    } finally {
      health.status = 1;
    }
    await until('passing after SERVING', async () => (await healthOf()) === 'passing', 10_000);
    await until('called again', async () => (await unary(pair.viaEgress, SAY, 'back').catch(() => undefined))?.value === 'echo:back', 10_000);
  });

  it('drains and stops while a caller holds an HTTP/2 connection to the ingress', async () => {
    const direct = new grpc.Client(new URL(pair.inventory.url).host, grpc.credentials.createInsecure());
    try {
      assert.equal((await unary(direct, SAY, 'direct')).value, 'echo:direct');
      const t0 = Date.now();
      await pair.inventory.close();
      assert.ok(Date.now() - t0 < 5000, `closed in ${Date.now() - t0} ms`);
      assert.equal((await cp.list('Instance', 'grpc')).items.some((i) => i.metadata.name === 'inventory-1'), false, 'deregistered');
    } finally {
      direct.close();
    }
  });
});

describe('gRPC between sidecars over mutual TLS (real control plane)', () => {
  const ORDERS_ID = 'spiffe://mesh.example.com/ns/grpc-mtls/sa/orders';
  let dir: string;
  let cp: TestControlPlane;
  let pair: SidecarPair;
  const seen: Seen[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-grpc-mtls-'));
    const mesh = await certAuthority(dir, 'mesh');
    const [inventoryCert, ordersCert] = await Promise.all([
      clientCertificate(dir, 'inventory', mesh, { server: true, uris: ['spiffe://mesh.example.com/ns/grpc-mtls/sa/inventory'] }),
      clientCertificate(dir, 'orders', mesh, { server: true, uris: [ORDERS_ID] }),
    ]);
    cp = await controlPlane();
    pair = await sidecarPair(
      cp,
      'grpc-mtls',
      seen,
      { tls: { cert: inventoryCert.cert, key: inventoryCert.key, clientCa: mesh.cert, clientCert: 'require' } },
      { upstreamTls: { ca: mesh.cert, cert: ordersCert.cert, key: ordersCert.key, http2: true, serverIdentity: 'spiffe' } },
    );
  });

  after(async () => {
    await pair?.close();
    await cp?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('carries the call over HTTP/2 with TLS between the sidecars, the callee told the caller\'s verified certificate', async () => {
    assert.match(pair.inventory.url, /^https:/);
    let r: { value: string } | undefined;
    await until('a call through both sidecars', async () => (r = await unary(pair.viaEgress, SAY, 'secure').catch(() => undefined)) !== undefined, 10_000);
    assert.equal(r!.value, 'echo:secure');
    const last = seen.at(-1)!;
    assert.equal(last.caller, 'orders');
    assert.match(String(last.clientCert), new RegExp(`URI=${ORDERS_ID}$`));
    await assert.rejects(unary(pair.viaEgress, FAIL, 'key'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && e.details === 'no key here');
    assert.deepEqual(await serverStream(pair.viaEgress, LIST, 'all'), ['item-1', 'item-2', 'item-3']);
  });
});
