/**
 * Decoder for the pgoutput logical replication protocol, version 1.
 *
 * Input is one message: the bytes after the 25-byte XLogData header of a `CopyData` frame, or one `data` row
 * of `pg_logical_slot_peek_binary_changes(...)`. Reference:
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 *
 * Only protocol version 1 is supported: streamed-transaction (v2) and two-phase (v3) messages are rejected
 * with a clear error, as are binary ('b') column values (sent only with the `binary` option).
 */
import { lsnFromBigint, type Lsn } from '@syncpoint/codecs';

/** A column value that was not sent because it is an unchanged TOASTed value ('u'). */
export const UNCHANGED_TOAST: unique symbol = Symbol('UNCHANGED_TOAST');

/** One column of a tuple: Postgres text output ('t'), SQL NULL ('n') or {@link UNCHANGED_TOAST} ('u'). */
export type TupleValue = string | null | typeof UNCHANGED_TOAST;

type ReplicaIdentity = 'default' | 'nothing' | 'full' | 'index';

export interface RelationColumn {
  name: string;
  typeOid: number;
  /** Type modifier (`atttypmod`), -1 when none. */
  typeMod: number;
  /** Part of the replica identity (key) of the relation. */
  isKey: boolean;
}

export type PgoutputMessage =
  /** `commitTime` is in microseconds since 2000-01-01 00:00:00 UTC (the Postgres epoch). */
  | { tag: 'begin'; finalLsn: Lsn; commitTime: bigint; xid: number }
  | { tag: 'commit'; flags: number; commitLsn: Lsn; endLsn: Lsn; commitTime: bigint }
  | { tag: 'origin'; originLsn: Lsn; name: string }
  | {
      tag: 'relation';
      relationId: number;
      /** Namespace of the relation; Postgres sends '' for `pg_catalog`, reported here as `pg_catalog`. */
      schema: string;
      name: string;
      replicaIdentity: ReplicaIdentity;
      columns: RelationColumn[];
    }
  | { tag: 'type'; typeOid: number; schema: string; name: string }
  | { tag: 'insert'; relationId: number; new: TupleValue[] }
  /** `key`: old replica identity columns (others null), sent when the key changed; `old`: full old row (REPLICA IDENTITY FULL). */
  | { tag: 'update'; relationId: number; key?: TupleValue[]; old?: TupleValue[]; new: TupleValue[] }
  | { tag: 'delete'; relationId: number; key?: TupleValue[]; old?: TupleValue[] }
  | { tag: 'truncate'; relationIds: number[]; cascade: boolean; restartIdentity: boolean }
  | { tag: 'message'; transactional: boolean; lsn: Lsn; prefix: string; content: Uint8Array };

const textDecoder = new TextDecoder('utf-8');

const REPLICA_IDENTITIES: Record<string, ReplicaIdentity> = { d: 'default', n: 'nothing', f: 'full', i: 'index' };

const UNSUPPORTED_TAGS: Record<string, string> = {
  S: 'Stream Start (protocol version 2)',
  E: 'Stream Stop (protocol version 2)',
  c: 'Stream Commit (protocol version 2)',
  A: 'Stream Abort (protocol version 2)',
  b: 'Begin Prepare (protocol version 3)',
  P: 'Prepare (protocol version 3)',
  K: 'Commit Prepared (protocol version 3)',
  r: 'Rollback Prepared (protocol version 3)',
  p: 'Stream Prepare (protocol version 3)'
};

/** A tiny big-endian cursor over one message. Every read checks the remaining length. */
class Reader {
  private offset = 0;
  private readonly view: DataView;

