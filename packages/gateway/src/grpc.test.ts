/**
 * gRPC through the edge gateway, on loopback with @grpc/grpc-js at both ends: the client speaks HTTP/2 over
 * TLS to the gateway, the gateway HTTP/2 over TLS (ALPN h2, upstreamTls.http2) to the gRPC server, and the
 * status carried in trailers comes back. Services are defined with raw Buffer codecs: no .proto needed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { PROTOCOL_METADATA } from '@plinth/core';
import type { Gateway } from './gateway.js';
import { certAuthority, clientCertificate, instance, route, selfSigned, staticGateway, type Ca, type CertPair, type ClientCertFiles } from './testkit.test.helpers.js';

const raw = (b: Buffer): Buffer => b;
const SAY = '/plinth.test.Echo/Say';
const FAIL = '/plinth.test.Echo/Fail';
const LIST = '/plinth.test.Echo/List';

const definition: grpc.ServiceDefinition = {
  Say: { path: SAY, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  Fail: { path: FAIL, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  List: { path: LIST, requestStream: false, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
};

/** A unary call; resolves at its status, whose metadata is the answer's trailers. */
function unary(client: grpc.Client, path: string, body: string, metadata = new grpc.Metadata()): Promise<{ value: string; trailers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let value: Buffer | undefined;
    const call = client.makeUnaryRequest(path, raw, raw, Buffer.from(body), metadata, { deadline: Date.now() + 5000 }, (err, v) => {
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

/** The echo service; each call is remembered in `seen` with the caller its metadata named. */
function echoServer(seen: { path: string; caller: string | undefined }[]): grpc.Server {
  const server = new grpc.Server();
  const remember = (call: grpc.ServerUnaryCall<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer>): void => {
    const md = call.metadata.getMap();
    seen.push({ path: call.getPath(), caller: typeof md['plinth-caller'] === 'string' ? md['plinth-caller'] : undefined });
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
    List: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      remember(call);
      for (let i = 1; i <= 3; i++) call.write(Buffer.from(`item-${i}`));
      call.end();
    },
  });
  return server;
}

describe('gRPC through the edge gateway (HTTP/2 both ways)', () => {
  let dir: string;
  let edgeCert: CertPair;
  let mesh: Ca;
  let serverCert: ClientCertFiles;
  let server: grpc.Server;
  let gw: Gateway;
  let client: grpc.Client;
  const seen: { path: string; caller: string | undefined }[] = [];
  let upstreamAddress = '';

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plinth-gw-grpc-'));
    [edgeCert, mesh] = await Promise.all([selfSigned(dir, 'edge'), certAuthority(dir, 'mesh')]);
    serverCert = await clientCertificate(dir, 'echo', mesh, { server: true, ips: ['127.0.0.1'] });
    server = echoServer(seen);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(serverCert.pem), private_key: Buffer.from(serverCert.keyPem) }]), (e, p) => (e ? reject(e) : resolve(p))),
    );
    upstreamAddress = `https://127.0.0.1:${port}`;
    const started = await staticGateway({ accessLog: false, tls: { cert: edgeCert.cert, key: edgeCert.key }, upstreamTls: { ca: mesh.cert, http2: true } });
    gw = started.gw;
    started.governance.set({ instances: [instance('echo-1', 'echo', upstreamAddress)] });
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

  it('passes on a gRPC error status and message', async () => {
    await assert.rejects(unary(client, FAIL, 'order 42'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && e.details === 'no order 42 here');
  });

  it('streams a server-streaming answer message by message to its OK status', async () => {
    assert.deepEqual(await serverStream(client, LIST, 'all'), ['item-1', 'item-2', 'item-3']);
  });

  it('answers calls to no route with an HTTP error a gRPC client reads as a failed call, and keeps serving', async () => {
    // gRPC's mapping of HTTP statuses: 404 is UNIMPLEMENTED.
    await assert.rejects(unary(client, '/plinth.test.Other/Nope', 'x'), (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED);
    assert.equal((await unary(client, SAY, 'again')).value, 'echo:again');
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
  const seen: { path: string; caller: string | undefined }[] = [];

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
});
