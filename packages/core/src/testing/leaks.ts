/**
 * Test support, not part of the library (left out of the published package): what the leak tests of the
 * server, the SDK and the gateway measure after each round of requests, and the verdict on the rounds.
 * A process that serves for months must end every round where the one before ended: the heap after a full
 * collection and its open file descriptors.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
/** V8's collector, reachable once --expose-gc is set, from a new context (the current one was made before). */
const gc = runInNewContext('gc') as () => void;

/** Rounds a leak test runs: `PLINTH_LEAK_ROUNDS` (at least 3, default 5) soaks longer. */
export const LEAK_ROUNDS = Math.max(3, Number(process.env.PLINTH_LEAK_ROUNDS ?? 5));
/** Rounds that warm the process up (pools filled, code compiled) before its figures count. */
export const WARM_UP_ROUNDS = 2;

export interface AfterRound {
  heapBytes: number;
  fds: number;
}

/** The heap after full collections (finalizers and weak callbacks given their turns between them) and the open descriptors. */
export async function afterRound(): Promise<AfterRound> {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return { heapBytes: process.memoryUsage().heapUsed, fds: readdirSync('/proc/self/fd').length };
}

export interface LeakBounds {
  /** What a round is made of, for the message: `requests`, `exchanges`. */
  unit: string;
  perRound: number;
  /** Growth of the heap allowed from the end of the warm-up to the end. */
  heapSlackBytes: number;
  /** Growth of the open descriptors allowed over the same rounds. */
  fdSlack: number;
}

const mib = (n: number): string => (n / 1024 / 1024).toFixed(2);

/** Fails when the heap or the descriptors grew past their bounds between the end of the warm-up and the last round. */
export function assertNoLeak(rounds: readonly AfterRound[], b: LeakBounds): void {
  assert.ok(rounds.length > WARM_UP_ROUNDS, `a leak test needs more than ${WARM_UP_ROUNDS} rounds`);
  const warm = rounds[WARM_UP_ROUNDS - 1]!;
  const last = rounds[rounds.length - 1]!;
  const grown = last.heapBytes - warm.heapBytes;
  const counted = (rounds.length - WARM_UP_ROUNDS) * b.perRound;
  assert.ok(grown < b.heapSlackBytes, `the heap grew ${mib(grown)} MiB over ${counted} ${b.unit} (after each round: ${rounds.map((r) => mib(r.heapBytes)).join(', ')} MiB)`);
  assert.ok(last.fds - warm.fds <= b.fdSlack, `open file descriptors after each round: ${rounds.map((r) => r.fds).join(', ')}`);
}
