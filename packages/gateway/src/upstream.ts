import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { httpStatusOfGrpc } from '@plinth/core';
import type { LateHealth, TryOutcome } from '@plinth/sdk/client';
import type { Expirable, TimerWheel } from '@plinth/sdk/resilience';
import type { ClientSpanHandle } from '@plinth/sdk/tracing';
import type { Dispatcher } from 'undici';
import type { Transform } from 'node:stream';
import type { BodyReader } from './body.js';
import { compressedHead, compressor, decide, type CompiledCompression } from './compression.js';
import { noSuchStatus } from './errors.js';
import { grpcCodeOf } from './grpc-status.js';
import type { GrpcWebAnswer } from './grpc-web.js';
import { isHttp2Response } from './http2.js';
import type { HeaderEdit } from './routes.js';

/** Raised into undici by the wheel when a try runs out of time; recognised by identity. */
export const TRY_TIMEOUT = Object.freeze(new Error('upstream try timed out'));

/** A streaming answer on which no byte passed, either way, for the route's streamIdleTimeoutMs. */
const STREAM_IDLE = Object.freeze(new Error('stream idle: no byte either way within the route\'s streamIdleTimeoutMs'));
/** The engine chose another try (or the client left): this one's answer is not wanted. */
const DISCARDED = Object.freeze(new Error('upstream answer discarded'));

/** UpstreamTry.verdict: no verdict owed (judged at the head), one owed, or the answer ended with nothing learnt. */
const SETTLED = -3;
const PENDING = -2;
const RELEASED = -1;

