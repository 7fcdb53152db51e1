/**
 * WebSockets on a service's own listener (`listen(handler, { upgrade })`), against a REAL plinth server, with
 * the `ws` package on both ends.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { TestControlPlane, until } from '../testing/control-plane.js';
import { refused, serviceOn, untilAsync, readUntilClose } from './testkit.test.helpers.js';

test('a service takes WebSocket upgrades, refuses them while draining, and closes open ones when it stops', async (t) => {
  const cp = await TestControlPlane.start();
  t.after(() => cp.destroy());
  const svc = serviceOn(cp, { deregisterDelayMs: 300 });
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => ws.on('message', (d) => ws.send(`echo:${String(d)}`)));
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const { port } = await svc.listen(
    (req, res) => {
      if (req.url === '/slow') return void held.then(() => res.end('done'));
      res.end('ok');
    },
    { upgrade: (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)) },
  );
  await until(() => svc.ready, 'ready');

  const ws = new WebSocket(`ws://127.0.0.1:${port}/live`);
  await new Promise((r, j) => ws.once('open', r).once('error', j));
  const answer = new Promise<string>((r) => ws.once('message', (d) => r(String(d))));
  ws.send('hi');
  assert.equal(await answer, 'echo:hi');
  const wsClosed = new Promise<number>((r) => ws.once('close', (code) => r(code)));

  // An upgrade begun before the service stops accepting, completed after: refused, retryable elsewhere.
  const late = connect(port, '127.0.0.1');
  await new Promise((r) => late.once('connect', r));
  late.write('GET /live HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n');
  const slow = fetch(`http://127.0.0.1:${port}/slow`);
  await untilAsync(async () => svc.inFlight() === 1, 'the slow request arrived');
  const stopped = svc.shutdown('test');
  await untilAsync(() => refused(port), 'new connections refused');
  late.write('sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  const lateAnswer = await readUntilClose(late);
  assert.match(lateAnswer, /^HTTP\/1\.1 503 /);
  assert.equal(ws.readyState, WebSocket.OPEN, 'an open WebSocket is not a request: it stays up while requests drain');

  release();
  assert.equal((await slow).status, 200);
  await stopped;
  assert.equal(await wsClosed, 1006, 'closed under the client when the service stopped');
  wss.close();
});
