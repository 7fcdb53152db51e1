// Builds Plinth clients for the benchmark from the BUILT packages, with one FaultTolerance rule set.
import { FaultToleranceSpec } from '../../packages/core/dist/index.js';
import { createClient } from '../../packages/sdk/dist/client/index.js';
import { OutboundEngine, outboundCall } from '../../packages/sdk/dist/client/engine.js';
import { StaticGovernance } from '../../packages/sdk/dist/governance/source.js';
import { CHAIN } from './micro.mjs';

export const SELF = 'bench-caller';
export const SERVICE = 'upstream';

/** Breaker + retry + per-try timeout + outbound concurrency limit for every call to `service` (CHAIN's numbers). */
export function chainRules(service = SERVICE) {
  const now = new Date().toISOString();
  const spec = FaultToleranceSpec.parse({
    rules: [
      {
        name: `calls-to-${service}`,
        targets: [{ service }],
        strategies: [
          {
            type: 'circuitBreaker',
            strategy: 'errorRatio',
            threshold: CHAIN.breakerThresholdPercent,
            minRequestAmount: CHAIN.breakerMinRequests,
            window: { type: 'time', durationMs: CHAIN.breakerWindowMs },
            recoveryTimeoutMs: CHAIN.recoveryMs,
            scope: 'instance',
          },
          { type: 'retry', maxAttempts: CHAIN.maxAttempts },
          { type: 'timeout', timeoutMs: CHAIN.timeoutMs },
          { type: 'concurrencyLimit', maxConcurrency: CHAIN.maxConcurrency, side: 'outbound' },
        ],
      },
    ],
  });
  return {
    apiVersion: 'plinth.dev/v1',
    kind: 'FaultTolerance',
    metadata: { namespace: 'bench', name: 'bench-chain', labels: {}, annotations: {}, revision: 1, createRevision: 1, createdAt: now, updatedAt: now },
    spec,
  };
}

/** A governance source holding `addresses` as instances of `service` and the chain rules. */
export function governanceFor(addresses, service = SERVICE) {
  const governance = new StaticGovernance();
  governance.set({
    instances: addresses.map((address, i) => ({ metadata: { name: `${service}-${i}` }, spec: { service, version: '1.0.0', address } })),
    faultTolerance: [chainRules(service)],
  });
  return governance;
}

export function plinthClient({ addresses, ...options }) {
  return createClient({ self: SELF, governance: governanceFor(addresses), ...options });
}

/** The call every engine-only micro call makes: what createClient would hand the engine for a bare GET. */
const MICRO_CALL = Object.freeze(outboundCall({ method: 'GET', path: '/micro', retryable: true }));

/** What the no-op transport reports for every try: a 200 with a tiny body, as the peers' `work` answers. */
const OK = Object.freeze({
  status: 200,
  retryAfter: undefined,
  response: Object.freeze({ status: 200, headers: Object.freeze({}), body: Buffer.from('{"ok":true}') }),
  error: undefined,
  timedOut: false,
});

// The answer comes a microtask later, from a settled promise's reaction: what awaiting the peers' async
// `work` costs them (and no real transport answers within the call that sent the request).
const SETTLED = Promise.resolve();
const noopTransport = (_t, _arg, receiver) => {
  SETTLED.then(() => receiver.tryDone(OK));
};
const asResult = (r) => r;

/**
 * The policy chain alone: Plinth's OutboundEngine with the benchmark's rules over `addresses` (routing, a p2c
 * pick, instance breaker, per-try deadline, retry under budget, bulkhead), driving a transport that does
 * nothing but answer 200. The like-for-like peer of cockatiel's and opossum's chains around a no-op function.
 */
export function plinthEngine({ addresses }) {
  const engine = new OutboundEngine({ self: SELF, governance: governanceFor(addresses) });
  return {
    engine,
    call: () => engine.dispatch(SERVICE, MICRO_CALL, noopTransport, undefined, asResult),
    close() {},
  };
}