  constructor(
    private readonly data: Uint8Array,
    private readonly what: string
  ) {
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  private need(length: number, field: string): number {
    const start = this.offset;
    if (start + length > this.data.length) {
      throw new Error(
        `pgoutput: truncated ${this.what} message: need ${length} byte(s) for ${field} at offset ${start}, ` +
          `but the message has ${this.data.length} byte(s)`
      );
    }
    this.offset += length;
    return start;
  }

  uint8(field: string): number {
    return this.view.getUint8(this.need(1, field));
  }
  int16(field: string): number {
    return this.view.getInt16(this.need(2, field));
  }
  uint32(field: string): number {
    return this.view.getUint32(this.need(4, field));
  }
  int32(field: string): number {
    return this.view.getInt32(this.need(4, field));
  }
  /** Unsigned 64-bit, built from two uint32 halves (never through a JS number). */
  uint64(field: string): bigint {
    const high = this.uint32(field);
    const low = this.uint32(field);
    return (BigInt(high) << 32n) | BigInt(low);
  }
  int64(field: string): bigint {
    return BigInt.asIntN(64, this.uint64(field));
  }
  lsn(field: string): Lsn {
    return lsnFromBigint(this.uint64(field));
  }
  char(field: string): string {
    return String.fromCharCode(this.uint8(field));
  }
  bytes(length: number, field: string): Uint8Array {
    const start = this.need(length, field);
    return this.data.subarray(start, start + length);
  }
  /** A NUL-terminated UTF-8 string. */
  cstring(field: string): string {
    const end = this.data.indexOf(0, this.offset);
    if (end < 0) {
      throw new Error(
        `pgoutput: truncated ${this.what} message: unterminated string for ${field} at offset ${this.offset}`
      );
    }
    const text = textDecoder.decode(this.data.subarray(this.offset, end));
    this.offset = end + 1;
    return text;
  }

  end(): void {
    if (this.offset !== this.data.length) {
      throw new Error(
        `pgoutput: ${this.data.length - this.offset} unexpected trailing byte(s) after ${this.what} message at offset ${this.offset}`
      );
    }
  }
}

/** Decodes one pgoutput (protocol version 1) message. Throws a descriptive Error on unknown or truncated input. */
export function decodePgoutput(data: Uint8Array): PgoutputMessage {
  if (data.length === 0) throw new Error('pgoutput: empty message');
  return decodeBody(String.fromCharCode(data[0]!), data);
}

function decodeBody(tag: string, data: Uint8Array): PgoutputMessage {
  const read = (what: string) => {
    const reader = new Reader(data, what);
    reader.uint8('message type');
    return reader;
  };
  let r: Reader;
  let message: PgoutputMessage;
  switch (tag) {
    case 'B':
      r = read('Begin');
      message = {
        tag: 'begin',
        finalLsn: r.lsn('final LSN'),
        commitTime: r.int64('commit timestamp'),
        xid: r.uint32('xid')
      };
      break;
    case 'C':
      r = read('Commit');
      message = {
        tag: 'commit',
        flags: r.uint8('flags'),
        commitLsn: r.lsn('commit LSN'),
        endLsn: r.lsn('end LSN'),
        commitTime: r.int64('commit timestamp')
      };
      break;
    case 'O':
      r = read('Origin');
      message = { tag: 'origin', originLsn: r.lsn('origin LSN'), name: r.cstring('origin name') };
      break;
    case 'R': {
      r = read('Relation');
      const relationId = r.uint32('relation id');
      const schema = r.cstring('namespace') || 'pg_catalog';
      const name = r.cstring('relation name');
      const identity = r.char('replica identity');
      const replicaIdentity = REPLICA_IDENTITIES[identity];
      if (!replicaIdentity)
        throw new Error(`pgoutput: unknown replica identity ${JSON.stringify(identity)} in Relation message`);
      const count = r.int16('column count');
      const columns: RelationColumn[] = [];
      for (let i = 0; i < count; i++) {
        const flags = r.uint8(`column ${i} flags`);
        columns.push({
          name: r.cstring(`column ${i} name`),
          typeOid: r.uint32(`column ${i} type OID`),
          typeMod: r.int32(`column ${i} type modifier`),
          isKey: (flags & 1) !== 0
        });
      }
      message = { tag: 'relation', relationId, schema, name, replicaIdentity, columns };
      break;
    }
    case 'Y':
      r = read('Type');
      message = {
        tag: 'type',
        typeOid: r.uint32('type OID'),
        schema: r.cstring('namespace') || 'pg_catalog',
        name: r.cstring('type name')
      };
      break;
    case 'I': {
      r = read('Insert');
      const relationId = r.uint32('relation id');
      expectByte(r, 'N', 'Insert');
      message = { tag: 'insert', relationId, new: readTuple(r) };
      break;
    }
    case 'U': {
      r = read('Update');
      const relationId = r.uint32('relation id');
      let kind = r.char('tuple kind');
      let key: TupleValue[] | undefined;
      let old: TupleValue[] | undefined;
      if (kind === 'K' || kind === 'O') {
        if (kind === 'K') key = readTuple(r);
        else old = readTuple(r);
        kind = r.char('tuple kind');
      }
      if (kind !== 'N')
        throw new Error(`pgoutput: expected 'N' (new tuple) in Update message, got ${JSON.stringify(kind)}`);
      const update: PgoutputMessage = { tag: 'update', relationId, new: readTuple(r) };
      if (key) update.key = key;
      if (old) update.old = old;
      message = update;
      break;
    }
    case 'D': {
      r = read('Delete');
      const relationId = r.uint32('relation id');
      const kind = r.char('tuple kind');
      if (kind !== 'K' && kind !== 'O') {
        throw new Error(`pgoutput: expected 'K' or 'O' (old tuple) in Delete message, got ${JSON.stringify(kind)}`);
      }
      message =
        kind === 'K'
          ? { tag: 'delete', relationId, key: readTuple(r) }
          : { tag: 'delete', relationId, old: readTuple(r) };
      break;
    }
    case 'T': {
      r = read('Truncate');
      const count = r.uint32('relation count');
      const options = r.uint8('options');
      const relationIds: number[] = [];
      for (let i = 0; i < count; i++) relationIds.push(r.uint32(`relation id ${i}`));
      message = { tag: 'truncate', relationIds, cascade: (options & 1) !== 0, restartIdentity: (options & 2) !== 0 };
      break;
    }
    case 'M': {
      r = read('Message');
      const flags = r.uint8('flags');
      const lsn = r.lsn('LSN');
      const prefix = r.cstring('prefix');
      const length = r.uint32('content length');
      // A plain Uint8Array copy (not a Buffer view: Buffer#slice does not copy) that does not pin the input.
      const content = new Uint8Array(r.bytes(length, 'content'));
      message = { tag: 'message', transactional: (flags & 1) !== 0, lsn, prefix, content };
      break;
    }
    default: {
      const unsupported = UNSUPPORTED_TAGS[tag];
      if (unsupported)
        throw new Error(`pgoutput: unsupported message ${unsupported}; only proto_version '1' is supported`);
      throw new Error(
        `pgoutput: unknown message type byte 0x${data[0]!.toString(16).padStart(2, '0')} (${JSON.stringify(tag)})`
      );
    }
  }
  r.end();
  return message;
}

function expectByte(r: Reader, expected: string, what: string): void {
  const kind = r.char('tuple kind');
  if (kind !== expected)
    throw new Error(`pgoutput: expected ${JSON.stringify(expected)} in ${what} message, got ${JSON.stringify(kind)}`);
}

function readTuple(r: Reader): TupleValue[] {
  const count = r.int16('tuple column count');
  const values: TupleValue[] = [];
  for (let i = 0; i < count; i++) {
    const kind = r.char(`tuple column ${i} kind`);
    switch (kind) {
      case 'n':
        values.push(null);
        break;
      case 'u':
        values.push(UNCHANGED_TOAST);
        break;
      case 't': {
        const length = r.uint32(`tuple column ${i} length`);
        values.push(textDecoder.decode(r.bytes(length, `tuple column ${i} value`)));
        break;
      }
      case 'b':
        throw new Error(
          `pgoutput: binary column value ('b') in tuple column ${i}; binary mode is not supported (do not pass the 'binary' option)`
        );
      default:
        throw new Error(`pgoutput: unknown tuple column kind ${JSON.stringify(kind)} in tuple column ${i}`);
    }
  }
  return values;
}
