import { createHash, timingSafeEqual } from 'node:crypto';
import { lsnDistance, opId, type Lsn } from '@syncpoint/codecs';
import { parseSyncRules, type SyncRulesIssue } from '@syncpoint/sync-rules';
import { Router, type RequestHandler } from 'express';
import { tokenFromAuthorizationHeader } from '../auth/token-verifier.js';
import { authError, ErrorCode, validationError } from '../errors.js';
import type { ReplicationSource, SlotStatus } from '../source/replication-source.js';
import type { BucketStorage, StorageStatus } from '../storage/bucket-storage.js';
import type { ReplicationStream } from '../storage/replication-stream.js';
import { concurrencyLimiter } from './concurrency-limiter.js';

/**
 * Operator routes (PROTOCOL §12): diagnostics, sync config validation and the current sync config, authorised by
 * `api.tokens`. Not used by the SDKs.
 */
export interface AdminRouteDependencies {
  /** `api.tokens`; with none configured every admin route answers 401. */
  tokens: string[];
  storage: BucketStorage;
  source: ReplicationSource;
  /** What this process does (`api`, `replication`, `unified`). */
  role: string;
  /** Open sync streams of this process and the configured maximum; absent in a replication-only process. */
  syncStreams?: { open(): number; max: number };
}

/** Sync config documents for validation may be larger than the default body limit. */
export const ADMIN_BODY_LIMIT_BYTES = 1024 * 1024;

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * `Authorization: Bearer|Token <api token>` matching one of `tokens`. Every configured token is compared (hashes of
 * equal length, `timingSafeEqual`), so the time taken says nothing about which token or how much of it matched. Any
 * failure is the same 401 without details.
 */
export function adminAuthorization(tokens: string[]): RequestHandler {
  const expected = tokens.map(digest);
  return (req, _res, next) => {
    const unauthorized = () => next(authError(ErrorCode.AUTH_REQUIRED, 'Authentication required'));
    let presented: Buffer;
    try {
      presented = digest(tokenFromAuthorizationHeader(req.headers.authorization));
    } catch {
      return unauthorized();
    }
    let matched = false;
    for (const candidate of expected) matched = timingSafeEqual(candidate, presented) || matched;
    if (!matched) return unauthorized();
    next();
  };
}

export interface StreamStatusReport {
  id: number;
  state: string;
  snapshot_done: boolean;
  /** Null before replication created the slot; `exists` is null when the source cannot tell. */
  slot: {
    name: string;
    exists: boolean | null;
    active?: boolean;
    confirmed_flush_lsn?: string | null;
    retained_wal_bytes?: number | null;
    wal_status?: string | null;
  } | null;
  last_checkpoint: { op_id: string | null; lsn: string | null; at: string | null };
  last_keepalive_at: string | null;
  /** Source head − checkpoint lsn, in bytes; null before the first checkpoint or when the head is unknown. */
  lag_bytes: number | null;
  last_error: string | null;
}

export interface StatusReport {
  storage: { size_bytes: number | null };
  source: { head: string | null; error?: string };
  checkpoint_requests: StorageStatus['checkpointRequests'];
  streams: StreamStatusReport[];
}

/**
 * Replication state as operators need it (`syncpoint status`, `/api/admin/v1/diagnostics`): per stream the slot,
 * the last checkpoint and the lag behind the source head; checkpoint request counts; storage size. Read-only.
 */
