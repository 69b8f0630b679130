import { createLogger, type Logger } from '@syncpoint/service-core';
import type { PostgresBucketStorage } from '@syncpoint/storage-postgres';
import { expect } from 'vitest';
import { signDevToken } from '../src/dev-token.js';
import {
  downloadBuckets,
  TEST_DEV_KEY,
  waitFor,
  waitForCheckpointLsn,
  type BucketContents
} from './replication-harness.js';
import { openSyncStream } from './sync-stream-client.js';

/**
 * Invariants every fault test checks once the fault is over (issue 7): nothing lost, nothing extra, requests
 * acknowledged, recovery without help. Built on replication-harness (`downloadBuckets` also checks each bucket's
 * stored checksum and count against its ops). The API is deliberately small:
 *
 * - `expectMatchesFreshSnapshot`: the faulted service's buckets equal those of a fresh service on the same source.
 * - `postCheckpointRequest` + `expectRequestAcknowledged`: a stored checkpoint request shows up on a sync stream.
 * - `captureLogs` + `expectLogged`: what the service logged (recovery must be visible in the log).
 * - `observeServedCheckpoints`: check the rows a client would end with at every checkpoint served during a fault.
 */

/** Rows a client ends with: bucket name → (object_type/object_id → row). */
type ClientRows = Map<string, Map<string, unknown>>;

function rowsOf(buckets: Map<string, BucketContents>): ClientRows {
  return new Map([...buckets].map(([name, contents]) => [name, contents.rows]));
}

/** Human-readable differences between two client states (empty when equal); at most `limit` lines. */
function diffClientRows(actual: ClientRows, expected: ClientRows, limit = 20): string[] {
  const problems: string[] = [];
  for (const name of new Set([...actual.keys(), ...expected.keys()])) {
    const a = actual.get(name) ?? new Map();
    const e = expected.get(name) ?? new Map();
    for (const id of new Set([...a.keys(), ...e.keys()])) {
      const left = a.has(id) ? JSON.stringify(a.get(id)) : '(missing)';
      const right = e.has(id) ? JSON.stringify(e.get(id)) : '(missing)';
      if (left !== right) problems.push(`${name} ${id}: ${left} != expected ${right}`);
      if (problems.length >= limit) return [...problems, '…'];
    }
  }
  return problems;
}

export interface FreshSnapshotOptions {
  /** Storage of the service that went through the fault. */
  faulted: PostgresBucketStorage;
  /**
   * Start a fresh replicating service on a NEW storage database against the same source; returns that storage.
   * (The caller owns the service and stops it.)
   */
  startFresh: () => Promise<PostgresBucketStorage>;
  /** The source's WAL position after its last write, emitting a marker so an idle source moves on (`env.sourcePosition`). */
  sourcePosition: () => Promise<string>;
  /** Per wait (catch-up of the faulted service, snapshot of the fresh one). Default 120 s. */
  timeoutMs?: number;
}

/**
 * Once the source is quiet: the faulted service's served checkpoint reaches the source position, and a client syncing
 * it from scratch ends with exactly the rows, bucket by bucket, of a client of a FRESH service (new storage, new
 * snapshot). Raw checksums are not compared: the faulted log holds history (superseded PUTs, REMOVEs); a fresh
 * snapshot has one PUT per row, which is checked too. Returns the figures for the report.
 */
export async function expectMatchesFreshSnapshot(
  options: FreshSnapshotOptions
): Promise<{ buckets: number; rows: number; faultedOps: number }> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const position = await options.sourcePosition();
  const served = await waitForCheckpointLsn(options.faulted, position, timeoutMs);
  const faulted = await downloadBuckets(options.faulted, served.checkpoint.checkpoint);

  const freshStorage = await options.startFresh();
  const freshPosition = await options.sourcePosition();
  const freshServed = await waitForCheckpointLsn(freshStorage, freshPosition, timeoutMs);
  const fresh = await downloadBuckets(freshStorage, freshServed.checkpoint.checkpoint);
  for (const [name, contents] of fresh)
    expect(contents.ops, `ops of ${name} in a fresh snapshot`).toBe(contents.rows.size);

  const differences = diffClientRows(rowsOf(faulted), rowsOf(fresh));
  expect(differences, 'faulted service vs a fresh snapshot of the same source').toEqual([]);
  let rows = 0;
  let faultedOps = 0;
  for (const contents of faulted.values()) {
    rows += contents.rows.size;
    faultedOps += contents.ops;
  }
  return { buckets: faulted.size, rows, faultedOps };
}

/** A client token for `userId`, signed with the harness key (audience as in the harness config). */
export function clientToken(userId: string): Promise<string> {
  return signDevToken(TEST_DEV_KEY, { sub: userId });
}

/**
 * POST /sync/checkpoint-request; retries (as the SDK does) on network errors and 5xx until `timeoutMs`, since during a
 * fault the service may be unable to read the source head. Resolves once the request is STORED (HTTP 200).
 */
