import { isIP } from 'node:net';
import { CommanderError } from 'commander';

/** Exit codes scripts can rely on. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, CONFIG: 3 } as const;

/** Wrong usage (bad argument or option value): the message is printed and the exit code is 2. */
export function usageError(message: string): CommanderError {
  return new CommanderError(EXIT.USAGE, 'syncpoint.usage', message);
}

/** A command that ran and found a problem: its output says what; the exit code is 1. */
export function failure(message: string): CommanderError {
  return new CommanderError(EXIT.FAILURE, 'syncpoint.failure', message);
}

/** A positive integer option value, or a usage error naming the option. */
export function positiveIntegerOption(name: string, value: string, max?: number): number {
  const number = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(number) || number < 1) {
    throw usageError(`${name}: expected a positive integer, got "${value}"`);
  }
  if (max !== undefined && number > max) throw usageError(`${name}: at most ${max}, got ${number}`);
  return number;
}

/** `--host`: an IP address (a name could resolve to several, or to none at start). */
export function hostOption(value: string): string {
  if (isIP(value) === 0) throw usageError(`--host: expected an IP address such as 127.0.0.1 or ::, got "${value}"`);
  return value;
}

/** `1.2 MB` style sizes for people (base 1000). */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return 'unknown';
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** `3 s`, `4 min`, `2.5 h` style durations for people. */
export function formatDuration(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}
