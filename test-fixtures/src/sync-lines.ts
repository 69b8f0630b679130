/**
 * The sync-stream lines (PROTOCOL §5) as the tests read them after decoding (NDJSON through the bigint-aware JSON
 * parser, or BSON). One line carries exactly one of the keys; the type keeps them all optional so a test can look
 * for the key it expects, and the helpers below say clearly when it is not there.
 */
export interface BucketChecksumLine {
  bucket: string;
  checksum: number;
  count: number;
  priority?: number;
  /** Why the connection has the bucket (STREAMS §5.2): `{sub: j}` request positions, `{default: i}` `streams` indexes. */
  subscriptions?: Array<{ sub: number } | { default: number }>;
}

/** An entry of the first checkpoint line's `streams` (STREAMS §5.2). */
export interface StreamEntryLine {
  name: string;
  is_default: boolean;
  errors: Array<{ subscription: number | 'default'; message: string }>;
}

export interface CheckpointLine {
  last_op_id: string;
  write_checkpoint?: string;
  buckets: BucketChecksumLine[];
  streams?: StreamEntryLine[];
}

export interface CheckpointDiffLine {
  last_op_id: string;
  write_checkpoint?: string;
  updated_buckets: BucketChecksumLine[];
  removed_buckets: string[];
}

export interface OplogEntry {
  op_id: string;
  op: 'PUT' | 'REMOVE' | 'MOVE' | 'CLEAR';
  object_type?: string;
  object_id?: string;
  subkey?: string;
  checksum: number;
  /** Row data: a JSON string (`raw_data`) or an object (legacy lines). */
  data?: unknown;
}

export interface DataLine {
  bucket: string;
  after?: string;
  next_after?: string;
  has_more?: boolean;
  data: OplogEntry[];
}

export interface SyncLine {
  checkpoint?: CheckpointLine;
  checkpoint_diff?: CheckpointDiffLine;
  checkpoint_complete?: { last_op_id: string };
  partial_checkpoint_complete?: { last_op_id: string; priority: number };
  data?: DataLine;
  token_expires_in?: number;
  /** The last line of a stream that ends with an error. */
  error?: ErrorEnvelope['error'];
}

/** The write checkpoint a checkpoint or checkpoint_diff line carries (undefined for other lines or when absent). */
export function writeCheckpointOf(line: SyncLine | null | undefined): string | undefined {
  return (line?.checkpoint ?? line?.checkpoint_diff)?.write_checkpoint;
}

/** The `key` part of a line, e.g. `linePart(lines[0], 'checkpoint')`; throws, naming the line's keys, when absent. */
export function linePart<K extends keyof SyncLine>(line: SyncLine | undefined, key: K): NonNullable<SyncLine[K]> {
  const part = line?.[key];
  if (part === undefined || part === null)
    throw new Error(`expected a ${key} line, got one with ${line ? Object.keys(line).join(', ') : 'nothing'}`);
  return part;
}

/** The `key` part of the first line that has one (throws when none has). */
export function firstLinePart<K extends keyof SyncLine>(lines: SyncLine[], key: K): NonNullable<SyncLine[K]> {
  return linePart(
    lines.find((line) => line[key] !== undefined),
    key
  );
}

/** The data parts of the lines that are data lines, in order. */
export function dataParts(lines: SyncLine[]): DataLine[] {
  return lines.flatMap((line) => (line.data ? [line.data] : []));
}

/** The ops of all data lines, in order. */
export function dataOps(lines: SyncLine[]): OplogEntry[] {
  return dataParts(lines).flatMap((data) => data.data);
}

/** The JSON body of every error response (PROTOCOL: error envelope) and of an error sync line. */
export interface ErrorEnvelope {
  error: { code: string; status: number; description: string; name?: string; details?: string };
}

/** Parses an error response body; throws, quoting the start of the text, when it is not an error envelope. */
export function parseErrorEnvelope(text: string): ErrorEnvelope {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`expected a JSON error envelope, got ${JSON.stringify(text.slice(0, 200))}`);
  }
  const error = (parsed as Partial<ErrorEnvelope> | null)?.error;
  if (typeof error !== 'object' || error === null || typeof error.code !== 'string')
    throw new Error(`expected a JSON error envelope, got ${text.slice(0, 200)}`);
  return parsed as ErrorEnvelope;
}
