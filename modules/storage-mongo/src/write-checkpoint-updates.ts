/**
 * Pure builders for the `write_checkpoints` updates and the read-back rules of PROTOCOL §4.7/§4.9 (MongoDB).
 * No I/O here, so the exact documents sent to the server are unit-tested without one.
 */
import { int64, INT64_MAX, type Lsn } from '@syncpoint/codecs';
import type { ReplicationHeads } from '@syncpoint/service-core';
import { Long, type Document, type Filter, type ObjectId } from 'mongodb';

/** One document of `write_checkpoints` (PROTOCOL §4.9). `user_id` is not unique: races may leave duplicates. */
export interface WriteCheckpointDocument {
  _id: ObjectId;
  /** Full user id (PROTOCOL §4.2). */
  user_id: string;
  /** Source head at creation, keyed by connection id. */
  lsns: { '1': string };
  /** The request id (historical field name; not the SDK client id). Int64 in storage. */
  client_id: Long;
  /** Null (or absent, for older documents) while pending; the commit LSN that reached `lsns.1` once processed. */
  processed_at_lsn?: string | null;
  /** Present only for client-supplied requests; `$unset` for generated ones. */
  checkpoint_requested_at?: Date;
  /**
   * Earlier (id, head) pairs not yet reached when they were superseded, oldest first, at most
   * MAX_PENDING_CHECKPOINTS (issue 6; see the Postgres migration `1783100000000-…` for the rules).
   */
  pending?: PendingCheckpoint[];
}

export interface PendingCheckpoint {
  id: Long;
  lsn: string;
}

/** Earlier pairs kept per record besides the latest one. */
export const MAX_PENDING_CHECKPOINTS = 16;

/**
 * Expression: the stored `pending` list with the current latest pair appended, as the record moves on to
 * (`nextId`, `nextLsn`). If the current pair was processed, earlier pairs are forgotten (every later checkpoint
 * reaches it). Pairs dominated by a later one (greater id, head not after theirs) are dropped, then the newest
 * MAX_PENDING_CHECKPOINTS are kept. Ids only grow within a record, so the list stays sorted by id.
 */
export function pushPendingExpression(nextId: Document, nextLsn: Document): Document {
  const base = {
    $cond: [{ $eq: [{ $ifNull: ['$processed_at_lsn', null] }, null] }, { $ifNull: ['$pending', []] }, []]
  };
  const entries = { $concatArrays: [base, [{ id: '$client_id', lsn: '$lsns.1' }]] };
  const everything = { $concatArrays: [entries, [{ id: nextId, lsn: nextLsn }]] };
  const dominated = {
    $anyElementTrue: [
      {
        $map: {
          input: everything,
          as: 'o',
          in: { $and: [{ $gt: ['$$o.id', '$$e.id'] }, { $lte: ['$$o.lsn', '$$e.lsn'] }] }
        }
      }
    ]
  };
  return { $slice: [{ $filter: { input: entries, as: 'e', cond: { $not: [dominated] } } }, -MAX_PENDING_CHECKPOINTS] };
}

/** The id acknowledged at `lsn` among a user's documents: the greatest id (latest or kept pair) whose head ≤ lsn. */
export function acknowledgedAt(
  documents: Iterable<Pick<WriteCheckpointDocument, 'lsns' | 'pending'> & { client_id?: unknown }>,
  lsn: Lsn
): bigint | null {
  let best: bigint | null = null;
  const offer = (id: unknown, head: string | undefined) => {
    if (id == null || head === undefined || head > lsn) return;
    const value = storedIdToBigint(id);
    if (best === null || value > best) best = value;
  };
  for (const document of documents) {
    offer(document.client_id, document.lsns?.['1']);
    for (const pair of document.pending ?? []) offer(pair.id, pair.lsn);
  }
  return best;
}

/** The fields read back after an update; `client_id` may be Int64 or, in old data, a 32-bit or double number. */
export type StoredCheckpoint = Pick<WriteCheckpointDocument, 'user_id' | 'processed_at_lsn'> & { client_id?: unknown };

/**
 * An int64 as a BSON `Long`, through the codec: throws instead of wrapping around (which `Long.fromBigInt` would do
 * silently). This module only binds the driver's `Long` class.
 */
export function int64ToLong(value: bigint): Long {
  return int64.toLong(value, Long);
}

/**
 * A stored integer id back to a bigint: `Long` (Int64), or a JS number from an Int32/Double in older data. Anything
 * else is corrupt storage (`CorruptStoredValueError`).
 */
export function storedIdToBigint(value: unknown): bigint {
  return int64.fromLong(value);
}

/** The `lsns` value stored for a set of heads (only connection "1" exists). */
function storedLsns(heads: ReplicationHeads): { '1': string } {
  return { '1': heads['1'] };
}

/**
 * Aggregation-pipeline update (used with update-many + upsert on `{user_id}`) for a client-supplied id R:
 *
 *   apply   = client_id missing/null OR client_id <  R
 *   refresh = client_id missing/null OR client_id <= R
 *   client_id               = apply   ? R    : client_id
 *   lsns                    = apply   ? heads : lsns
 *   processed_at_lsn        = apply   ? null : processed_at_lsn
 *   checkpoint_requested_at = refresh ? now  : checkpoint_requested_at
 *
 * All four expressions of one `$set` stage see the document as it was before the stage, so `apply` and
 * `refresh` are evaluated against the stored id. Constants are wrapped in `$literal` so no value is ever
 * interpreted as an expression or a field path.
 */
