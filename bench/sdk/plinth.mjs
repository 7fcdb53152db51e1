// Builds Plinth clients for the benchmark from the BUILT packages, with one FaultTolerance rule set.
import { FaultToleranceSpec } from '../../packages/core/dist/index.js';
import { createClient } from '../../packages/sdk/dist/client/index.js';
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
