/**
 * Pure builders for the `write_checkpoints` updates and the read-back rules of PROTOCOL §4.7/§4.9 (MongoDB).
 * No I/O here, so the exact documents sent to the server are unit-tested without one.
 */
import { INT64_MAX, INT64_MIN, type Lsn } from '@syncpoint/codecs';
import type { ReplicationHeads } from '@syncpoint/service-core';
import { Long, type Document, type Filter, type ObjectId, type UpdateFilter } from 'mongodb';

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
}

/** The fields read back after an update; `client_id` may be Int64 or, in old data, a 32-bit or double number. */
export type StoredCheckpoint = Pick<WriteCheckpointDocument, 'user_id' | 'processed_at_lsn'> & { client_id?: unknown };

/** An int64 as a BSON `Long`. Throws instead of wrapping around (which `Long.fromBigInt` would do silently). */
export function int64ToLong(value: bigint): Long {
  if (value < INT64_MIN || value > INT64_MAX) throw new RangeError(`${value} does not fit in an int64`);
  return Long.fromBigInt(value);
}

/** A stored integer id back to a bigint: `Long` (Int64), or a JS number from an Int32/Double in older data. */
export function storedIdToBigint(value: unknown): bigint {
  if (value instanceof Long) return value.toBigInt();
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  throw new TypeError(`Stored write checkpoint id is not an integer: ${String(value)}`);
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
  return [
    {
      $set: {
        client_id: { $cond: [apply, requested, '$client_id'] },
        lsns: { $cond: [apply, { $literal: storedLsns(heads) }, '$lsns'] },
        processed_at_lsn: { $cond: [apply, null, '$processed_at_lsn'] },
        checkpoint_requested_at: { $cond: [refresh, { $literal: now }, '$checkpoint_requested_at'] }
      }
    }
  ];
}

/**
 * Update for a generated id (legacy `/write-checkpoint2.json`): the stored id plus one (a new document gets 1),
 * the latest head, pending again, and no retention timestamp (the record becomes permanent).
 * `$inc` by an Int64 one, so a freshly upserted `client_id` is Int64 too (an Int32 `1` would make it Int32).
 */
export function generatedCheckpointUpdate(heads: ReplicationHeads): UpdateFilter<WriteCheckpointDocument> {
  return {
    $set: { lsns: storedLsns(heads), processed_at_lsn: null },
    $unset: { checkpoint_requested_at: '' },
    $inc: { client_id: Long.fromInt(1) }
  };
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
