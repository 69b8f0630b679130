import type { ClientSession, Collection, MongoClient } from 'mongodb';
import type {
  BucketDataDocument,
  BucketParameterDocument,
  BucketStateDocument,
  CurrentDataDocument,
  OpIdSequenceDocument
} from './bucket-data-documents.js';
import type { SyncRulesDocument } from './sync-rules-document.js';
import type { WriteCheckpointDocument } from './write-checkpoint-updates.js';

/**
 * What a stream's storage, batch and compaction need from the bucket storage: the client (for transactions) and the
 * collections. On its own so that those three depend on it and not on each other.
 */
export interface StreamCollections {
  client: MongoClient;
  syncRules: Collection<SyncRulesDocument>;
  writeCheckpoints: Collection<WriteCheckpointDocument>;
  bucketData: Collection<BucketDataDocument>;
  bucketState: Collection<BucketStateDocument>;
  currentData: Collection<CurrentDataDocument>;
  bucketParameters: Collection<BucketParameterDocument>;
  opIdSequence: Collection<OpIdSequenceDocument>;
  /** Insert a change notification into `checkpoint_events` (PROTOCOL §6.2). */
  notify(): Promise<void>;
  /**
   * First operation of every replication write transaction: throws `ReplicationLeadershipLostError` when this process
   * lost replication leadership (issue 12 item 2). Absent: unfenced.
   */
  fence?: (session: ClientSession) => Promise<void>;
}