export function suppliedCheckpointUpdate(id: bigint, heads: ReplicationHeads, now: Date): Document[] {
  const requested = { $literal: int64ToLong(id) };
  const absent = { $eq: [{ $ifNull: ['$client_id', null] }, null] };
  const apply = { $or: [absent, { $lt: ['$client_id', requested] }] };
  const refresh = { $or: [absent, { $lte: ['$client_id', requested] }] };
  const hadId = { $not: [absent] };
  return [
    {
      $set: {
        client_id: { $cond: [apply, requested, '$client_id'] },
        lsns: { $cond: [apply, { $literal: storedLsns(heads) }, '$lsns'] },
        pending: {
          $cond: [{ $and: [apply, hadId] }, pushPendingExpression(requested, { $literal: heads['1'] }), '$pending']
        },
        processed_at_lsn: { $cond: [apply, null, '$processed_at_lsn'] },
        checkpoint_requested_at: { $cond: [refresh, { $literal: now }, '$checkpoint_requested_at'] }
      }
    }
  ];
}

/** Raised (as a failed $toLong conversion) when a generated id would pass 2^63−1; see GENERATED_ID_EXHAUSTED. */
export const GENERATED_ID_EXHAUSTED = 'write checkpoint id exhausted';

/**
 * Pipeline update for a generated id (legacy `/write-checkpoint2.json`): the stored id plus one (a new document
 * gets 1), the latest head, pending again, the superseded pair kept in `pending`, and no retention timestamp
 * (the record becomes permanent). Ids stay Int64 (`$add` of two Longs); at 2^63−1 the update fails through a
 * deliberate `$toLong` of a non-number (MongoDB's `$add` would silently turn into a double instead).
 */
export function generatedCheckpointUpdate(heads: ReplicationHeads): Document[] {
  const absent = { $eq: [{ $ifNull: ['$client_id', null] }, null] };
  const next = {
    $cond: [
      absent,
      { $literal: Long.fromInt(1) },
      {
        $cond: [
          { $gte: ['$client_id', { $literal: int64ToLong(INT64_MAX) }] },
          { $toLong: { $literal: GENERATED_ID_EXHAUSTED } },
          { $add: ['$client_id', { $literal: Long.fromInt(1) }] }
        ]
      }
    ]
  };
  return [
    {
      $set: {
        client_id: next,
        lsns: { $literal: storedLsns(heads) },
        pending: { $cond: [absent, [], pushPendingExpression(next, { $literal: heads['1'] })] },
        processed_at_lsn: null
      }
    },
    { $unset: 'checkpoint_requested_at' }
  ];
}

/*
 * LSN comparisons below are plain string comparisons in MongoDB. That is correct because every stored and
 * queried LSN is normalised (`XXXXXXXX/XXXXXXXX`, fixed width, upper-case hex, see @syncpoint/codecs), and
 * MongoDB compares strings by their UTF-8 bytes unless a collation is given: we never create these collections
 * or indexes with a collation, nor pass one to a query.
 */

/** Pending records whose head has been reached by a commit/keepalive at `lsn` (PROTOCOL §4.9). */
export function reachedPendingFilter(lsn: Lsn): Filter<WriteCheckpointDocument> {
  return { processed_at_lsn: null, 'lsns.1': { $lte: lsn } };
}

/** Retention (PROTOCOL §4.10): client-requested, requested before `cutoff`, and already processed. */
export function expiredRequestFilter(cutoff: Date): Filter<WriteCheckpointDocument> {
  return { checkpoint_requested_at: { $exists: true, $lt: cutoff }, processed_at_lsn: { $ne: null } };
}

/** The winning record of one user after an update: the highest id; among equal ids a pending one wins. */
export interface UserCheckpointState {
  id: bigint;
  pending: boolean;
}

/** Reduce read-back documents to one state per user (highest id; ties prefer a pending record). */
export function latestCheckpointPerUser(documents: Iterable<StoredCheckpoint>): Map<string, UserCheckpointState> {
  const states = new Map<string, UserCheckpointState>();
  for (const document of documents) {
    if (document.client_id == null) continue;
    const id = storedIdToBigint(document.client_id);
    const pending = document.processed_at_lsn == null;
    const current = states.get(document.user_id);
    if (current === undefined || id > current.id || (id === current.id && pending && !current.pending)) {
      states.set(document.user_id, { id, pending });
    }
  }
  return states;
}

/**
 * `shouldAdvance` for client-supplied entries (PROTOCOL §4.7, MongoDB): true iff, for some user of the batch,
 * the record with the highest id (ties: prefer a pending one) is still pending.
 */
export function suppliedShouldAdvance(users: Iterable<string>, states: Map<string, UserCheckpointState>): boolean {
  for (const user of users) {
    if (states.get(user)?.pending) return true;
  }
  return false;
}
