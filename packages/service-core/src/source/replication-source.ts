import type { Lsn } from '@syncpoint/codecs';

export interface ReplicationHeadCallbackResult<T> {
  response: T;
  /** Emit a source marker after the callback (PROTOCOL §5.1 step 3). */
  shouldAdvance: boolean;
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

  close(): Promise<void>;
}
