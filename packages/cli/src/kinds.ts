import { publicKinds } from '@plinth/core';

/**
 * Lets users type kinds the way they say them: `config`, `configs`, `Config`. Names this CLI does not know
 * pass through unchanged, so a newer server's kinds still work (and an unknown one gets the server's answer).
 */
export function resolveKind(input: string, known: readonly string[] = publicKinds().map((k) => k.kind)): string {
  const want = input.toLowerCase();
  for (const k of known) {
    const lower = k.toLowerCase();
    if (want === lower || want === `${lower}s` || want === `${lower}es`) return k;
    // serviceaccounts, rolebindings, policies → policy
    if (lower.endsWith('y') && want === `${lower.slice(0, -1)}ies`) return k;
  }
  return input;
}
