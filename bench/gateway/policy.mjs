// The policy set the plinth gateway runs with, written to a real control plane: what a production edge in
// front of one service would carry. The benchmark's requests match a template route with JWT auth, pass a
// per-identity rate limit set high enough never to reject, a breaker and a retry rule, are evaluated against
// a lane entry rule (they stay in the base lane), and are traced at 1 %.
export const NAMESPACE = 'bench';
export const SERVICE = 'catalog';
export const PATH = '/api/items/42';

async function api(cp, method, path, body, token = cp.token) {
  const res = await fetch(cp.url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

const put = (cp, kind, name, spec) => api(cp, 'PUT', `/v1/resources/${kind}/${NAMESPACE}/${name}`, { spec });

/** Writes the resources and returns a JWT for the client the load comes from. */
export async function applyPolicy(cp, { upstreamAddress, grayAddress }) {
  await put(cp, 'ServiceAccount', 'shopper', {});
  const cred = await api(cp, 'POST', `/v1/serviceaccounts/${NAMESPACE}/shopper/credentials`, {});
  const { access_token: jwt } = await api(cp, 'POST', '/v1/auth/token', undefined, cred.token);

  await put(cp, 'Instance', 'catalog-1', { service: SERVICE, version: '1.4.0', address: upstreamAddress, leaseTtlSeconds: 3600 });
  await put(cp, 'Instance', 'catalog-gray-1', { service: SERVICE, version: '1.5.0-rc.1', address: grayAddress, lane: 'gray', leaseTtlSeconds: 3600 });

  // Several routes, so that matching picks among templates, prefixes and exact paths as a real edge does.
  const routes = {
    items: { match: { path: { template: '/api/items/:id' }, methods: ['GET', 'HEAD'] }, service: SERVICE, timeoutMs: 5000 },
    'items-write': { match: { path: { template: '/api/items/:id' }, methods: ['PUT', 'DELETE'] }, service: SERVICE, timeoutMs: 5000 },
    search: { match: { path: { exact: '/api/items' } }, service: SERVICE, timeoutMs: 5000 },
    reviews: { match: { path: { template: '/api/items/:id/reviews/:review' } }, service: SERVICE },
    carts: { match: { path: { prefix: '/api/carts' } }, service: SERVICE, rewrite: { prefix: '/carts' } },
    orders: { match: { path: { prefix: '/api/orders' }, methods: ['GET', 'POST'] }, service: SERVICE, retries: { attempts: 2 } },
    users: { match: { path: { template: '/api/users/:id' } }, service: SERVICE, auth: { mode: 'any' } },
    v2: { match: { path: { prefix: '/v2' }, headers: { 'x-api-version': { exact: '2' } } }, service: SERVICE },
    assets: { match: { path: { regex: '^/assets/[a-z0-9]+\\.(css|js)$' } }, service: SERVICE, auth: { mode: 'anonymous' } },
    health: { match: { path: { exact: '/healthz' } }, static: { status: 200, body: 'ok', headers: { 'content-type': 'text/plain' } }, auth: { mode: 'anonymous' } },
  };
  for (const [name, spec] of Object.entries(routes)) await put(cp, 'Route', name, spec);

  await put(cp, 'FaultTolerance', 'catalog-protect', {
    rules: [
      {
        name: 'per-client-limit',
        targets: [{ service: SERVICE }],
        // A real limit, per caller identity, high enough that the benchmark never reaches it.
        strategies: [{ type: 'rateLimit', threshold: 1_000_000, statDurationSec: 1, key: { source: 'identity' } }],
      },
      {
        name: 'catalog-calls',
        targets: [{ service: SERVICE }],
        strategies: [
          { type: 'circuitBreaker', strategy: 'errorRatio', threshold: 50, minRequestAmount: 20, window: { type: 'time', durationMs: 10_000 } },
          { type: 'retry', maxAttempts: 2 },
        ],
      },
    ],
  });
  await put(cp, 'TrafficPolicy', 'lanes', {
    lanes: [{ name: 'gray', services: [SERVICE], mode: 'fallbackToBase', entry: [{ match: { headers: { 'x-lane': { exact: 'gray' } } } }] }],
  });
  return { jwt };
}
