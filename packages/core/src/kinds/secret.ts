import { z } from 'zod';

export const MAX_SECRET_VALUE = 64 * 1024;

/** A Secret as written by a client: plain values, sealed by the server before they are stored. */
export const SecretSpec = z.strictObject({
  type: z.string().max(128).optional(),
  data: z.record(z.string().min(1).max(253).regex(/^[-._a-zA-Z0-9]+$/, "expected letters, digits, '-', '_' or '.'"), z.string().max(MAX_SECRET_VALUE)),
});
export type SecretSpec = z.infer<typeof SecretSpec>;

/** A Secret as stored and listed: key names only; values sealed with AES-256-GCM. */
export interface SealedSecretSpec {
  type?: string;
  keys: string[];
  sealed: { kid: string; iv: string; tag: string; data: string };
}

/** A Secret as shown to a caller: keys always, values only to a caller granted `reveal`. */
export interface ShownSecretSpec {
  type?: string;
  keys: string[];
  data?: Record<string, string>;
}
