import {
  API_VERSION,
  FaultInjectionSpec,
  FaultToleranceSpec,
  TrafficPolicySpec,
  type Resource,
} from '@plinth/core';
import type { z } from 'zod';

/** Resources as the control plane stores them: validated by the real schemas (defaults filled in). */
function resource<S>(kind: string, name: string, spec: S): Resource<S> {
  return {
    apiVersion: API_VERSION,
    kind,
    metadata: { namespace: 'retail', name, labels: {}, annotations: {}, revision: 1, createRevision: 1, createdAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z' },
    spec,
  };
}

export function faultTolerance(name: string, spec: z.input<typeof FaultToleranceSpec>): Resource<FaultToleranceSpec> {
  return resource('FaultTolerance', name, FaultToleranceSpec.parse(spec));
}

export function faultInjection(name: string, spec: z.input<typeof FaultInjectionSpec>): Resource<FaultInjectionSpec> {
  return resource('FaultInjection', name, FaultInjectionSpec.parse(spec));
}

export function trafficPolicy(name: string, spec: z.input<typeof TrafficPolicySpec>): Resource<TrafficPolicySpec> {
  return resource('TrafficPolicy', name, TrafficPolicySpec.parse(spec));
}

/** A random source that returns the given values in turn (then repeats the last). */
export function draws(...values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)] ?? 0;
}
