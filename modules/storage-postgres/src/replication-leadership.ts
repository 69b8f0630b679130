import { ReplicationLeadershipLostError, type Logger } from '@syncpoint/service-core';
import pg from 'pg';

/** Session advisory lock key of replication leadership (beside the migration, deploy and op id keys 7_240_00x). */
const LEADERSHIP_LOCK_KEY = 7_240_004;
/**
 * How long the takeover waits for a deposed leader's in-flight fenced write before terminating its session, and how
 * long a termination may take. Kept below the lock connection's query timeout (ttl/2): a query that times out on the
 * client leaves the session out of step, so the wait must end on the server first.
 */
const TAKEOVER_WAIT_MS = 2_000;
function lockQueryTimeoutMs(ttlMs: number): number {
  return Math.max(1_000, Math.floor(ttlMs / 2));
}

function takeoverWaitMs(ttlMs: number): number {
  return Math.min(TAKEOVER_WAIT_MS, Math.floor(lockQueryTimeoutMs(ttlMs) / 3));
}

/** SQLSTATE lock_not_available (lock_timeout). */
const LOCK_NOT_AVAILABLE = '55P03';
/** TCP keepalive of the lock connection: a half-open path is noticed by the kernel, not only at the next renewal. */
const KEEPALIVE_INITIAL_DELAY_MS = 5_000;

/**
 * Replication leadership on Postgres storage (issue 12 items 1–2).
 *
 * Leadership is a session-level advisory lock held on a dedicated connection (TCP keepalives on): when the holder
 * crashes, the kernel closes its connection, Postgres releases the lock, and the next `pg_try_advisory_lock` of a
 * standby or a restarted process succeeds at once. A holder that is paused keeps its connection; it also renews
 * `expires_at` on the `powersync.replication_lock` row every ttl/3, and a standby that finds that lease expired
 * terminates the holder's lock session (`pg_terminate_backend`) and takes over.
 *
 * Each takeover increments the row's `epoch`. Every replication write transaction first runs `fence(client)`: it
 * reads the row `FOR KEY SHARE` and refuses the write when the epoch is not the one this process was elected with.
 * The takeover reads the row `FOR UPDATE` before incrementing the epoch, so it waits for (or, past a short timeout,
 * terminates) a deposed leader's write that already passed the check: no write of a deposed leader commits after the
 * new epoch does. Renewals update only non-key columns and do not conflict with the fence's row lock.
 *
 * A storage object that never took part in an election (CLI commands, tests driving storage directly) is not
 * fenced: only processes that replicate under the lock ever hold an epoch.
 */