/** Response headers that belong to one connection, never forwarded (RFC 9110 §7.6.1). */
const RESPONSE_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** What a gRPC status is made of (the gRPC over HTTP/2 protocol's Status, Status-Message and details). */
const GRPC_STATUS = new Set(['grpc-status', 'grpc-message', 'grpc-status-details-bin']);

/** Names listed in a Connection header are hop-by-hop too. */
export function connectionTokens(v: string | string[] | undefined): string[] | undefined {
  // What nearly every hop sends: no header names to drop, and nothing to split.
  if (v === undefined || v === 'keep-alive' || v === 'close' || v === 'Keep-Alive') return undefined;
  const s = Array.isArray(v) ? v.join(',') : v;
  let out: string[] | undefined;
  for (const t of s.split(',')) {
    const n = t.trim().toLowerCase();
    if (n !== '' && n !== 'close' && n !== 'keep-alive') (out ??= []).push(n);
  }
  return out;
}

export interface Sink {
  readonly res: ServerResponse;
  /** Headers added to the answer (CORS), flat pairs; may be empty. */
  readonly extraHeaders: readonly string[];
  bytesOut: number;
  /** The gRPC status the answer ended with, when it was a gRPC one. */
  grpcStatus: number | undefined;
  /** The call came as gRPC-Web: the answer's head, body and trailers are turned into gRPC-Web on the way out. */
  readonly grpcWeb: GrpcWebAnswer | undefined;
  /** Why the exchange ended early, for the log (`stream_idle_timeout`). */
  reason: string | undefined;
  /** The route's answer compression, with what the client said of it (its method and Accept-Encoding). */
  readonly compression: CompiledCompression | undefined;
  /** The upstream broke off an answer none of which had gone out: the client can still be told so, whole. */
  brokenOff(error: Error): void;
  readonly method: string;
  readonly acceptEncoding: string | undefined;
}

/**
 * Body bytes a try holds while the engine decides whether it is the answer; past this the upstream is
 * paused. The decision comes within the same turn of the event loop, so an answer of ordinary size is
 * read in full without pausing: pausing undici's parser puts the unread bytes back into the socket and
 * parses them again on resume, which cost more per request than holding them.
 */
const HOLD_BYTES = 64 * 1024;

/**
 * A gRPC answer is never paused. Its status comes in trailers, and undici 7's HTTP/2 client completes a
 * paused stream when its trailers arrive, dropping the body still buffered behind the pause: the client
 * would get a cut answer with an OK status. So a gRPC answer is buffered instead while the client reads
 * slower than the upstream sends, up to this much (twice gRPC's default message limit); past it the call
 * is failed rather than held without bound.
 */
export const UNPAUSED_LIMIT = 8 * 1024 * 1024;

const OVERFLOW = Object.freeze(new Error(`gRPC answer not read by the client: over ${UNPAUSED_LIMIT} bytes buffered`));

/**
 * One try of one proxied request, as undici's handler. The answer is announced to the engine at its
 * headers, and streams to the client only once the engine took it (`attach`); what arrives before is held
 * (bounded by HOLD_BYTES). A try the engine retries is drained and dropped instead. The deadline lives on
 * the shared timer wheel, from dispatch to the end of the body: no setTimeout, no AbortController per
 * request.
 */
export class UpstreamTry implements Dispatcher.DispatchHandler, Expirable {
  status = 0;
  headers: IncomingHttpHeaders | undefined;
  token = -1;
  /** This try's client span; ended when the exchange with the upstream is over (body read, failed, dropped). */
  span: ClientSpanHandle | undefined;
  /** The gRPC status the answer ended with, once it ended, when it was a gRPC one. */
  private grpcStatus: number | undefined;
  private controller: Dispatcher.DispatchController | undefined;
  private settled = false;
  private done = false;
  private expired = false;
  private sink: Sink | undefined;
  private discarding = false;
  private queue: Buffer[] | undefined;
  private queuedBytes = 0;
  /** Paused by this try: for the engine's decision past HOLD_BYTES, or for the client's backpressure. */
  private paused = false;
  /** A gRPC answer: buffered, never paused (UNPAUSED_LIMIT). */
  private unpausable = false;
  /** The request body when it streams: let go of once the answer is complete (see onResponseEnd). */
  body: BodyReader | undefined;
  /**
   * The route's streamIdleTimeoutMs, 0 without. With it, the deadline ends at the answer's head, and the
   * body is bounded by silence instead: the wheel's entry is checked every idleMs against the bytes that
   * passed, so no clock is read per chunk; a stream is cut after idleMs to twice that without a byte.
   */
  idleMs = 0;
  private idling = false;
  /** Answer bytes received, and what had passed both ways at the last idle check. */
  private received = 0;
  private moved = 0;
  private abortReason: Error | undefined;
  private ended = false;
  private failure: Error | undefined;
  /**
   * An HTTP/1.1 answer's head, attached before any of its body came: node sends a head with the first body
   * bytes anyway, so it is written then, and an upstream that breaks off before them leaves the client a
   * whole 502 instead of a closed connection.
   */
  private heldHead: readonly string[] | undefined;
  /** Trailers that came before the answer was attached. */
  private trailers: IncomingHttpHeaders | undefined;
  /** A trailers-only gRPC status moved out of the head, sent as trailers at the end. */
  private statusTrailers: IncomingHttpHeaders | undefined;
  private drainListener: (() => void) | undefined;
  /** The compressor the answer's body goes through (Route compression), piped into the response. */
  private compressing: Transform | undefined;
  /** How the answer ended for the engine (settleHealth), while it waits for that (healthAtEnd); SETTLED otherwise. */
  private verdict = SETTLED;
  private late: LateHealth | undefined;

  constructor(
    private readonly resolve: (o: TryOutcome<UpstreamTry>) => void,
    private readonly wheel: TimerWheel,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.expired) controller.abort(TRY_TIMEOUT);
    else if (this.discarding) controller.abort(DISCARDED);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    // An informational answer (103 Early Hints; undici refuses an unasked-for 100 itself) comes before the
    // final one and is not passed on, as Envoy and nginx do by default.
    if (this.settled) return;
    if (!(statusCode >= 200 && statusCode <= 599)) {
      if (statusCode >= 100 && statusCode < 200) return;
      // HTTP's statuses end at 599 (RFC 9110 §15), and an HTTP/2 answer may lack one: a client's fetch fails
      // on them, so it is the upstream's failure (502, retried as one), never passed on.
      this.abortUpstream(noSuchStatus(statusCode));
      return;
    }
    this.status = statusCode;
    this.headers = headers;
    this.settled = true;
    const ct = headers['content-type'];
    this.unpausable = typeof ct === 'string' && ct.startsWith('application/grpc');
    if (this.idleMs > 0) this.idleFromHere();
    const ra = headers['retry-after'];
    // A trailers-only gRPC error is known at the head: the engine judges it by its HTTP equivalent, so that
    // breakers, outlier ejection and retry rules see an UNAVAILABLE as the 503 it is (the client still gets
    // the answer as it came).
    const gs = headers['grpc-status'];
    const judged = gs !== undefined && statusCode === 200 && this.unpausable ? httpStatusOfGrpc(grpcCodeOf(gs) ?? 2) : statusCode;
    // Otherwise a gRPC answer's status comes in its trailers: the engine waits for it (settleHealth).
    const later = gs === undefined && statusCode === 200 && this.unpausable;
    if (later) this.verdict = PENDING;
    this.resolve({ status: judged, retryAfter: typeof ra === 'string' ? ra : undefined, response: this, error: undefined, timedOut: false, healthAtEnd: later });
  }

  /**
   * The engine's handle for an answer judged at its end (a gRPC status in trailers): settled now if the
   * answer has ended already, else when it does. Called once the engine took this try as the answer.
   */
  healthTo(late: LateHealth | undefined): void {
    if (late === undefined) return;
    const v = this.verdict;
    if (v === PENDING) this.late = late;
    else late.settle(v === RELEASED ? undefined : v);
  }

  /** How the answer ended, for the engine: an HTTP status, 0 for a failure, RELEASED for nothing learnt. */
  private settleHealth(status: number): void {
    if (this.verdict !== PENDING) return;
    this.verdict = status;
    const late = this.late;
    if (late === undefined) return;
    this.late = undefined;
    late.settle(status === RELEASED ? undefined : status);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.received += chunk.length;
    if (this.discarding) return;
    const sink = this.sink;
    if (sink === undefined) {
      // Held until the engine decides whether this is the answer.
      (this.queue ??= []).push(chunk);
      this.queuedBytes += chunk.length;
      if (this.queuedBytes > HOLD_BYTES && !this.paused) {
        if (!this.unpausable) {
          this.paused = true;
          controller.pause();
        } else if (this.queuedBytes > UNPAUSED_LIMIT) this.overflow();
      }
      return;
    }
    if (!this.write(sink, chunk)) this.waitForDrain(sink);
  }

  /** One chunk of the answer to the client, as gRPC-Web when the call came so. */
  private write(sink: Sink, chunk: Buffer): boolean {
    if (this.heldHead !== undefined) this.sendHead(sink);
    const out = sink.grpcWeb === undefined ? chunk : sink.grpcWeb.data(chunk);
    const z = this.compressing;
    if (z !== undefined) return z.write(out);
    sink.bytesOut += out.length;
    return sink.res.write(out);
  }

  private waitForDrain(sink: Sink): void {
    if (this.unpausable) {
      if (sink.res.writableLength > UNPAUSED_LIMIT) this.overflow();
      return;
    }
    if (!this.paused) {
      this.paused = true;
      this.controller?.pause();
    }
    (this.compressing ?? sink.res).once('drain', (this.drainListener ??= () => this.unpause()));
  }

  /**
   * Stops the upstream exchange. While a streaming body is still being sent, it is stopped through the body:
   * undici 7 aborting an HTTP/2 stream that a body is still being piped into sends node's HTTP/2 session
   * into a loop, at full CPU with memory growing without bound, whereas a body that ends early makes undici
   * abort the request itself, cleanly. The reason is kept for the outcome (onResponseError).
   */
  private abortUpstream(reason: Error): void {
    if (this.bodyInFlight()) {
      this.abortReason = reason;
      this.body!.destroy();
      return;
    }
    this.controller?.abort(reason);
  }

  /** The streaming request body is still being sent. */
  private bodyInFlight(): boolean {
    const body = this.body;
    return body !== undefined && !body.readableEnded && !body.destroyed;
  }

  /** A gRPC answer the client does not read fast enough: the upstream call is aborted and the client's answer cut. */
  private overflow(): void {
    this.discarding = true;
    this.queue = undefined;
    this.sink?.res.destroy(OVERFLOW);
    if (!this.done) this.abortUpstream(OVERFLOW);
  }

  private unpause(): void {
    if (!this.paused) return;
    this.paused = false;
    this.controller?.resume();
  }

  onResponseEnd(c: Dispatcher.DispatchController, trailers: IncomingHttpHeaders | null | undefined): void {
    // Only informational answers, or an answer refused above, then the end: no answer at all.
    if (!this.settled) return this.onResponseError(c, new Error('it ended the stream without a final answer'));
    // gRPC's status travels in trailers (or, trailers-only, in the head): passed on as it came (HTTP/2, or a
    // chunked HTTP/1.1 answer), and read first so that the try's span ends with it.
    const t = trailersOf(c, trailers);
    this.grpcStatus = grpcCodeOf(t?.['grpc-status'] ?? this.headers?.['grpc-status']);
    // No status at all is an INTERNAL error by gRPC's own rules (grpc-js says so to its callers).
    this.settleHealth(httpStatusOfGrpc(this.grpcStatus ?? 13));
    // The upstream answered in full before taking the whole body (a gRPC error status, a 413): stop sending
    // it. Left writing into an HTTP/2 stream the upstream had ended, it made node's HTTP/2 session spin at
    // full CPU with memory growing without bound; the client's upload drains instead and the answer goes out.
    if (this.bodyInFlight()) this.body!.destroy();
    this.finish(undefined);
    if (this.discarding) return;
    if (this.sink !== undefined) this.close(this.sink, t);
    else {
      this.ended = true;
      this.trailers = t;
    }
  }

  onResponseError(_c: Dispatcher.DispatchController | undefined, failure: Error): void {
    // Stopped through its body (abortUpstream), undici reports a premature close: the reason is ours.
    const error = this.abortReason ?? this.body?.failure ?? failure;
    // Cut off by the upstream, or past the deadline, is its failure; stopped for the client's sake or by the
    // route's idle rule, nothing learnt.
    const r = this.abortReason;
    this.settleHealth(r === DISCARDED || r === OVERFLOW || r === STREAM_IDLE ? RELEASED : 0);
    this.finish(error);
    if (!this.settled) {
      this.settled = true;
      this.resolve({ status: 0, retryAfter: undefined, response: undefined, error, timedOut: this.expired || error === TRY_TIMEOUT });
      return;
    }
    if (this.discarding) return;
    // The answer had started: the client gets a cut-off response, which is all HTTP allows now. The log and
    // the metrics say whose doing it was (a client that left, or the route's idle rule, have said so already).
    const sink = this.sink;
    const upstreams = r === undefined || r === TRY_TIMEOUT;
    if (sink === undefined) this.failure = error;
    else if (this.heldHead !== undefined && upstreams) {
      this.heldHead = undefined;
      sink.brokenOff(error);
    } else {
      if (upstreams) sink.reason ??= r === TRY_TIMEOUT ? 'deadline_exceeded' : 'upstream_error';
      sink.res.destroy(error);
    }
  }

  /** A dispatch that threw synchronously. */
  fail(error: Error): void {
    this.onResponseError(undefined, error);
  }

  onExpire(): void {
    this.token = -1;
    if (this.done) return;
    if (this.idling) return this.idleCheck();
    this.expired = true;
    if (this.controller !== undefined) {
      this.abortUpstream(TRY_TIMEOUT);
      if (this.done) return;
      // Stopped through its body, undici reports the abort when it next writes that body, and a request it
      // queued again after its HTTP/2 connection went away (undici 7 sends running requests anew on the
      // next connection) may never be written again nor answered: the try ends here, whether its answer had
      // begun or not. A report undici makes later finds it ended.
      return this.onResponseError(undefined, TRY_TIMEOUT);
    }
    if (!this.settled) {
      this.settled = true;
      this.done = true;
      this.endSpan(TRY_TIMEOUT);
      this.resolve({ status: 0, retryAfter: undefined, response: undefined, error: TRY_TIMEOUT, timedOut: true });
    }
  }

  /** The answer's head came on a streaming route: from here on the deadline is replaced by the idle check. */
  private idleFromHere(): void {
    this.idling = true;
    if (this.token >= 0) this.wheel.remove(this.token, this);
    this.moved = this.passed();
    this.token = this.wheel.add(this.wheel.clock.now() + this.idleMs, this);
  }

  /** Bytes that passed either way: the answer's, and the request body's while it streams. */
  private passed(): number {
    return this.received + (this.body?.received ?? 0);
  }

  private idleCheck(): void {
    const now = this.passed();
    if (now !== this.moved) {
      this.moved = now;
      this.token = this.wheel.add(this.wheel.clock.now() + this.idleMs, this);
      return;
    }
    if (this.sink !== undefined) this.sink.reason = 'stream_idle_timeout';
    this.abortUpstream(STREAM_IDLE);
  }

  /**
   * The upstream broke off its answer (a reset, bad framing, the deadline) after its head but before the
   * answer was attached: nothing has gone to the client yet, so it can still be told so whole.
   */
  get brokenOff(): Error | undefined {
    return this.failure;
  }

  /** This is the answer: head, what arrived meanwhile, then the rest as it comes. */
  attach(sink: Sink, head: readonly string[]): void {
    this.sink = sink;
    this.body?.commit();
    const res = sink.res;
    // gRPC puts its status in the headers only when there is nothing else to send ("trailers-only", one
    // HEADERS frame that ends the stream). Node's HTTP/2 compatibility layer cannot end a stream with its
    // headers, so the status goes in trailers after them, the other form gRPC allows.
    if (sink.grpcWeb !== undefined) head = sink.grpcWeb.head(head);
    else if (this.headers?.['grpc-status'] !== undefined && isHttp2Response(res)) head = this.statusToTrailers(head);
    else if (sink.compression !== undefined && !this.unpausable) head = this.compressFor(sink, head);
    const q = this.queue;
    if (q === undefined && !this.ended && this.failure === undefined && !isHttp2Response(res)) {
      // Nothing of the body yet. An event stream, or a route that streams, is sent its head at once (the
      // client waits for it before the first event); a compressed or gRPC-Web answer goes out with its first
      // bytes, whose writer cannot send a held head first; any other is held for them, as node would.
      const type = this.headers?.['content-type'];
      const streaming = this.idleMs > 0 || (typeof type === 'string' && type.startsWith('text/event-stream'));
      if (!streaming && this.compressing === undefined && sink.grpcWeb === undefined) {
        this.heldHead = head;
        this.unpause();
        return;
      }
      res.writeHead(this.status, head as string[]);
      if (streaming) res.flushHeaders();
      this.unpause();
      return;
    }
    res.writeHead(this.status, head as string[]);
    this.queue = undefined;
    this.queuedBytes = 0;
    if (this.ended) {
      // The whole answer arrived before the decision, as most do: one write with the head where it is one chunk.
      if (q !== undefined && q.length === 1 && sink.grpcWeb === undefined && this.compressing === undefined) {
        this.endWith(sink, this.trailers);
        sink.bytesOut += q[0]!.length;
        res.end(q[0]);
        return;
      }
      if (q !== undefined) this.writeHeld(sink, q);
      this.close(sink, this.trailers);
      return;
    }
    let ok = true;
    if (q !== undefined) ok = this.writeHeld(sink, q);
    if (this.failure !== undefined) res.destroy(this.failure);
    else if (!ok) this.waitForDrain(sink);
    else this.unpause();
  }

  /**
   * Compresses the answer if the route and the client want it (compression.ts): the head is made to say so,
   * and the body goes through a compressor piped into the response.
   */
  private compressFor(sink: Sink, head: readonly string[]): readonly string[] {
    const h = this.headers ?? {};
    const cl = h['content-length'];
    const length = this.ended ? this.queuedBytes : typeof cl === 'string' ? Number(cl) : undefined;
    const d = decide(sink.compression!, sink.method, sink.acceptEncoding, this.status, h, length);
    if (d.encoding === undefined && !d.varies) return head;
    if (d.encoding !== undefined) {
      const z = (this.compressing = compressor(d.encoding));
      const res = sink.res;
      z.on('data', (c: Buffer) => (sink.bytesOut += c.length));
      z.on('error', (e) => res.destroy(e));
      // The client left: the compressor's work and buffers go with it.
      res.once('close', () => z.destroy());
      z.pipe(res);
    }
    return compressedHead(head, d.encoding, d.varies);
  }

  private sendHead(sink: Sink): void {
    sink.res.writeHead(this.status, this.heldHead as string[]);
    this.heldHead = undefined;
  }

  private writeHeld(sink: Sink, q: readonly Buffer[]): boolean {
    let ok = true;
    for (const c of q) ok = this.write(sink, c);
    return ok;
  }

  /** Ends the answer: its trailers, then the end of the body. */
  private close(sink: Sink, trailers: IncomingHttpHeaders | undefined): void {
    if (this.heldHead !== undefined) this.sendHead(sink);
    const tail = this.endWith(sink, trailers);
    const z = this.compressing;
    if (z !== undefined) {
      // Its end ends the response, through the pipe, after the last compressed bytes.
      if (tail === undefined) z.end();
      else z.end(tail);
    } else if (tail === undefined) sink.res.end();
    else {
      sink.bytesOut += tail.length;
      sink.res.end(tail);
    }
  }

  /**
   * The trailers (with a trailers-only status moved out of the head) onto the answer, its gRPC status noted
   * for the access log. For gRPC-Web they are the body's last frame instead, returned to be written.
   */
  private endWith(sink: Sink, trailers: IncomingHttpHeaders | undefined): Buffer | undefined {
    if (sink.grpcWeb !== undefined) {
      // Read from the same trailers and head by onResponseEnd, which comes first.
      if (this.grpcStatus !== undefined) sink.grpcStatus = this.grpcStatus;
      return sink.grpcWeb.end(trailers);
    }
    const all = this.statusTrailers === undefined ? trailers : { ...this.statusTrailers, ...trailers };
    if (all === undefined) return undefined;
    const code = grpcCodeOf(all['grpc-status']);
    if (code !== undefined) sink.grpcStatus = code;
    addTrailers(sink.res, all);
    return undefined;
  }

  private statusToTrailers(head: readonly string[]): string[] {
    const kept: string[] = [];
    const moved: IncomingHttpHeaders = {};
    for (let i = 0; i + 1 < head.length; i += 2) {
      const name = head[i]!;
      if (GRPC_STATUS.has(name)) moved[name] = head[i + 1];
      else kept.push(name, head[i + 1]!);
    }
    this.statusTrailers = moved;
    return kept;
  }

  /** Not the answer after all (retried): read and drop the rest, keeping the connection if it ends soon. */
  discard(): void {
    this.discarding = true;
    this.queue = undefined;
    if (this.done) return;
    if (this.controller === undefined) return; // aborted in onRequestStart
    this.unpause();
  }

  /** The client went away: stop the upstream exchange. */
  abort(): void {
    this.settleHealth(RELEASED);
    this.discarding = true;
    this.queue = undefined;
    if (this.done) return;
    this.abortUpstream(DISCARDED);
  }

  /**
   * The flat header list of the answer, hop-by-hop headers removed, the route's `edit` made, `extra` appended.
   * `own`: a header the gateway gives itself (the request ID): the upstream's of that name is left out.
   */
  responseHead(extra: readonly string[], edit: HeaderEdit | undefined, own?: string): string[] {
    const h = this.headers ?? {};
    const drop = connectionTokens(h.connection);
    const out: string[] = [];
    for (const name in h) {
      if (RESPONSE_HOP.has(name) || (drop !== undefined && drop.includes(name)) || name === own) continue;
      if (edit !== undefined && edit.drop.has(name)) continue;
      const v = h[name];
      if (v === undefined) continue;
      if (typeof v === 'string') out.push(name, v);
      else for (const x of v) out.push(name, x);
    }
    if (edit !== undefined) for (let i = 0; i < edit.append.length; i++) out.push(edit.append[i]!);
    for (let i = 0; i < extra.length; i++) out.push(extra[i]!);
    return out;
  }

  private finish(error: Error | undefined): void {
    this.done = true;
    if (this.token >= 0) {
      this.wheel.remove(this.token, this);
      this.token = -1;
    }
    this.endSpan(error);
  }

  private endSpan(error: Error | undefined): void {
    const span = this.span;
    if (span === undefined) return;
    this.span = undefined;
    span.end(this.status === 0 ? undefined : this.status, error, this.grpcStatus);
  }
}

