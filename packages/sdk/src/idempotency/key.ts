/** Longest key accepted, as Stripe and most implementations of the draft allow. */
export const MAX_KEY_LENGTH = 255;

/**
 * The key carried by an `Idempotency-Key` field value, or `undefined` when it is malformed.
 *
 * The draft makes the field an RFC 8941 sf-string (`"8e03978e-..."`), while Stripe and most clients send the bare
 * key; both are accepted and `"abc"` names the same key as `abc`. Keys are bounded and printable ASCII because
 * they end up in store keys and logs (the draft's security section asks servers to validate them).
 */
export function parseIdempotencyKey(value: string): string | undefined {
  let start = 0;
  let end = value.length;
  while (start < end && isOws(value.charCodeAt(start))) start++;
  while (end > start && isOws(value.charCodeAt(end - 1))) end--;
  if (start === end) return undefined;
  if (value.charCodeAt(start) === 0x22) return parseSfString(value, start, end);
  if (end - start > MAX_KEY_LENGTH) return undefined;
  for (let i = start; i < end; i++) if (!isPrintable(value.charCodeAt(i))) return undefined;
  return value.slice(start, end);
}

function parseSfString(value: string, start: number, end: number): string | undefined {
  let out = '';
  for (let i = start + 1; i < end; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x5c) {
      const next = value.charCodeAt(++i);
      if (next !== 0x22 && next !== 0x5c) return undefined;
      out += value[i];
    } else if (c === 0x22) {
      // The closing quote must end the value: anything after it (a second key, parameters) is not a key.
      return i === end - 1 && out.length > 0 && out.length <= MAX_KEY_LENGTH ? out : undefined;
    } else if (!isPrintable(c)) {
      return undefined;
    } else {
      out += value[i];
    }
  }
  return undefined;
}

const isOws = (c: number): boolean => c === 0x20 || c === 0x09;
const isPrintable = (c: number): boolean => c >= 0x20 && c <= 0x7e;