export class PostgresReplicationLeadership {
  private connection: pg.Client | null = null;
  /** The epoch this process was elected with; null while it does not lead. */
  private epoch: bigint | null = null;
  private holderId: string | null = null;
  /** True once this object has held leadership: from then on, writes without a current epoch are refused. */
  private fenced = false;
  private onLost: (() => void) | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly logger?: Logger
  ) {}

  /** The epoch held, for logs and tests; null when not leading. */
  get currentEpoch(): bigint | null {
    return this.epoch;
  }

  async acquire(holderId: string, ttlMs: number, onLost?: () => void): Promise<boolean> {
    if (this.epoch !== null && this.holderId === holderId && this.connection) return this.renew(holderId, ttlMs);
    if (this.epoch !== null && this.connection) {
      // This storage object leads for another holder id (tests elect several holders through one object): the lock
      // session cannot be shared, so that holder must have let its lease expire before this one may take over.
      const { rows } = await this.connection.query<{ expired: boolean }>(
        `SELECT expires_at < clock_timestamp() AS expired FROM powersync.replication_lock WHERE name = 'replication'`
      );
      if (rows[0]?.expired !== true) return false;
      this.lose('the lease was handed to another holder');
    }
    const client = await this.lockConnection(ttlMs);
    const waitMs = takeoverWaitMs(ttlMs);
    try {
      let locked = await this.tryLock(client);
      if (!locked && (await this.deposeExpiredHolder(client, waitMs))) locked = await this.tryLock(client);
      if (!locked) return false;
      const epoch = await this.takeOver(client, holderId, ttlMs, waitMs);
      this.epoch = epoch;
      this.holderId = holderId;
      this.fenced = true;
      this.onLost = onLost;
      this.logger?.info({ holder: holderId, epoch: epoch.toString() }, 'replication leadership taken');
      return true;
    } catch (error) {
      // Without a recorded epoch the lock is of no use, and after a timed-out query the session is out of step:
      // close it (which releases the advisory lock) so the next try starts on a fresh connection.
      this.dropConnection(client);
      throw error;
    }
  }

  async renew(holderId: string, ttlMs: number): Promise<boolean> {
    const client = this.connection;
    if (this.epoch === null || this.holderId !== holderId || !client) return false;
    try {
      const result = await client.query(
        `UPDATE powersync.replication_lock SET expires_at = clock_timestamp() + $3 * interval '1 millisecond'
         WHERE name = 'replication' AND holder = $1 AND epoch = $2 AND backend_pid = pg_backend_pid()`,
        [holderId, this.epoch.toString(), ttlMs]
      );
      if (result.rowCount === 1) return true;
    } catch (error) {
      // The lock connection failed: the advisory lock went with it, so leadership is gone.
      this.logger?.warn({ err: error }, 'replication lock connection failed during renewal');
      this.dropConnection(client);
    }
    this.lose('its lease renewal was refused');
    return false;
  }

  async release(holderId: string): Promise<void> {
    if (this.holderId !== holderId) return;
    const client = this.connection;
    this.epoch = null;
    this.holderId = null;
    this.onLost = undefined;
    if (!client) return;
    this.connection = null;
    try {
      await client.query(`UPDATE powersync.replication_lock SET expires_at = clock_timestamp() WHERE holder = $1`, [
        holderId
      ]);
      await client.query('SELECT pg_advisory_unlock($1)', [LEADERSHIP_LOCK_KEY]);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * First statement of every replication write transaction: refuses it (throws, so the transaction rolls back) when
   * this process was elected but its epoch is no longer the storage's. Takes a `FOR KEY SHARE` row lock held until the
   * transaction ends, which a takeover's `FOR UPDATE` waits for.
   */
  async fence(client: pg.ClientBase): Promise<void> {
    if (!this.fenced) return;
    const held = this.epoch;
    if (held === null) throw new ReplicationLeadershipLostError(null);
    const { rows } = await client.query<{ epoch: bigint }>(
      `SELECT epoch FROM powersync.replication_lock WHERE name = 'replication' FOR KEY SHARE`
    );
    const current = rows[0] ? BigInt(rows[0].epoch) : null;
    if (current !== held) {
      this.lose('another process took over (a newer epoch)');
      throw new ReplicationLeadershipLostError(held, current);
    }
  }

  async close(): Promise<void> {
    const client = this.connection;
    this.connection = null;
    this.epoch = null;
    if (client) await client.end().catch(() => undefined);
  }

  private lose(reason: string): void {
    if (this.epoch === null) return;
    this.logger?.error(
      { holder: this.holderId, epoch: this.epoch.toString(), reason },
      `replication leadership lost: ${reason}; this one stops writing and stands by`
    );
    this.epoch = null;
    this.holderId = null;
    const onLost = this.onLost;
    this.onLost = undefined;
    // The advisory lock may still be held by this session (a paused holder whose session was not terminated):
    // ending the connection releases it, and the next election step opens a new one.
    if (this.connection) this.dropConnection(this.connection);
    onLost?.();
  }

  private dropConnection(client: pg.Client): void {
    if (this.connection === client) this.connection = null;
    client.removeAllListeners('error');
    client.on('error', () => undefined);
    client.end().catch(() => undefined);
  }

  private async lockConnection(ttlMs: number): Promise<pg.Client> {
    if (this.connection) return this.connection;
    const client = new pg.Client({
      ...(this.pool.options as pg.ClientConfig),
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
      // A renewal on a silently dead path must fail within the lease, not hang (issue 12 item 4).
      query_timeout: lockQueryTimeoutMs(ttlMs),
      application_name: 'syncpoint-replication-lock'
    });
    const failed = (error?: Error) => {
      if (this.connection !== client) return;
      this.logger?.warn({ err: error }, 'replication lock connection closed');
      this.connection = null;
      this.lose('the lock connection closed');
    };
    client.on('error', failed);
    client.on('end', () => failed());
    try {
      await client.connect();
    } catch (error) {
      client.end().catch(() => undefined);
      throw error;
    }
    this.connection = client;
    return client;
  }

  private async tryLock(client: pg.Client): Promise<boolean> {
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [
      LEADERSHIP_LOCK_KEY
    ]);
    return rows[0]?.locked === true;
  }

  /**
   * The lock is held by another session. When that holder's lease has expired it is paused or cut off (a live holder
   * renews every ttl/3): terminate its lock session so the advisory lock is released. Its writes are fenced by the
   * epoch the takeover increments. True when a session was terminated.
   */
  private async deposeExpiredHolder(client: pg.Client, waitMs: number): Promise<boolean> {
    const { rows } = await client.query<{ pid: number; holder: string | null }>(
      `SELECT l.pid, r.holder FROM pg_locks l
       LEFT JOIN powersync.replication_lock r ON r.name = 'replication'
       WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = $1 AND l.objsubid = 1 AND l.granted
         AND l.pid <> pg_backend_pid()
         AND (r.name IS NULL OR r.expires_at < clock_timestamp())`,
      [LEADERSHIP_LOCK_KEY]
    );
    if (rows.length === 0) return false;
    for (const row of rows) {
      this.logger?.warn(
        { pid: row.pid, holder: row.holder },
        'the replication leader stopped renewing its lease (paused or cut off); terminating its lock session'
      );
      await client.query('SELECT pg_terminate_backend($1, $2)', [row.pid, waitMs]);
    }
    return true;
  }

  /** Records this process as the holder with the next epoch; see the class doc for the row locks involved. */
  private async takeOver(client: pg.Client, holderId: string, ttlMs: number, waitMs: number): Promise<bigint> {
    for (let attempt = 1; ; attempt++) {
      try {
        await client.query('BEGIN');
        await client.query(`SET LOCAL lock_timeout = ${waitMs}`);
        await client.query(
          `INSERT INTO powersync.replication_lock (name, holder, expires_at) VALUES ('replication', $1, clock_timestamp())
           ON CONFLICT (name) DO NOTHING`,
          [holderId]
        );
        await client.query(`SELECT epoch FROM powersync.replication_lock WHERE name = 'replication' FOR UPDATE`);
        const { rows } = await client.query<{ epoch: bigint }>(
          `UPDATE powersync.replication_lock SET holder = $1, epoch = epoch + 1, backend_pid = pg_backend_pid(),
             acquired_at = now(), expires_at = clock_timestamp() + $2 * interval '1 millisecond'
           WHERE name = 'replication' RETURNING epoch`,
          [holderId, ttlMs]
        );
        await client.query('COMMIT');
        return BigInt(rows[0]!.epoch);
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        if ((error as { code?: string }).code !== LOCK_NOT_AVAILABLE || attempt >= 3) throw error;
        // A deposed leader is stuck inside a fenced write (paused mid-transaction): end its session, which rolls
        // the write back. Only fenced writers take row-share locks on this table.
        const { rows } = await client.query<{ pid: number }>(
          `SELECT pg_terminate_backend(pid, $1), pid FROM pg_locks
           WHERE relation = 'powersync.replication_lock'::regclass AND mode = 'RowShareLock' AND granted
             AND pid <> pg_backend_pid()`,
          [waitMs]
        );
        this.logger?.warn(
          { pids: rows.map((row) => row.pid) },
          'a deposed replication leader held its fenced write open; terminated it'
        );
      }
    }
  }
}
