import { z } from 'zod';
import { dnsName, stringMap } from './common.js';

export const CONFIG_FORMATS = ['text', 'json', 'yaml', 'properties'] as const;
export type ConfigFormat = (typeof CONFIG_FORMATS)[number];
export const MAX_CONFIG_CONTENT = 512 * 1024;

/** Which part of the fleet sees a gray variant: any listed lane, instance name, or all labels matching. */
export const GrayMatch = z
  .strictObject({
    lanes: z.array(dnsName).max(64).optional(),
    instances: z.array(dnsName).max(1024).optional(),
    labels: stringMap.optional(),
  })
  .refine((m) => (m.lanes?.length ?? 0) + (m.instances?.length ?? 0) + Object.keys(m.labels ?? {}).length > 0, {
    message: 'expected at least one of lanes, instances or labels',
  });
export type GrayMatch = z.infer<typeof GrayMatch>;

export const ConfigSpec = z.strictObject({
  format: z.enum(CONFIG_FORMATS).default('text'),
  content: z.string().max(MAX_CONFIG_CONTENT),
  /** Optional JSON Schema the parsed content (json, yaml, properties) must satisfy. */
  schema: z.record(z.string(), z.unknown()).optional(),
  /** Alternative content for part of the fleet, tried before a change goes everywhere. First match wins. */
  gray: z
    .array(
      z.strictObject({
        name: dnsName,
        match: GrayMatch,
        content: z.string().max(MAX_CONFIG_CONTENT),
      }),
    )
    .max(32)
    .optional(),
});
export type ConfigSpec = z.infer<typeof ConfigSpec>;

/** What a config consumer is, for choosing its gray variant. */
export interface ConfigTarget {
  lane?: string | undefined;
  instance?: string | undefined;
  labels?: Readonly<Record<string, string>> | undefined;
}

export interface ResolvedConfig {
  content: string;
  /** Name of the gray variant chosen, or undefined for the main content. */
  variant: string | undefined;
}

export function resolveConfig(spec: Pick<ConfigSpec, 'content' | 'gray'>, target: ConfigTarget): ResolvedConfig {
  for (const g of spec.gray ?? []) {
    const m = g.match;
    if (target.lane !== undefined && m.lanes?.includes(target.lane)) return { content: g.content, variant: g.name };
    if (target.instance !== undefined && m.instances?.includes(target.instance)) return { content: g.content, variant: g.name };
    const wanted = Object.entries(m.labels ?? {});
    if (wanted.length > 0 && target.labels && wanted.every(([k, v]) => target.labels?.[k] === v)) {
      return { content: g.content, variant: g.name };
    }
  }
  return { content: spec.content, variant: undefined };
}
