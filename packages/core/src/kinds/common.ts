import { z } from 'zod';

export const dnsName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, "expected lower-case letters, digits, '-' or '.'");
export const shortText = z.string().max(1024);
export const stringMap = z.record(z.string().max(253), z.string().max(4096));
export const percent = z.number().min(0).max(100);
