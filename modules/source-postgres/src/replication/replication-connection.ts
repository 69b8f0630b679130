import { lsnFromBigint, lsnToBigint, normalizeLsn, ZERO_LSN, type Lsn } from '@syncpoint/codecs';
import pg from 'pg';

/** Microseconds between the Unix epoch and the Postgres epoch (2000-01-01). */
const POSTGRES_EPOCH_OFFSET_US = 946_684_800_000_000n;

export type ReplicationEvent =
  /** A pgoutput message (XLogData payload). */
  | { kind: 'data'; walStart: Lsn; data: Buffer }
  /** A primary keepalive: the server's WAL end, and whether it wants a status update now. */
  | { kind: 'keepalive'; walEnd: Lsn; replyRequested: boolean };

/** How long `connect()` may take when the config sets no connect_timeout (a silent network would hang it forever). */
const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
/** How long `close()` waits for a polite goodbye before destroying the socket (a dead peer never answers). */
const CLOSE_GRACE_MS = 2_000;

/** The source sent nothing on the replication connection for too long, even when asked to reply. */
class ReplicationTimeoutError extends Error {
  constructor(readonly silentMs: number) {
    super(
      `the source sent nothing on the replication connection for ${Math.round(silentMs / 1000)} s although asked to reply; ` +
        'assuming the connection is dead'
    );
    this.name = 'ReplicationTimeoutError';
  }
}

export interface LivenessOptions {
  /** Fail the stream (`ReplicationTimeoutError`) when nothing arrived for this long while we were reading. */
  timeoutMs: number;
  /** After this much silence, send a status update asking the server to reply at once (it answers with a keepalive). */
  probeAfterMs: number;
}

/**
 * A walsender connection (pg's replication mode) streaming a logical slot. We use node-postgres directly rather than
 * a wrapper library so that acknowledgements are fully ours: the slot's confirmed position moves only when
 * `acknowledge()` is called, which the replicator does after storage has committed.
 *
 * A peer that disappears without closing the TCP connection (a stalled network path, a frozen host) would otherwise
 * leave `next()` waiting forever: no error, no data. So the connection watches itself, like the server's
 * wal_sender_timeout does on the other side: when silent, it asks the server for a reply, and fails the stream when
 * none arrives in time.
 */
export class ReplicationConnection {
  private readonly client: pg.Client;
  private events: ReplicationEvent[] = [];
  private waiter: (() => void) | undefined;
  private ended: Error | null | undefined;
  private paused = false;
  /** Pause the socket when this many events wait, so a slow storage never makes us buffer without bound. */
  private readonly highWaterMark = 2_000;
  private lastReceivedAt = Date.now();
  private lastAcknowledged: Lsn | null = null;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(
    config: pg.ClientConfig,
    private readonly liveness?: LivenessOptions
  ) {
    this.client = new pg.Client({
      ...config,
      connectionTimeoutMillis: config.connectionTimeoutMillis ?? DEFAULT_CONNECT_TIMEOUT_MS,
      replication: 'database',
      // Text output of every value in UTC and ISO format: the same text the snapshot reads (PROTOCOL §9 values).
      options: '-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3'
    } as pg.ClientConfig);
  }

  async connect(): Promise<void> {
    this.client.on('error', (error: Error) => this.finish(error));
    await this.client.connect();
  }

  /** Run a replication command (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT …) and return its rows. */
  async command<T extends pg.QueryResultRow>(sql: string): Promise<T[]> {
    return (await this.client.query<T>(sql)).rows;
  }

  /** Start streaming; events are then read with `next()`. */
  startReplication(slotName: string, startLsn: Lsn, options: Record<string, string>): void {
    const connection = (
      this.client as unknown as { connection: NodeJS.EventEmitter & { stream: NodeJS.ReadableStream } }
    ).connection;
    connection.on('copyData', ({ chunk }: { chunk: Buffer }) => {
      this.lastReceivedAt = Date.now();
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
      .query(
        `START_REPLICATION SLOT ${pg.escapeIdentifier(slotName)} LOGICAL ${lsnForCommand(startLsn)} (${optionText})`
      )
      .then(
        () => this.finish(null),
        (error: Error) => this.finish(error)
      );
    this.resume = () => {
      if (this.paused && this.events.length < this.highWaterMark / 2) {
        this.paused = false;
        // The silence while we did not read was ours.
        this.lastReceivedAt = Date.now();
        connection.stream.resume();
      }
    };
    if (this.liveness) this.startWatchdog(this.liveness);
  }

  private startWatchdog({ timeoutMs, probeAfterMs }: LivenessOptions) {
    this.lastReceivedAt = Date.now();
    let lastProbeAt = 0;
    this.watchdog = setInterval(
      () => {
        const now = Date.now();
        if (this.paused) {
          this.lastReceivedAt = now;
          return;
        }
        const silentMs = now - this.lastReceivedAt;
        if (silentMs > timeoutMs) {
          this.finish(new ReplicationTimeoutError(silentMs));
          this.destroySocket();
        } else if (silentMs >= probeAfterMs && now - lastProbeAt >= probeAfterMs) {
          lastProbeAt = now;
          // Position 0 when nothing is acknowledged yet: the server ignores an invalid flush position.
          this.acknowledge(this.lastAcknowledged ?? ZERO_LSN, true);
        }
      },
      Math.max(100, Math.min(1_000, probeAfterMs / 4))
    );
    this.watchdog.unref?.();
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
    if (lsn !== ZERO_LSN) this.lastAcknowledged = lsn;
    const position = lsnToBigint(lsn);
    const message = Buffer.alloc(34);
    message.write('r', 0);
    message.writeBigUInt64BE(position, 1); // written
    message.writeBigUInt64BE(position, 9); // flushed
    message.writeBigUInt64BE(position, 17); // applied
    message.writeBigInt64BE(BigInt(Date.now()) * 1000n - POSTGRES_EPOCH_OFFSET_US, 25);
    message.writeUInt8(replyRequested ? 1 : 0, 33);
    const connection = (this.client as unknown as { connection?: { sendCopyFromChunk(chunk: Buffer): void } })
      .connection;
    connection?.sendCopyFromChunk(message);
  }

  async close(): Promise<void> {
    this.finish(null);
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'timeout'>(
      (resolve) => (timer = setTimeout(() => resolve('timeout'), CLOSE_GRACE_MS))
    );
    const outcome = await Promise.race([this.client.end().catch(() => {}), graceOver]);
    clearTimeout(timer);
    if (outcome === 'timeout') this.destroySocket();
  }

  private destroySocket() {
    const connection = (this.client as unknown as { connection?: { stream?: { destroy(): void } } }).connection;
    connection?.stream?.destroy();
  }

  private finish(error: Error | null) {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
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
function lsnForCommand(lsn: Lsn): string {
  return normalizeLsn(lsn)
    .replace(/^0+(?=[0-9A-F])/, '')
    .replace(/\/0+(?=[0-9A-F])/, '/');
}
