// Peer (b): fastify 5 + @fastify/http-proxy, plain pass-through to the upstream, logger off, with undici
// holding 64 connections (as the plinth gateway and nginx do). argv[2]: the upstream's URL.
// Prints {url, pid}; exits when its stdin closes.
import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';

const upstream = process.argv[2];
if (!upstream) throw new Error('usage: node fastify-child.mjs UPSTREAM_URL');
const app = Fastify({ logger: false });
await app.register(proxy, { upstream, undici: { connections: 64, pipelining: 1 } });
const address = await app.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(`${JSON.stringify({ url: address, pid: process.pid })}\n`);
process.stdin.on('end', () => app.close().finally(() => process.exit(0))).resume();