export async function postCheckpointRequest(
  url: string,
  token: string,
  clientId: string,
  requestId: bigint,
  timeoutMs = 60_000
): Promise<{ attempts: number; lastError: string | null }> {
  let attempts = 0;
  let lastError: string | null = null;
  await waitFor(
    `checkpoint request ${requestId} to be stored`,
    async () => {
      attempts++;
      try {
        const response = await fetch(`${url}/sync/checkpoint-request`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
          body: JSON.stringify({ client_id: clientId, checkpoint_request_id: requestId.toString() }),
          signal: AbortSignal.timeout(Math.max(1_000, timeoutMs / 2))
        });
        const body = await response.text();
        if (response.status >= 400 && response.status < 500)
          throw new Error(`checkpoint request rejected: ${response.status} ${body}`);
        if (response.status !== 200) lastError = `${response.status} ${body}`;
        return response.status === 200;
      } catch (error) {
        if (String(error).includes('rejected')) throw error;
        lastError = String(error);
        return false;
      }
    },
    timeoutMs,
    250
  );
  return { attempts, lastError };
}

/**
 * A sync stream of `clientId` reports a write checkpoint ≥ `requestId` within `timeoutMs`. Returns the milliseconds it
 * took from the call.
 */
export async function expectRequestAcknowledged(
  url: string,
  token: string,
  clientId: string,
  requestId: bigint,
  timeoutMs = 60_000
): Promise<number> {
  const started = Date.now();
  const stream = await openSyncStream(url, token, { client_id: clientId, raw_data: true });
  try {
    expect(stream.response.status).toBe(200);
    await stream.until((line) => {
      const acknowledged = (line.checkpoint ?? line.checkpoint_diff)?.write_checkpoint;
      return acknowledged !== undefined && BigInt(acknowledged) >= requestId;
    }, timeoutMs);
  } finally {
    await stream.close();
  }
  return Date.now() - started;
}

export interface LogCapture {
  /** A logger writing JSON lines to memory (pass it to `startService`). */
  logger: Logger;
  /** Parsed lines logged so far. */
  entries(): Array<Record<string, unknown> & { msg?: string; level: number }>;
  /** Entries whose message matches `pattern`. */
  matching(pattern: RegExp): Array<Record<string, unknown> & { msg?: string; level: number }>;
}

/** An in-memory logger (level debug); SYNCPOINT_TEST_LOG=1 also echoes to stderr. */
export function captureLogs(): LogCapture {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: {
      write: (line: string) => {
        lines.push(line);
        if (process.env.SYNCPOINT_TEST_LOG) process.stderr.write(line);
      }
    }
  });
  const entries = () =>
    lines.map((line) => JSON.parse(line) as Record<string, unknown> & { msg?: string; level: number });
  return { logger, entries, matching: (pattern) => entries().filter((entry) => pattern.test(String(entry.msg ?? ''))) };
}

/** Each pattern matches at least one log message logged after index `since` (from `capture.entries().length`). */
export function expectLogged(capture: LogCapture, patterns: RegExp[], since = 0): void {
  const messages = capture
    .entries()
    .slice(since)
    .map((entry) => String(entry.msg ?? ''));
  for (const pattern of patterns) {
    expect(
      messages.some((message) => pattern.test(message)),
      `a log message matching ${pattern}; logged:\n${[...new Set(messages)].slice(-40).join('\n')}`
    ).toBe(true);
  }
}

export interface CheckpointObservation {
  /** Date.now() when the download finished. */
  at: number;
  checkpoint: bigint;
  rows: number;
  /** What `check` said was wrong with the client state at this checkpoint, or null. */
  problem: string | null;
}

/**
 * Poll the served checkpoint every `intervalMs` and, for each new one (each poll with `recheck`: data under an unchanged
 * checkpoint must not change either), download what a client syncing from scratch
 * ends with (checksums and counts verified) and pass it to `check` (return a problem description, or null when the
 * state is acceptable). `stop()` ends the polling and returns every observation, plus the errors of polls that failed
 * (a download whose stored checksums disagree with its ops is such an error; a test whose storage stays up expects
 * none, a storage-fault test may tolerate connection errors).
 */
export function observeServedCheckpoints(
  storage: PostgresBucketStorage,
  check: (checkpoint: bigint, buckets: Map<string, BucketContents>) => string | null | Promise<string | null>,
  options: { intervalMs?: number; recheck?: boolean } = {}
): { stop(): Promise<{ observations: CheckpointObservation[]; errors: string[] }> } {
  const observations: CheckpointObservation[] = [];
  const errors: string[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        const serving = await storage.getServingCheckpoint();
        const checkpoint = serving?.checkpoint.checkpoint;
        if (serving && (options.recheck || checkpoint !== observations.at(-1)?.checkpoint)) {
          const buckets = await downloadBuckets(storage, checkpoint!);
          let rows = 0;
          for (const contents of buckets.values()) rows += contents.rows.size;
          observations.push({
            at: Date.now(),
            checkpoint: checkpoint!,
            rows,
            problem: await check(checkpoint!, buckets)
          });
        }
      } catch (error) {
        errors.push(String(error));
      }
      await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 100));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { observations, errors };
    }
  };
}
