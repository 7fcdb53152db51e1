import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bucketOf } from '@plinth/core';
import { normalizePath, RouteTable } from './routes.js';
import { route } from './testkit.test.helpers.js';

function table(...routes: [string, Record<string, unknown>][]): RouteTable {
  return new RouteTable(routes.map(([n, s]) => route(n, { service: 'svc', ...s })));
}

function hit(t: RouteTable, path: string, o: { host?: string; method?: string; headers?: Record<string, string>; query?: string } = {}): string | undefined {
  return t.match(o.host ?? 'example.com', o.method ?? 'GET', path, o.headers ?? {}, o.query ?? '')?.route.name;
}

describe('route matching', () => {
  it('matches exact, prefix at segment boundaries, regex and templates', () => {
    const t = table(['exact', { match: { path: { exact: '/health' } } }], ['prefix', { match: { path: { prefix: '/api' } } }], ['regex', { match: { path: { regex: '^/v[0-9]+/x$' } } }], ['tpl', { match: { path: { template: '/orders/:id/items/:item' } } }]);
    assert.equal(hit(t, '/health'), 'exact');
    assert.equal(hit(t, '/health/x'), undefined);
    assert.equal(hit(t, '/api'), 'prefix');
    assert.equal(hit(t, '/api/orders'), 'prefix');
    assert.equal(hit(t, '/apix'), undefined);
    assert.equal(hit(t, '/v2/x'), 'regex');
    assert.equal(hit(t, '/orders/7/items/9'), 'tpl');
    assert.equal(hit(t, '/orders//items/9'), undefined, 'a parameter is never empty');
    assert.equal(hit(t, '/orders/7/items/9/more'), undefined);
    assert.deepEqual(t.match('example.com', 'GET', '/orders/7/items/9', {})?.params, ['7', '9']);
  });

  it('chooses the most specific route: exact, then longest literal, template before prefix, regex last, then conditions, then priority', () => {
    const t = table(
      ['short-prefix', { match: { path: { prefix: '/api' } }, priority: 100 }],
      ['long-prefix', { match: { path: { prefix: '/api/orders' } } }],
      ['tpl', { match: { path: { template: '/api/orders/:id' } } }],
      ['exact', { match: { path: { exact: '/api/orders/special' } } }],
      ['regex', { match: { path: { regex: '^/api/.*$' } }, priority: 1000 }],
      ['with-method', { match: { path: { prefix: '/api/orders' }, methods: ['POST'] } }],
      ['low', { match: { path: { prefix: '/shop' } }, priority: -1 }],
      ['high', { match: { path: { prefix: '/shop' } }, priority: 5 }],
    );
    assert.equal(hit(t, '/api/orders/special'), 'exact');
    assert.equal(hit(t, '/api/orders/7'), 'tpl');
    assert.equal(hit(t, '/api/orders/7/x'), 'long-prefix');
    assert.equal(hit(t, '/api/orders/7/x', { method: 'POST' }), 'with-method');
    assert.equal(hit(t, '/api/other'), 'short-prefix', 'a longer literal beats priority; regex comes after prefixes');
    assert.equal(hit(t, '/shop/a'), 'high', 'equally specific: priority decides');
  });

  it('matches hosts exactly, by wildcard, or any; exact host first', () => {
    const t = table(['exact', { hosts: ['api.example.com'], match: { path: { prefix: '/' } } }], ['wild', { hosts: ['*.example.com'], match: { path: { prefix: '/' } } }], ['any', { match: { path: { prefix: '/' } } }]);
    assert.equal(hit(t, '/x', { host: 'api.example.com' }), 'exact');
    assert.equal(hit(t, '/x', { host: 'shop.example.com' }), 'wild');
    assert.equal(hit(t, '/x', { host: 'a.b.example.com' }), 'wild');
    assert.equal(hit(t, '/x', { host: 'example.com' }), 'any', 'the wildcard needs a label in front');
    assert.equal(hit(t, '/x', { host: 'other.org' }), 'any');
  });

  it('checks methods and headers (case-insensitive names)', () => {
    const t = table(['tenant', { match: { path: { prefix: '/' }, methods: ['GET'], headers: { 'X-Tenant': { exact: 'acme' } } } }]);
    assert.equal(hit(t, '/a', { headers: { 'x-tenant': 'acme' } }), 'tenant');
    assert.equal(hit(t, '/a', { headers: { 'x-tenant': 'other' } }), undefined);
    assert.equal(hit(t, '/a', { method: 'POST', headers: { 'x-tenant': 'acme' } }), undefined);
  });

  it('checks query parameters: exact names, the first value percent-decoded, absent fails; more conditions win', () => {
    const t = table(
      ['variant-b', { match: { path: { prefix: '/shop' }, query: { variant: { exact: 'b' } } } }],
      ['b-and-ad', { match: { path: { prefix: '/shop' }, query: { variant: { exact: 'b' }, 'utm source': { prefix: 'ad' } } } }],
      ['debug', { match: { path: { prefix: '/shop' }, query: { debug: { regex: '^(1|true)$' } } } }],
      ['plain', { match: { path: { prefix: '/shop' } } }],
    );
    assert.equal(hit(t, '/shop/a', { query: '?variant=b' }), 'variant-b');
    assert.equal(hit(t, '/shop/a', { query: '?x=1&variant=%62' }), 'variant-b', 'values are compared decoded');
    assert.equal(hit(t, '/shop/a', { query: '?variant=b&utm+source=adwords' }), 'b-and-ad', 'names decode too (+ is a space); two conditions beat one');
    assert.equal(hit(t, '/shop/a', { query: '?variant=a&variant=b' }), 'plain', 'the first value decides');
    assert.equal(hit(t, '/shop/a', { query: '?Variant=b' }), 'plain', 'names are case-sensitive');
    assert.equal(hit(t, '/shop/a', { query: '?debug=true' }), 'debug');
    assert.equal(hit(t, '/shop/a', { query: '?debug=yes' }), 'plain');
    assert.equal(hit(t, '/shop/a'), 'plain', 'an absent parameter fails its condition');
    assert.equal(hit(t, '/shop/a', { query: '?variant=%zz&debug=1' }), 'debug', 'a malformed escape is kept as it is, not an error');
  });

  it('splits traffic across services by weight, at random or sticky by identity or address', () => {
    const tableOf = (stickyBy?: string) => new RouteTable([route('mig', { match: { path: { prefix: '/' } }, split: { backends: [{ service: 'old', weight: 70 }, { service: 'new', weight: 30 }, { service: 'off', weight: 0 }], ...(stickyBy ? { stickyBy } : {}) } })]);
    const split = (stickyBy?: string) => tableOf(stickyBy).routes[0]!;
    const random = split();
    assert.equal(random.service, undefined);
    assert.deepEqual(tableOf().services().sort(), ['new', 'off', 'old'], 'every backend is a service the gateway watches');
    const counts = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const s = random.serviceFor(undefined, undefined)!;
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    assert.equal(counts.get('off'), undefined, 'a backend of weight 0 takes nothing');
    // 30 % of 10,000 draws: a standard deviation of about 46.
    assert.ok(Math.abs((counts.get('new') ?? 0) - 3000) < 400, `new took ${counts.get('new')}`);

    const byIdentity = split('identity');
    const users = Array.from({ length: 2000 }, (_, i) => `User:u${i}`);
    const first = users.map((u) => byIdentity.serviceFor(u, '10.0.0.1'));
    assert.deepEqual(users.map((u) => byIdentity.serviceFor(u, '10.0.0.2')), first, 'one caller stays on one backend, whatever its address');
    const share = first.filter((s) => s === 'new').length / users.length;
    assert.ok(share > 0.25 && share < 0.35, `sticky share of new: ${share}`);
    assert.equal(byIdentity.serviceFor('User:u7', undefined), bucketOf('edge/mig:User:u7') < 7000 ? 'old' : 'new', 'the bucket is the hash of the route and the caller');

    const byIp = split('clientIp');
    assert.equal(new Set(Array.from({ length: 50 }, () => byIp.serviceFor('User:a', '192.0.2.7'))).size, 1);
    assert.equal(new Set(Array.from({ length: 50 }, (_, i) => byIp.serviceFor('User:a', `192.0.2.${i}`))).size, 2, 'addresses spread over both live backends');
  });

  it('rewrites a prefix and a template path', () => {
    const t = new RouteTable([
      route('p', { service: 's', match: { path: { prefix: '/api' } }, rewrite: { prefix: '/' } }),
      route('q', { service: 's', match: { path: { prefix: '/v1/' } }, rewrite: { prefix: '/internal/v1' } }),
      route('t', { service: 's', match: { path: { template: '/o/:id' } }, rewrite: { path: '/orders/:id/detail' } }),
    ]);
    const rw = (path: string) => {
      const m = t.match('h', 'GET', path, {})!;
      return m.route.rewrite(path, m.params);
    };
    assert.equal(rw('/api/orders'), '/orders');
    assert.equal(rw('/api'), '/');
    assert.equal(rw('/v1/x'), '/internal/v1/x');
    assert.equal(rw('/o/42'), '/orders/42/detail');
  });

  it('skips a route it cannot read and says why, keeping the others', () => {
    const t = new RouteTable([route('bad', { match: { path: {} } }), route('good', { service: 's', match: { path: { exact: '/' } } })]);
    assert.equal(t.routes.length, 1);
    assert.match(t.errors[0] ?? '', /edge\/bad/);
  });

  it('resolves dot segments, encoded ones too, so they cannot dodge a route', () => {
    assert.equal(normalizePath('/a/../admin'), '/admin');
    assert.equal(normalizePath('/a/%2e%2E/admin'), '/admin');
    assert.equal(normalizePath('/a/./b/'), '/a/b/');
    assert.equal(normalizePath('/../../x'), '/x');
    assert.equal(normalizePath('/plain/path'), '/plain/path');
  });
});

