import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { templateParams, type RouteSpec } from './route.js';
import { edit, specErrors, specFields, validateSpec } from './validation.test.helpers.js';

const validate = (spec: unknown): RouteSpec => validateSpec('Route', spec, 'edge') as RouteSpec;
const errorsOf = (spec: unknown) => specErrors('Route', spec, 'edge');
const fieldsOf = (spec: unknown): string[] => specFields('Route', spec, 'edge');

const full = {
  hosts: ['shop.example.com', '*.example.com'],
  match: { path: { template: '/orders/:id' }, methods: ['GET', 'PUT'], headers: { 'x-tenant': { prefix: 'acme' } }, query: { variant: { exact: 'b' }, 'utm source': { regex: '^ad' } } },
  service: 'orders',
  rewrite: { path: '/v2/orders/:id' },
  timeoutMs: 2000,
  streamIdleTimeoutMs: 30000,
  requestHeaders: { set: { 'x-tenant': 'acme' }, add: { 'x-tag': 'edge' }, remove: ['x-debug'] },
  responseHeaders: { set: { 'cache-control': 'no-store' }, remove: ['server'] },
  mirror: { service: 'orders-next', percent: 25 },
  clientIps: { allow: ['10.0.0.0/8', '2001:db8::/32', '192.168.1.7'], deny: ['10.66.0.0/16'] },
  retries: { attempts: 3, on: [503, '5xx'] },
  maxBodyBytes: 65536,
  compression: { encodings: ['gzip'], types: ['application/json', 'text/*'], minBytes: 256 },
  grpcWeb: 'passthrough',
  cors: { allowOrigins: ['https://shop.example.com'], allowMethods: ['GET', 'PUT'], allowHeaders: ['content-type'], exposeHeaders: ['x-request-id'], allowCredentials: true, maxAgeSec: 300 },
  auth: { mode: 'any', audiences: ['plinth'], requiredRoles: ['shopper'] },
  priority: 10,
};

