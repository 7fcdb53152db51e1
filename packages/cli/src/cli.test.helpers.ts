import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The built CLI's entry point, run as a child process the way users run it. */
export const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `plinth ...args` with exactly `env` and collects its exit code and output. */
export function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