export async function buildStatusReport(
  storage: BucketStorage,
  source: ReplicationSource | null
): Promise<StatusReport> {
  if (!storage.getStatus) throw new Error('this storage does not report its status');
  const status = await storage.getStatus();
  const report: StatusReport = {
    storage: { size_bytes: status.sizeBytes },
    source: { head: null },
    checkpoint_requests: status.checkpointRequests,
    streams: []
  };
  const slots = new Map<string, SlotStatus | null>();
  if (source) {
    try {
      report.source.head = await source.currentHead();
      for (const stream of status.streams) {
        if (stream.slotName && source.slotStatus) slots.set(stream.slotName, await source.slotStatus(stream.slotName));
      }
    } catch (error) {
      report.source.error = (error as Error).message;
    }
  }
  const head = report.source.head as Lsn | null;
  for (const stream of status.streams) {
    const slot = stream.slotName === null ? undefined : slots.get(stream.slotName);
    report.streams.push({
      id: stream.id,
      state: stream.state,
      snapshot_done: stream.snapshotDone,
      slot:
        stream.slotName === null
          ? null
          : slot
            ? {
                name: slot.name,
                exists: true,
                active: slot.active,
                confirmed_flush_lsn: slot.confirmedFlushLsn,
                retained_wal_bytes: slot.retainedWalBytes,
                wal_status: slot.walStatus
              }
            : { name: stream.slotName, exists: slot === null ? false : null },
      last_checkpoint: {
        op_id: stream.lastCheckpoint == null ? null : opId.encode(stream.lastCheckpoint),
        lsn: stream.lastCheckpointLsn,
        at: stream.lastCheckpointAt?.toISOString() ?? null
      },
      last_keepalive_at: stream.lastKeepaliveAt?.toISOString() ?? null,
      lag_bytes: head && stream.lastCheckpointLsn ? Number(lsnDistance(stream.lastCheckpointLsn, head)) : null,
      last_error: stream.lastError
    });
  }
  return report;
}

function issueJson(issue: SyncRulesIssue) {
  return {
    level: issue.severity === 'error' ? 'fatal' : 'warning',
    message: issue.message,
    ...(issue.bucketDefinition === undefined ? {} : { bucket_definition: issue.bucketDefinition }),
    ...(issue.yamlPosition === undefined
      ? {}
      : { location: { line: issue.yamlPosition.line, column: issue.yamlPosition.column } })
  };
}

function streamJson(stream: ReplicationStream | undefined) {
  return stream === undefined ? null : { id: stream.id, state: stream.state, content: stream.content };
}

export function adminRoutes(dependencies: AdminRouteDependencies): Router {
  const { storage, source } = dependencies;
  const router = Router();
  const limiter = concurrencyLimiter({ concurrent: 10, queued: 20 });
  const authorize = adminAuthorization(dependencies.tokens);

  router.post('/api/admin/v1/diagnostics', limiter, authorize, async (_req, res) => {
    const report = await buildStatusReport(storage, source);
    const errors: Array<{ stream_id: number | null; message: string }> = [];
    for (const stream of report.streams)
      if (stream.last_error) errors.push({ stream_id: stream.id, message: stream.last_error });
    if (report.source.error) errors.push({ stream_id: null, message: `source: ${report.source.error}` });
    res.json({
      data: {
        role: dependencies.role,
        connections: dependencies.syncStreams
          ? { sync_streams: dependencies.syncStreams.open(), max_sync_streams: dependencies.syncStreams.max }
          : null,
        ...report,
        errors
      }
    });
  });

  router.post('/api/sync-rules/v1/validate', limiter, authorize, (req, res) => {
    const content = (req.body as { content?: unknown } | undefined)?.content;
    if (typeof content !== 'string') throw validationError(['content must be the sync config YAML as a string']);
    const parsed = parseSyncRules(content);
    res.json({
      data: {
        valid: parsed.ok,
        errors: parsed.errors.map(issueJson),
        warnings: parsed.warnings.map(issueJson)
      }
    });
  });

  router.get('/api/sync-rules/v1/current', limiter, authorize, async (_req, res) => {
    const serving = await storage.getServingCheckpoint();
    const active = serving?.stream;
    const processing = (await storage.getReplicatingStreams()).find(
      (stream) => stream.state === 'PROCESSING' && (active === undefined || stream.id > active.id)
    );
    res.json({ data: { current: streamJson(active), next: streamJson(processing) } });
  });

  return router;
}
