import { lsnFromBigint, lsnToBigint, normalizeLsn, type Lsn } from '@syncpoint/codecs';
import pg from 'pg';

/** Microseconds between the Unix epoch and the Postgres epoch (2000-01-01). */
const POSTGRES_EPOCH_OFFSET_US = 946_684_800_000_000n;

export type ReplicationEvent =
  /** A pgoutput message (XLogData payload). */
  | { kind: 'data'; walStart: Lsn; data: Buffer }
  /** A primary keepalive: the server's WAL end, and whether it wants a status update now. */
  | { kind: 'keepalive'; walEnd: Lsn; replyRequested: boolean };

/**
 * A walsender connection (pg's replication mode) streaming a logical slot. We use node-postgres directly rather than
 * a wrapper library so that acknowledgements are fully ours: the slot's confirmed position moves only when
 * `acknowledge()` is called, which the replicator does after storage has committed.
 */
export class ReplicationConnection {
  private readonly client: pg.Client;
  private events: ReplicationEvent[] = [];
  private waiter: (() => void) | undefined;
  private ended: Error | null | undefined;
  private paused = false;
  /** Pause the socket when this many events wait, so a slow storage never makes us buffer without bound. */
  private readonly highWaterMark = 2_000;

  constructor(config: pg.ClientConfig) {
    this.client = new pg.Client({
      ...config,
      replication: 'database',
      // Text output of every value in UTC and ISO format: the same text the snapshot reads (PROTOCOL §9 values).
      options: '-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3'
    } as pg.ClientConfig);
  }

  async connect(): Promise<void> {
    this.client.on('error', (error) => this.finish(error));
    await this.client.connect();
  }

  /** Run a replication command (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT …) and return its rows. */
  async command<T extends pg.QueryResultRow>(sql: string): Promise<T[]> {
    return (await this.client.query<T>(sql)).rows;
  }

  /** Start streaming; events are then read with `next()`. */
  startReplication(slotName: string, startLsn: Lsn, options: Record<string, string>): void {
    const connection = (this.client as unknown as { connection: NodeJS.EventEmitter & { stream: NodeJS.ReadableStream } })
      .connection;
    connection.on('copyData', ({ chunk }: { chunk: Buffer }) => {
      const event = parseCopyData(chunk);
      if (!event) return;
      this.events.push(event);
      if (this.events.length >= this.highWaterMark && !this.paused) {
        this.paused = true;
        connection.stream.pause();
      }
      this.waiter?.();
    });
    const optionText = Object.entries(options)
      .map(([key, value]) => `${pg.escapeIdentifier(key)} ${pg.escapeLiteral(value)}`)
      .join(', ');
    this.client
      .query(`START_REPLICATION SLOT ${pg.escapeIdentifier(slotName)} LOGICAL ${lsnForCommand(startLsn)} (${optionText})`)
      .then(
        () => this.finish(null),
        (error) => this.finish(error)
      );
    this.resume = () => {
      if (this.paused && this.events.length < this.highWaterMark / 2) {
        this.paused = false;
        connection.stream.resume();
      }
    };
  }

  private resume: () => void = () => {};

  /** The next event; null when the stream ended normally. Throws the stream's error. */
  async next(): Promise<ReplicationEvent | null> {
    while (this.events.length === 0) {
      if (this.ended !== undefined) {
        if (this.ended) throw this.ended;
        return null;
      }
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = undefined;
    }
    const event = this.events.shift()!;
    this.resume();
    return event;
  }

  /** Events already received and waiting (the replicator commits at the last transaction of a burst). */
  get queued(): number {
    return this.events.length;
  }

  /**
   * Standby status update: everything before `lsn` is durably processed, so the server may release that WAL and the
   * slot resumes after it on reconnect.
   */
  acknowledge(lsn: Lsn, replyRequested = false): void {
    const position = lsnToBigint(lsn);
    const message = Buffer.alloc(34);
    message.write('r', 0);
    message.writeBigUInt64BE(position, 1); // written
    message.writeBigUInt64BE(position, 9); // flushed
    message.writeBigUInt64BE(position, 17); // applied
    message.writeBigInt64BE(BigInt(Date.now()) * 1000n - POSTGRES_EPOCH_OFFSET_US, 25);
    message.writeUInt8(replyRequested ? 1 : 0, 33);
    const connection = (this.client as unknown as { connection?: { sendCopyFromChunk(chunk: Buffer): void } }).connection;
    connection?.sendCopyFromChunk(message);
  }

  async close(): Promise<void> {
    this.finish(null);
    await this.client.end().catch(() => {});
  }

  private finish(error: Error | null) {
    if (this.ended === undefined) this.ended = error;
    this.waiter?.();
  }
}

function parseCopyData(chunk: Buffer): ReplicationEvent | null {
  switch (chunk[0]) {
    case 0x77: // 'w' XLogData: walStart(8) walEnd(8) sendTime(8) data
      // Copied: `chunk` is a view into pg-protocol's read buffer, which it reuses (moves unparsed bytes to its start)
      // when more socket data arrives, overwriting events still waiting in our queue.
      return { kind: 'data', walStart: lsnFromBigint(chunk.readBigUInt64BE(1)), data: Buffer.from(chunk.subarray(25)) };
    case 0x6b: // 'k' primary keepalive: walEnd(8) sendTime(8) replyRequested(1)
      return { kind: 'keepalive', walEnd: lsnFromBigint(chunk.readBigUInt64BE(1)), replyRequested: chunk[17] === 1 };
    default:
      return null;
  }
}

/** `0/16B3748`-style text for replication commands. */
export function lsnForCommand(lsn: Lsn): string {
  return normalizeLsn(lsn).replace(/^0+(?=[0-9A-F])/, '').replace(/\/0+(?=[0-9A-F])/, '/');
}
