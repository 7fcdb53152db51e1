import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PlinthError } from '@plinth/core';
import { decodeJsonTraces } from './decode.js';
import { normalizeTraces, OTLP_LIMITS, truncate } from './normalize.js';
import { jsonRequest, jsonSpan } from './test-helpers.js';

const decode = (doc: unknown) => decodeJsonTraces(Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)));
const one = (resource: Record<string, string>, span: Record<string, unknown>) => {
  const b = decode(jsonRequest(resource, [jsonSpan(span)]));
  assert.equal(b.rejected, 0, b.errorMessage);
  return b.spans[0]!;
};
const attrs = (o: Record<string, unknown>) =>
  Object.entries(o).map(([key, v]) => ({
    key,
    value: typeof v === 'string' ? { stringValue: v } : typeof v === 'boolean' ? { boolValue: v } : Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v },
  }));
const malformed = (pattern: RegExp) => (e: unknown) => e instanceof PlinthError && e.code === 'malformed_body' && pattern.test(e.message);

void describe('OTLP/JSON normalization', () => {
  void it('reads the specification example (hex ids in any case, string and number nanoseconds)', () => {
    const example = {
      resourceSpans: [
        {
          resource: { attributes: [{ key: 'service.name', value: { stringValue: 'my.service' } }] },
          scopeSpans: [
            {
              scope: { name: 'my.library', version: '1.0.0', attributes: [{ key: 'my.scope.attribute', value: { stringValue: 'some scope attribute' } }] },
              spans: [jsonSpan({ startTimeUnixNano: 1544712660000000000, endTimeUnixNano: 1544712661000000000 })],
            },
          ],
        },
      ],
    };
    const { spans, rejected } = decode(example);
    assert.equal(rejected, 0);
    assert.deepEqual(spans[0], {
      namespace: 'default',
      traceId: '5b8efff798038103d269b633813fc60c',
      spanId: 'eee19b7ec3c1b174',
      parentSpanId: 'eee19b7ec3c1b173',
      service: 'my.service',
      version: undefined,
      name: "I'm a server span",
      kind: 'server',
      startMs: 1544712660000,
      durationMs: 1000,
      status: 'unset',
      statusMessage: undefined,
      endpoint: "I'm a server span",
      peer: undefined,
      httpStatus: undefined,
      grpcStatus: undefined,
      lane: undefined,
      stress: false,
      region: undefined,
      caller: undefined,
      attributes: { 'my.span.attr': 'some value', 'otel.scope.name': 'my.library', 'otel.scope.version': '1.0.0' },
      resource: { 'service.name': 'my.service' },
      events: [],
    });
  });

  void it('keeps nanosecond precision from decimal strings', () => {
    const s = one({}, { startTimeUnixNano: '1700000000123456789', endTimeUnixNano: '1700000000124456790' });
    assert.equal(s.startMs, 1700000000123 + 0.456789);
    assert.equal(s.durationMs, 1.000001);
  });

  void it('takes namespace, service, version and region from the resource, with the OpenTelemetry defaults', () => {
    const s = one({ 'service.namespace': 'retail', 'service.name': 'orders', 'service.version': '2.1.0', 'cloud.region': 'eu-west-1' }, {});
    assert.deepEqual([s.namespace, s.service, s.version, s.region], ['retail', 'orders', '2.1.0', 'eu-west-1']);
    const d = one({}, {});
    assert.deepEqual([d.namespace, d.service], ['default', 'unknown_service']);
  });

  void it('derives the endpoint of server and consumer spans from method and route, never the raw URL', () => {
    const newSemconv = one({}, { kind: 2, attributes: attrs({ 'http.request.method': 'GET', 'http.route': '/orders/:id', 'url.path': '/orders/42' }) });
    assert.equal(newSemconv.endpoint, 'GET /orders/:id');
    const oldSemconv = one({}, { kind: 2, name: 'HTTP POST', attributes: attrs({ 'http.method': 'POST', 'http.route': '/carts', 'http.target': '/carts?id=7' }) });
    assert.equal(oldSemconv.endpoint, 'POST /carts');
    const noRoute = one({}, { kind: 2, name: 'GET', attributes: attrs({ 'http.request.method': 'GET', 'http.target': '/orders/42' }) });
    assert.equal(noRoute.endpoint, 'GET');
    const consumer = one({}, { kind: 5, name: 'orders process' });
    assert.equal(consumer.endpoint, 'orders process');
    const client = one({}, { kind: 3, attributes: attrs({ 'http.request.method': 'GET', 'http.route': '/x' }) });
    assert.equal(client.endpoint, undefined);
  });

  void it('derives the peer of client and producer spans in the documented order', () => {
    const peer = (a: Record<string, unknown>, kind = 3) => one({}, { kind, attributes: attrs(a) }).peer;
    assert.equal(peer({ 'peer.service': 'payments', 'db.system': 'redis', 'server.address': 'pay.internal' }), 'payments');
    assert.equal(peer({ 'db.system': 'postgresql', 'db.namespace': 'shop', 'server.address': 'pg' }), 'postgresql/shop');
    assert.equal(peer({ 'db.system': 'mysql', 'db.name': 'legacy' }), 'mysql/legacy');
    assert.equal(peer({ 'db.system.name': 'redis' }), 'redis');
    assert.equal(peer({ 'messaging.system': 'kafka', 'server.address': 'broker' }, 4), 'kafka');
    assert.equal(peer({ 'server.address': 'api.partner.com' }), 'api.partner.com');
    assert.equal(peer({ 'net.peer.name': 'old.partner.com' }), 'old.partner.com');
    assert.equal(peer({ 'peer.service': 'payments' }, 2), undefined);
  });

  void it('reads the HTTP status from new and old semantic conventions, numbers or strings', () => {
    assert.equal(one({}, { attributes: attrs({ 'http.response.status_code': 503 }) }).httpStatus, 503);
    assert.equal(one({}, { attributes: attrs({ 'http.status_code': 404 }) }).httpStatus, 404);
    assert.equal(one({}, { attributes: attrs({ 'http.status_code': '201' }) }).httpStatus, 201);
    assert.equal(one({}, { attributes: attrs({ 'http.status_code': 500, 'http.response.status_code': 200 }) }).httpStatus, 200);
    assert.equal(one({}, { attributes: attrs({ 'http.response.status_code': 200, 'http.status_code': 500 }) }).httpStatus, 200);
    assert.equal(one({}, {}).httpStatus, undefined);
    const grpcCall = one({}, { attributes: attrs({ 'rpc.system': 'grpc', 'rpc.grpc.status_code': 14, 'http.response.status_code': 200 }) });
    assert.deepEqual([grpcCall.httpStatus, grpcCall.grpcStatus], [200, 14]);
    assert.equal(one({}, { attributes: attrs({ 'rpc.grpc.status_code': 'NOT_A_CODE' }) }).grpcStatus, undefined);
    assert.equal(one({}, {}).grpcStatus, undefined);
  });

  void it('derives lane, stress and caller from the plinth attributes (caller on server spans only)', () => {
    const s = one({}, { kind: 2, attributes: attrs({ 'plinth.lane': 'canary', 'plinth.stress': true, 'plinth.caller': 'gateway' }) });
    assert.deepEqual([s.lane, s.stress, s.caller], ['canary', true, 'gateway']);
    assert.equal(one({}, { attributes: attrs({ 'plinth.stress': 'true' }) }).stress, true);
    assert.equal(one({}, { attributes: attrs({ 'plinth.stress': false }) }).stress, false);
    assert.equal(one({}, { kind: 3, attributes: attrs({ 'plinth.caller': 'gateway' }) }).caller, undefined);
  });

  void it('maps kinds and statuses from integers (and tolerates enum names)', () => {
    const kinds = [0, 1, 2, 3, 4, 5, 9].map((k) => one({}, { kind: k }).kind);
    assert.deepEqual(kinds, ['internal', 'internal', 'server', 'client', 'producer', 'consumer', 'internal']);
    assert.equal(one({}, { kind: 'SPAN_KIND_CLIENT' }).kind, 'client');
    const err = one({}, { status: { code: 2, message: 'boom' } });
    assert.deepEqual([err.status, err.statusMessage], ['error', 'boom']);
    assert.equal(one({}, { status: { code: 1 } }).status, 'ok');
    assert.equal(one({}, { status: {} }).status, 'unset');
  });

  void it('flattens values: int64 strings, doubles, bytes, and arrays and maps as JSON', () => {
    const s = one({}, {
      attributes: [
        { key: 'i', value: { intValue: '42' } },
        { key: 'huge', value: { intValue: '9007199254740993' } },
        { key: 'd', value: { doubleValue: 1.5 } },
        { key: 'nan', value: { doubleValue: 'NaN' } },
        { key: 'b', value: { bytesValue: 'aGk=' } },
        { key: 'arr', value: { arrayValue: { values: [{ stringValue: 'a' }, { intValue: 1 }, { boolValue: true }] } } },
        { key: 'map', value: { kvlistValue: { values: [{ key: 'k', value: { stringValue: 'v' } }, { key: '__proto__', value: { intValue: '1' } }] } } },
        { key: 'empty', value: {} },
        { key: '__proto__', value: { stringValue: 'kept' } },
      ],
    });
    assert.equal(s.attributes.i, 42);
    assert.equal(s.attributes.huge, '9007199254740993');
    assert.equal(s.attributes.d, 1.5);
    assert.equal(s.attributes.nan, 'NaN');
    assert.equal(s.attributes.b, 'aGk=');
    assert.equal(s.attributes.arr, '["a",1,true]');
    assert.equal(s.attributes.map, '{"k":"v","__proto__":1}');
    assert.equal('empty' in s.attributes, false);
    assert.equal(Object.getOwnPropertyDescriptor(s.attributes, '__proto__')?.value, 'kept');
    assert.equal(Object.getPrototypeOf(s.attributes), Object.prototype);
  });

  void it('truncates instead of refusing: attributes, value length, events, names', () => {
    const many = Array.from({ length: 200 }, (_, i) => ({ key: `k${i}`, value: { stringValue: 'v' } }));
    // Derived fields still see attributes past the limit.
    many.push({ key: 'plinth.lane', value: { stringValue: 'blue' } });
    const events = Array.from({ length: 300 }, (_, i) => ({ timeUnixNano: '1544712660500000000', name: `e${i}`, attributes: many }));
    const long = 'x'.repeat(10_000);
    const s = one({}, { name: 'n'.repeat(5000), attributes: [...many, { key: 'long', value: { stringValue: long } }], events });
    assert.equal(Object.keys(s.attributes).length, OTLP_LIMITS.attributes);
    assert.equal(s.lane, 'blue');
    assert.equal(s.name.length, OTLP_LIMITS.nameLength);
    assert.equal(s.events.length, OTLP_LIMITS.events);
    assert.equal(Object.keys(s.events[0]!.attributes).length, OTLP_LIMITS.attributes);
    assert.equal(s.events[0]!.timeMs, 1544712660500);
    const v = one({}, { attributes: [{ key: 'long', value: { stringValue: long } }, { key: 'arr', value: { arrayValue: { values: [{ stringValue: long }] } } }] });
    assert.equal((v.attributes.long as string).length, OTLP_LIMITS.valueLength);
    assert.equal((v.attributes.arr as string).length, OTLP_LIMITS.valueLength);
  });

  void it('never splits a surrogate pair when truncating', () => {
    const s = 'a'.repeat(9) + '😀';
    assert.equal(truncate(s, 10), 'a'.repeat(9));
    assert.equal(truncate(s, 11), s);
  });

  void it('rejects invalid spans one by one and says why (zero, short, non-hex ids; no start time)', () => {
    const b = decode(
      jsonRequest({ 'service.name': 'x' }, [
        jsonSpan(),
        jsonSpan({ traceId: '0'.repeat(32) }),
        jsonSpan({ spanId: 'abc' }),
        jsonSpan({ traceId: 'zz'.repeat(16) }),
        jsonSpan({ startTimeUnixNano: '0' }),
        jsonSpan({ traceId: undefined }),
        jsonSpan({ parentSpanId: '0000000000000000' }),
        jsonSpan({ parentSpanId: '' }),
        jsonSpan({ parentSpanId: 'eee19b7e' }),
      ]),
    );
    assert.equal(b.spans.length, 3);
    assert.equal(b.rejected, 6);
    assert.match(b.errorMessage!, /^resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[1\]\.traceId: an all-zero id/);
    assert.equal(b.spans[1]!.parentSpanId, undefined);
    assert.equal(b.spans[2]!.parentSpanId, undefined);
  });

  void it('accepts base64 ids, which some exporters send against the OTLP/JSON rule', () => {
    const s = one({}, { traceId: Buffer.from('5b8efff798038103d269b633813fc60c', 'hex').toString('base64'), spanId: Buffer.from('eee19b7ec3c1b174', 'hex').toString('base64') });
    assert.equal(s.traceId, '5b8efff798038103d269b633813fc60c');
    assert.equal(s.spanId, 'eee19b7ec3c1b174');
  });

  void it('rejects the spans of a resource whose service.namespace is not a Plinth namespace', () => {
    const b = decode(jsonRequest({ 'service.namespace': 'Not A Namespace' }, [jsonSpan(), jsonSpan()]));
    assert.equal(b.spans.length, 0);
    assert.equal(b.rejected, 2);
    assert.match(b.errorMessage!, /service\.namespace "Not A Namespace" is not a Plinth namespace/);
  });

  void it('refuses documents of the wrong shape with a 400 naming the field', () => {
    assert.throws(() => decode('{"resourceSpans": '), malformed(/invalid JSON/));
    assert.throws(() => decode('[]'), malformed(/ExportTraceServiceRequest object/));
    assert.throws(() => decode({ resourceSpans: {} }), malformed(/^resourceSpans: expected an array/));
    assert.throws(() => decode({ resourceSpans: [{ scopeSpans: 5 }] }), malformed(/^resourceSpans\[0\]\.scopeSpans: expected an array/));
    assert.throws(() => decode(jsonRequest({}, [jsonSpan({ name: 7 })])), malformed(/spans\[0\]\.name: expected a string/));
    assert.throws(() => decode(jsonRequest({}, [jsonSpan({ traceId: 7 })])), malformed(/spans\[0\]\.traceId: expected a hex string/));
    assert.throws(() => decode(jsonRequest({}, [jsonSpan({ startTimeUnixNano: '12ab' })])), malformed(/startTimeUnixNano: expected nanoseconds/));
    assert.throws(() => decode(jsonRequest({}, [jsonSpan({ kind: 'SERVER' })])), malformed(/kind: expected a SpanKind/));
    assert.throws(() => decode(jsonRequest({}, [jsonSpan({ attributes: [{ key: 'a', value: { intValue: 'x' } }] })])), malformed(/spans\[0\]\.attributes\[0\]\.value\.intValue/));
    assert.throws(() => decode(jsonRequest({}, [jsonSpan({ events: [{ name: 1 }] })])), malformed(/spans\[0\]\.events\[0\]\.name: expected a string/));
    assert.throws(() => decode({ resourceSpans: [{ resource: { attributes: [{ key: 'a', value: { boolValue: 'yes' } }] } }] }), malformed(/^resourceSpans\[0\]\.resource\.attributes\[0\]\.value\.boolValue/));
  });

  void it('ignores unknown fields, as OTLP/JSON receivers must', () => {
    const b = decode({ resourceSpans: [{ futureField: 1, scopeSpans: [{ spans: [jsonSpan({ somethingNew: { a: 1 } })] }] }], extra: true });
    assert.equal(b.spans.length, 1);
  });

  void it('treats an empty request as a success with no spans', () => {
    assert.deepEqual(normalizeTraces({}, 'json'), { spans: [], rejected: 0, errorMessage: undefined });
  });

  void it('survives absurd nesting as a 400 or a flattened value, never a crash', () => {
    const v = '{"arrayValue":{"values":['.repeat(5000) + '{"stringValue":"leaf"}' + ']}}'.repeat(5000);
    const doc = JSON.stringify(jsonRequest({}, [jsonSpan({ attributes: [{ key: 'deep', value: 'VALUE' }] })])).replace('"VALUE"', v);
    const s = decode(doc).spans[0]!;
    assert.match(s.attributes.deep as string, /^\[\[\[/);
    const deepJson = '['.repeat(200_000) + ']'.repeat(200_000);
    assert.throws(() => decode(deepJson), (e: unknown) => e instanceof PlinthError && e.status === 400);
  });
});
