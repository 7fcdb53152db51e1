// What JSON must escape, and surrogates: a lone one must be escaped for the text to stay well-formed UTF-8.
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * `s` as a JSON string literal, what `JSON.stringify(s)` gives. Text with nothing to escape (ids, names,
 * paths: nearly all of it) is only quoted, which skips JSON.stringify's copy on hot paths that write JSON by
 * hand (the gateway's access log, the SDK's span encoder).
 */
export function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}
