import type { Lsn } from '@syncpoint/codecs';

export interface ReplicationHeadCallbackResult<T> {
  response: T;
  /** Emit a source marker after the callback (PROTOCOL §5.1 step 3). */
  shouldAdvance: boolean;
}

/** A replication slot as the source reports it (`syncpoint status`, admin diagnostics). */
export interface SlotStatus {
  name: string;
  active: boolean;
  /** Position the slot's consumer confirmed; WAL before it may be recycled. Null when unknown. */
  confirmedFlushLsn: Lsn | null;
  /** WAL the slot keeps on the source: current position − restart_lsn, in bytes. Null when unknown. */
  retainedWalBytes: number | null;
  /** Postgres `wal_status` (reserved, extended, unreserved, lost); null on servers without it. */
  walStatus: string | null;
}

export interface ReplicationSource {
  /**
   * Read the source head, run `callback(head)` (which stores the mapping), then — only if it asks for it —
   * emit a marker so replication observes a position ≥ head even on an idle source. The marker always comes
   * after the callback's storage write.
   */
  createReplicationHead<T>(callback: (head: Lsn) => Promise<ReplicationHeadCallbackResult<T>>): Promise<T>;

  /** The current source head, for diagnostics and the legacy `/write-checkpoint.json`. */
  currentHead(): Promise<Lsn>;

  /** The named replication slot, or null when it does not exist. Optional, read-only. */
  slotStatus?(slotName: string): Promise<SlotStatus | null>;

  close(): Promise<void>;
}