describe('Route', () => {
  it('accepts a full route and keeps every field', () => {
    assert.deepEqual(validate(full), full);
  });

  it('takes retries on any kind of path, a regex included (the engine applies them per call)', () => {
    assert.equal(validate({ match: { path: { regex: '^/o/[0-9]+$' } }, service: 'api', retries: { attempts: 2 } }).retries?.attempts, 2);
  });

  it('fills the defaults: jwt auth, 1 MiB body limit, priority 0, retry statuses, CORS defaults, gRPC-Web translated', () => {
    const r = validate({ match: { path: { prefix: '/api' } }, service: 'api', retries: { attempts: 2 }, cors: { allowOrigins: ['*'] } });
    assert.deepEqual(r.auth, { mode: 'jwt' });
    assert.equal(r.maxBodyBytes, 1024 * 1024);
    assert.equal(r.priority, 0);
    assert.equal(r.grpcWeb, 'translate');
    assert.deepEqual(r.retries?.on, [502, 503, 504]);
    assert.deepEqual(r.cors, { allowOrigins: ['*'], allowMethods: ['GET', 'HEAD', 'POST'], allowHeaders: [], exposeHeaders: [], allowCredentials: false, maxAgeSec: 600 });
  });

  it('accepts a client-certificate route with trust domains and roles', () => {
    const auth = { mode: 'mtls', trustDomains: ['prod.example.com'], requiredRoles: ['billing'] };
    assert.deepEqual(validate({ match: { path: { prefix: '/internal' } }, service: 'api', auth }).auth, auth);
  });

  it('accepts a static answer', () => {
    const r = validate({ match: { path: { exact: '/robots.txt' } }, static: { status: 200, body: 'User-agent: *' }, auth: { mode: 'anonymous' } });
    assert.deepEqual(r.static, { status: 200, body: 'User-agent: *', headers: {} });
  });

  it('accepts external authorization with its defaults', () => {
    const r = validate({ match: { path: { prefix: '/' } }, service: 'shop', auth: { mode: 'external', external: { service: 'oauth2-proxy', path: '/oauth2/auth' } } });
    assert.deepEqual(r.auth.external, { service: 'oauth2-proxy', path: '/oauth2/auth', requestHeaders: ['authorization', 'cookie'], upstreamHeaders: [], clientHeaders: ['www-authenticate', 'location', 'set-cookie'], timeoutMs: 1000 });
  });

  it('accepts a split of traffic across services, random unless sticky', () => {
    const split = { backends: [{ service: 'checkout', weight: 90 }, { service: 'checkout-next', weight: 10 }] };
    assert.deepEqual(validate({ match: { path: { prefix: '/checkout' } }, split }).split, split);
    const sticky = { backends: [{ service: 'a', weight: 0 }, { service: 'b', weight: 100 }], stickyBy: 'identity' };
    assert.deepEqual(validate({ match: { path: { prefix: '/' } }, split: sticky }).split, sticky);
  });

  it('accepts a redirect, 302 unless told', () => {
    const r = validate({ match: { path: { prefix: '/' } }, redirect: { scheme: 'https' }, auth: { mode: 'anonymous' } });
    assert.deepEqual(r.redirect, { scheme: 'https', status: 302 });
    const moved = validate({ match: { path: { template: '/item/:id' } }, redirect: { host: 'shop.example.com', port: 8443, path: '/products/:id', status: 308 }, auth: { mode: 'anonymous' } });
    assert.deepEqual(moved.redirect, { host: 'shop.example.com', port: 8443, path: '/products/:id', status: 308 });
  });

  it('names the field of each mistake as a user reads it', () => {
    const cases: [unknown, string[]][] = [
      [edit(full, (d) => (d.match.path = {}, delete d.rewrite, delete d.retries)), ['spec.match.path']],
      [edit(full, (d) => (d.match.path = { exact: '/a', prefix: '/a' }, delete d.rewrite, delete d.retries)), ['spec.match.path']],
      [edit(full, (d) => (d.match.path = { regex: '([' }, delete d.rewrite, delete d.retries)), ['spec.match.path.regex']],
      [edit(full, (d) => (d.match.path = { template: '/orders/x:id' }, delete d.rewrite, delete d.retries)), ['spec.match.path.template']],
      [edit(full, (d) => (d.match.path = { template: '/a/:id/:id' }, delete d.rewrite, delete d.retries)), ['spec.match.path.template']],
      [edit(full, (d) => (d.match.path.tempalte = '/x')), ['spec.match.path']],
      [edit(full, (d) => (d.hosts = ['Shop.Example.com'])), ['spec.hosts[0]']],
      [edit(full, (d) => (d.hosts = ['a.*.com'])), ['spec.hosts[0]']],
      [edit(full, (d) => (d.static = { status: 200 })), ['spec.service', 'spec.rewrite', 'spec.timeoutMs', 'spec.streamIdleTimeoutMs', 'spec.retries', 'spec.requestHeaders', 'spec.responseHeaders', 'spec.mirror', 'spec.compression']],
      [edit(full, (d) => (d.mirror = { service: 'Orders', percent: 101 })), ['spec.mirror.service', 'spec.mirror.percent']],
      [edit(full, (d) => (d.clientIps = { allow: ['10.0.0.0/33', '10.0.0.0/x', 'localhost', '::1/129'] })), ['spec.clientIps.allow[0]', 'spec.clientIps.allow[1]', 'spec.clientIps.allow[2]', 'spec.clientIps.allow[3]']],
      [edit(full, (d) => (d.clientIps = {})), ['spec.clientIps']],
      [edit(full, (d) => (d.auth = { mode: 'oidc' })), ['spec.auth.oidc']],
      [edit(full, (d) => (d.auth = { mode: 'oidc', oidc: { issuer: 'shop-idp', audiences: ['web'] } })), ['spec.auth.oidc.issuer']],
      [edit(full, (d) => (d.auth = { mode: 'jwt', oidc: { issuer: 'https://idp', jwksUri: 'https://idp/keys', audiences: ['web'] } })), ['spec.auth.oidc']],
      [
        edit(full, (d) => (d.auth = { mode: 'oidc', requiredRoles: ['shopper'], oidc: { issuer: 'https://idp', jwksUri: 'http://idp.example.com/keys', audiences: ['web'], claimHeaders: { email: 'plinth-email', tenant: 'x-tenant' } } })),
        ['spec.auth.oidc.jwksUri', 'spec.auth.oidc.claimHeaders.email', 'spec.auth.requiredRoles', 'spec.auth.oidc.claimHeaders.tenant'],
      ],
      [edit(full, (d) => (d.streamIdleTimeoutMs = 0)), ['spec.streamIdleTimeoutMs']],
      // What the gateway owns on the request (forwarding, trace, identity, deadline), whatever the case.
      [edit(full, (d) => (d.requestHeaders = { set: { 'X-Forwarded-For': '10.0.0.1' } })), ['spec.requestHeaders.set["X-Forwarded-For"]']],
      [edit(full, (d) => (d.requestHeaders = { set: { 'plinth-identity': 'ServiceAccount:x/admin' } })), ['spec.requestHeaders.set["plinth-identity"]']],
      [edit(full, (d) => (d.requestHeaders = { add: { traceparent: 'x' }, remove: ['host'] })), ['spec.requestHeaders.add.traceparent', 'spec.requestHeaders.remove[0]']],
      [edit(full, (d) => (d.responseHeaders = { set: { 'grpc-status': '0' }, remove: ['Content-Length'] })), ['spec.responseHeaders.set["grpc-status"]', 'spec.responseHeaders.remove[0]']],
      [edit(full, (d) => (d.requestHeaders = { set: { 'x-a': '1' }, remove: ['X-A'] })), ['spec.requestHeaders.remove[0]']],
      [edit(full, (d) => (d.requestHeaders = { set: { 'x-a': 'one\r\nx-injected: 1' } })), ['spec.requestHeaders.set["x-a"]']],
      [edit(full, (d) => (d.requestHeaders = { set: { 'bad name': '1' } })), ['spec.requestHeaders.set["bad name"]']],
      [edit(full, (d) => delete d.service), ['spec.service']],
      [edit(full, (d) => (d.split = { backends: [{ service: 'a', weight: 50 }, { service: 'b', weight: 50 }] })), ['spec.service']],
      [edit(full, (d) => (delete d.service, d.split = { backends: [{ service: 'a', weight: 50 }, { service: 'b', weight: 40 }] })), ['spec.split.backends']],
      [edit(full, (d) => (delete d.service, d.split = { backends: [{ service: 'a', weight: 50 }, { service: 'a', weight: 50 }] })), ['spec.split.backends[1].service']],
      [edit(full, (d) => (delete d.service, d.split = { backends: [{ service: 'a', weight: 100 }] })), ['spec.split.backends']],
      [edit(full, (d) => (delete d.service, d.split = { backends: [{ service: 'A', weight: 101 }, { service: 'b', weight: 0 }], stickyBy: 'cookie' })), ['spec.split.backends[0].service', 'spec.split.backends[0].weight', 'spec.split.stickyBy']],
      [edit(full, (d) => (d.match.query = { '': { exact: 'x' }, v: { exact: 'a', regex: 'b' } })), ['spec.match.query[""]', 'spec.match.query.v']],
      [edit(full, (d) => (d.compression = { encodings: ['gzip', 'zstd'], types: ['JSON', 'application/*x'], minBytes: -1 })), ['spec.compression.encodings[1]', 'spec.compression.types[0]', 'spec.compression.types[1]', 'spec.compression.minBytes']],
      [edit(full, (d) => (d.compression = { encodings: ['gzip', 'gzip'] })), ['spec.compression.encodings']],
      [edit(full, (d) => (d.auth = { mode: 'external' })), ['spec.auth.external']],
      [edit(full, (d) => (d.auth = { mode: 'jwt', external: { service: 'authz' } })), ['spec.auth.external']],
      [edit(full, (d) => (d.auth = { mode: 'external', requiredRoles: ['x'], external: { service: 'authz' } })), ['spec.auth.requiredRoles']],
      [
        edit(full, (d) => (d.auth = { mode: 'external', external: { service: 'Authz', path: 'check', timeoutMs: 0 } })),
        ['spec.auth.external.service', 'spec.auth.external.path', 'spec.auth.external.timeoutMs'],
      ],
      [
        edit(full, (d) => (d.auth = { mode: 'external', external: { service: 'authz', requestHeaders: ['Host', 'plinth-identity'], upstreamHeaders: ['x-forwarded-for', 'x-tenant'], userHeader: 'cookie' } })),
        ['spec.auth.external.requestHeaders[0]', 'spec.auth.external.requestHeaders[1]', 'spec.auth.external.upstreamHeaders[0]', 'spec.auth.external.userHeader', 'spec.auth.external'],
      ],
      [edit(full, (d) => (d.redirect = { scheme: 'https' })), ['spec.service', 'spec.rewrite', 'spec.timeoutMs', 'spec.streamIdleTimeoutMs', 'spec.retries', 'spec.requestHeaders', 'spec.responseHeaders', 'spec.mirror', 'spec.compression']],
      [edit(full, (d) => (delete d.service, delete d.rewrite, delete d.timeoutMs, delete d.streamIdleTimeoutMs, delete d.retries, delete d.requestHeaders, delete d.responseHeaders, delete d.mirror, delete d.compression, (d.redirect = {}))), ['spec.redirect']],
      [
        edit(full, (d) => (delete d.service, delete d.rewrite, delete d.timeoutMs, delete d.streamIdleTimeoutMs, delete d.retries, delete d.requestHeaders, delete d.responseHeaders, delete d.mirror, delete d.compression, (d.redirect = { scheme: 'ftp', host: '*.example.com', port: 0, status: 200 }))),
        ['spec.redirect.scheme', 'spec.redirect.host', 'spec.redirect.port', 'spec.redirect.status'],
      ],
      // On a template route: a prefix to replace there is not, a parameter it does not have, and both ways at once.
      [
        edit(full, (d) => (delete d.service, delete d.rewrite, delete d.timeoutMs, delete d.streamIdleTimeoutMs, delete d.retries, delete d.requestHeaders, delete d.responseHeaders, delete d.mirror, delete d.compression, (d.redirect = { prefix: '/v2', path: '/p/:sku' }))),
        ['spec.redirect.path', 'spec.redirect.prefix', 'spec.redirect.path'],
      ],
      [edit(full, (d) => (d.rewrite = { path: '/v2/:order' })), ['spec.rewrite.path']],
      [edit(full, (d) => (d.rewrite = { prefix: '/v2' })), ['spec.rewrite.prefix']],
      [edit(full, (d) => (d.rewrite = { prefix: '/v2', path: '/x' })), ['spec.rewrite', 'spec.rewrite.prefix']],
      [edit(full, (d) => (d.retries = { attempts: 11 })), ['spec.retries.attempts']],
      [edit(full, (d) => (d.maxBodyBytes = -1)), ['spec.maxBodyBytes']],
      [edit(full, (d) => (d.grpcWeb = 'proxy')), ['spec.grpcWeb']],
      [edit(full, (d) => (d.cors.allowOrigins = ['*'])), ['spec.cors.allowCredentials']],
      [edit(full, (d) => (d.cors.allowOrigins = ['shop.example.com'])), ['spec.cors.allowOrigins[0]']],
      [edit(full, (d) => (d.auth = { mode: 'anonymous', requiredRoles: ['x'] })), ['spec.auth.requiredRoles']],
      [edit(full, (d) => (d.auth.mode = 'basic')), ['spec.auth.mode']],
      [edit(full, (d) => (d.auth = { mode: 'mtls', audiences: ['plinth'] })), ['spec.auth.audiences']],
      [edit(full, (d) => (d.auth = { mode: 'jwt', trustDomains: ['prod.example.com'] })), ['spec.auth.trustDomains']],
      [edit(full, (d) => (d.auth = { mode: 'mtls', trustDomains: ['spiffe://prod.example.com'] })), ['spec.auth.trustDomains[0]']],
      [edit(full, (d) => (d.match.methods = ['FETCH'])), ['spec.match.methods[0]']],
      [edit(full, (d) => (d.timeotuMs = 5)), ['spec']],
    ];
    for (const [spec, fields] of cases) assert.deepEqual(fieldsOf(spec), fields, JSON.stringify(spec));
  });

  it('reports an unknown field at the object that holds it', () => {
    const errs = errorsOf(edit(full, (d) => (d.cors.allowOrigin = ['*'])));
    assert.deepEqual(errs, [{ field: 'spec.cors', message: 'unknown field(s): allowOrigin' }]);
  });

  it('lists template parameters in order', () => {
    assert.deepEqual(templateParams('/shops/:shop/orders/:id'), ['shop', 'id']);
    assert.deepEqual(templateParams('/health'), []);
  });
});
