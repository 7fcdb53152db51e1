import { z } from 'zod';
import { dnsName, shortText, stringMap } from './common.js';

/** A service as its owning team declares it: who owns it and what its consumers may expect. */
export const ServiceSpec = z.strictObject({
  team: z.string().min(1).max(128),
  description: shortText.optional(),
  /** API versions the service offers, e.g. ["v1", "v2"]. */
  apiVersions: z.array(z.string().min(1).max(64)).max(64).optional(),
  /** Latency budget promised to consumers (p99, milliseconds). */
  latencyBudgetMs: z.number().positive().max(600_000).optional(),
  owners: z.array(z.string().min(1).max(256)).max(64).optional(),
});
export type ServiceSpec = z.infer<typeof ServiceSpec>;

export const HEALTH = ['passing', 'warning', 'critical'] as const;
export type Health = (typeof HEALTH)[number];

/** One running copy of a service. It lives as long as its lease is renewed. */
export const InstanceSpec = z.strictObject({
  service: dnsName,
  version: z.string().min(1).max(128),
  /** Traffic lane (full-link gray release); absent means the base lane. */
  lane: dnsName.optional(),
  zone: z.string().min(1).max(128).optional(),
  region: z.string().min(1).max(128).optional(),
  weight: z.int().min(0).max(10_000).default(100),
  /** host:port, or a URL such as http://10.0.0.7:8080. */
  address: z.string().min(1).max(2048),
  metadata: stringMap.default({}),
  health: z.enum(HEALTH).default('passing'),
  /** A draining instance finishes in-flight work and receives no new calls. */
  draining: z.boolean().default(false),
  /** Seconds without a renewal after which the instance is removed. */
  leaseTtlSeconds: z.int().min(1).max(3600).default(15),
});
export type InstanceSpec = z.infer<typeof InstanceSpec>;

/** Label the server puts on every Instance so that `plinth.dev/service=<name>` selects a service's fleet. */
export const SERVICE_LABEL = 'plinth.dev/service';
export const LANE_LABEL = 'plinth.dev/lane';
/**
 * Instance metadata naming how a plain (http://, host:port) address is spoken to: `h2c` for cleartext HTTP/2
 * with prior knowledge (gRPC servers without TLS); absent or `http`: HTTP/1.1. Over https://, ALPN decides.
 */
export const PROTOCOL_METADATA = 'plinth.dev/protocol';