describe('route redirects', () => {
  const anon = { auth: { mode: 'anonymous' } };
  const redirectOf = (match: Record<string, unknown>, redirect: Record<string, unknown>) => {
    const t = new RouteTable([route('r', { ...anon, match: { path: match }, redirect })]);
    return t.routes[0]!.redirect!;
  };

  it('keeps what it does not set: the scheme, host, port, path and query the client used', () => {
    const https = redirectOf({ prefix: '/' }, { scheme: 'https' });
    assert.equal(https.status, 302);
    assert.equal(https.location('http', 'shop.example.com', '/cart', [], '?x=1'), 'https://shop.example.com/cart?x=1');
    assert.equal(https.location('http', 'shop.example.com:8080', '/cart', [], ''), 'https://shop.example.com/cart', "a scheme set takes its own port, the well-known one, left out");
    const host = redirectOf({ prefix: '/' }, { host: 'www.example.com', status: 301 });
    assert.equal(host.location('https', 'example.com:8443', '/a', [], ''), 'https://www.example.com:8443/a', 'no scheme set: the port the client used');
    assert.equal(host.location('http', 'example.com:80', '/a', [], ''), 'http://www.example.com/a', "the scheme's own port is left out");
    const port = redirectOf({ prefix: '/' }, { scheme: 'https', port: 8443 });
    assert.equal(port.location('http', '[::1]:8080', '/a', [], ''), 'https://[::1]:8443/a');
  });

  it('builds the path as a rewrite would: the prefix replaced, or a template filled', () => {
    const prefix = redirectOf({ prefix: '/old' }, { prefix: '/new' });
    assert.equal(prefix.location('https', 'shop.example.com', '/old/items/7', [], '?a=b'), 'https://shop.example.com/new/items/7?a=b');
    assert.equal(prefix.location('https', 'shop.example.com', '/old', [], ''), 'https://shop.example.com/new');
    const t = new RouteTable([route('r', { ...anon, match: { path: { template: '/item/:id' } }, redirect: { path: '/products/:id', status: 308 } })]);
    const m = t.match('shop.example.com', 'GET', '/item/42', {})!;
    assert.equal(m.route.redirect!.location('https', 'shop.example.com', '/item/42', m.params, ''), 'https://shop.example.com/products/42');
  });

  it('never makes a Location of a Host header that is no host name', () => {
    const r = redirectOf({ prefix: '/' }, { scheme: 'https' });
    for (const bad of ['evil.example/x', 'a@evil.example', 'shop.example.com:99999', '', 'shop example', '//evil.example']) {
      assert.equal(r.location('http', bad, '/a', [], ''), undefined, bad);
    }
    const fixed = redirectOf({ prefix: '/' }, { scheme: 'https', host: 'shop.example.com' });
    assert.equal(fixed.location('http', 'a@evil.example', '/a', [], ''), 'https://shop.example.com/a', 'a redirect that names scheme and host needs nothing of it');
  });
});