/**
 * The answer's trailers, if any. undici 7 hands HTTP/2 trailers (node's object, not a raw list) through a
 * parser of raw lists, which yields `{}`; its controller still holds them as `rawTrailers`.
 */
function trailersOf(c: Dispatcher.DispatchController, parsed: IncomingHttpHeaders | null | undefined): IncomingHttpHeaders | undefined {
  if (parsed !== null && parsed !== undefined && hasAny(parsed)) return parsed;
  const raw = (c as { rawTrailers?: unknown }).rawTrailers;
  return raw !== null && typeof raw === 'object' && !Array.isArray(raw) && hasAny(raw) ? (raw as IncomingHttpHeaders) : undefined;
}

function hasAny(o: object): boolean {
  for (const _ in o) return true;
  return false;
}

/** The upstream's trailers, minus what no message may carry; a name node refuses is dropped, not fatal. */
function addTrailers(res: Sink['res'], trailers: IncomingHttpHeaders): void {
  const out: Record<string, string | string[]> = {};
  for (const name in trailers) {
    const v = trailers[name];
    if (v === undefined || RESPONSE_HOP.has(name) || name.charCodeAt(0) === 58 /* : */) continue;
    out[name] = v;
  }
  try {
    res.addTrailers(out);
  } catch {
    // An invalid trailer from upstream: the answer still ends, without them.
  }
}
