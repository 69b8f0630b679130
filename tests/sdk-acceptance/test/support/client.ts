import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  LogLevels,
  PowerSyncDatabase,
  Schema,
  SyncStreamConnectionMethod,
  Table,
  UpdateType,
  column,
  type CommonPowerSyncDatabase,
  type PowerSyncBackendConnector,
  type PowerSyncCredentials,
  type PowerSyncLogger
} from '@powersync/node';
import type pg from 'pg';
import type { SyncpointEnv } from './syncpoint.js';
import { withTimeout } from './wait.js';

const AppSchema = new Schema({
  todos: new Table({ description: column.text, owner_id: column.text })
});

export type Encoding = 'bson' | 'ndjson';
export type CheckpointMode = 'legacy' | 'requests';

export const BSON_CONTENT_TYPE = 'application/vnd.powersync.bson-stream';
export const NDJSON_CONTENT_TYPE = 'application/x-ndjson';

export interface TodoRow {
  id: string;
  description: string | null;
  owner_id: string | null;
}

/** One HTTP exchange the SDK made (recorded by the custom fetch). */
interface RecordedRequest {
  method: string;
  path: string;
  status: number | null;
  contentType: string | null;
  error?: string;
}

/**
 * The app backend: tokens for one user, and uploads applied to the SOURCE database like a real backend would.
 * The backend is authoritative: it upper-cases descriptions and sets `owner_id` to the uploading user, so the
 * test can see the server's state replace the local one after the checkpoint that acknowledges the upload.
 */
class TestBackend implements PowerSyncBackendConnector {
  uploads = 0;
  credentialsFetched = 0;

  constructor(
    private readonly env: SyncpointEnv,
    readonly userId: string,
    private readonly firstToken?: string
  ) {}

  async fetchCredentials(): Promise<PowerSyncCredentials> {
    this.credentialsFetched++;
    if (this.credentialsFetched === 1 && this.firstToken !== undefined)
      return { endpoint: this.env.url, token: this.firstToken };
    return { endpoint: this.env.url, token: await this.env.token(this.userId) };
  }

  async uploadData(database: CommonPowerSyncDatabase): Promise<void> {
    const transaction = await database.getNextCrudTransaction();
    if (!transaction) return;
    await applyCrud(this.env.sourceDb, this.userId, transaction.crud);
    await transaction.complete();
    this.uploads++;
  }
}

async function applyCrud(
  sourceDb: pg.Pool,
  userId: string,
  entries: Array<{ op: UpdateType; table: string; id: string; opData?: Record<string, unknown> }>
) {
  const client = await sourceDb.connect();
  try {
    await client.query('BEGIN');
    for (const entry of entries) {
      if (entry.table !== 'todos') throw new Error(`unexpected table ${entry.table}`);
      const description = entry.opData?.description;
      if (entry.op === UpdateType.PUT) {
        await client.query(
          `INSERT INTO todos (id, description, owner_id) VALUES ($1, upper($2), $3)
           ON CONFLICT (id) DO UPDATE SET description = EXCLUDED.description, owner_id = EXCLUDED.owner_id`,
          [entry.id, description ?? null, userId]
        );
      } else if (entry.op === UpdateType.PATCH) {
        if (entry.opData && 'description' in entry.opData) {
          await client.query(`UPDATE todos SET description = upper($2) WHERE id = $1`, [entry.id, description ?? null]);
        }
      } else if (entry.op === UpdateType.DELETE) {
        await client.query(`DELETE FROM todos WHERE id = $1`, [entry.id]);
      }
    }
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

export interface TestClient {
  db: PowerSyncDatabase;
  backend: TestBackend;
  /** SDK log lines, with a timestamp relative to the client's creation. */
  logs: string[];
  requests: RecordedRequest[];
  /** Content types of the `/sync/stream` responses the SDK got. */
  streamContentTypes(): Array<string | null>;
  todos(): Promise<TodoRow[]>;
  close(): Promise<void>;
}

/**
 * A real `@powersync/node` database with a fresh SQLite file, connected over HTTP streaming. NDJSON is forced by a
 * custom fetch (the SDK's `remoteOptions.customFetch`) that rewrites the stream request's Accept header; the same
 * fetch records every request and response content type.
 */
export async function openClient(
  env: SyncpointEnv,
  options: {
    userId: string;
    encoding: Encoding;
    checkpointMode: CheckpointMode;
    name?: string;
    /** HTTP streaming (default) or RSocket over WebSocket (PROTOCOL §7.10, always BSON: `encoding` is then ignored). */
    connectionMethod?: SyncStreamConnectionMethod;
    /** Token for the first `fetchCredentials()` call only (e.g. an invalid one, to see the SDK recover). */
    firstToken?: string;
    /** `connect({includeDefaultStreams})`: `streams.include_defaults` of the sync request (STREAMS §5.8). */
    includeDefaultStreams?: boolean;
  }
): Promise<TestClient> {
  const started = Date.now();
  const logs: string[] = [];
  const name = options.name ?? options.userId;
  const log = (line: string) => {
    logs.push(`+${((Date.now() - started) / 1000).toFixed(2)}s [${name}] ${line}`);
    if (logs.length > 2000) logs.splice(0, 500);
  };
  const logger: PowerSyncLogger = {
    log(record) {
      if (record.level < LogLevels.debug) return;
      const level = Object.entries(LogLevels).find(([, value]) => value === record.level)?.[0] ?? String(record.level);
      const error = record.error === undefined ? '' : ` :: ${describeError(record.error)}`;
      log(`${level} ${record.message}${error}`);
    }
  };
  const requests: RecordedRequest[] = [];
  const customFetch: typeof fetch = async (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    let requestInit = init;
    if (url.pathname === '/sync/stream' && options.encoding === 'ndjson') {
      const headers = new Headers(init?.headers);
      headers.set('accept', NDJSON_CONTENT_TYPE);
      requestInit = { ...init, headers };
    }
    const recorded: RecordedRequest = {
      method: init?.method ?? 'GET',
      path: url.pathname,
      status: null,
      contentType: null
    };
    requests.push(recorded);
    try {
      const response = await fetch(input, requestInit);
      recorded.status = response.status;
      recorded.contentType = response.headers.get('content-type');
      log(`http ${recorded.method} ${url.pathname}${url.search} -> ${response.status} ${recorded.contentType ?? ''}`);
      return response;
    } catch (error) {
      recorded.error = describeError(error);
      log(`http ${recorded.method} ${url.pathname} failed: ${recorded.error}`);
      throw error;
    }
  };

  const dir = mkdtempSync(path.join(os.tmpdir(), 'sdk-acceptance-'));
  const db = new PowerSyncDatabase({
    schema: AppSchema,
    // The SDK keys its sync/upload locks by the database *file name* (process-wide), so two instances with the same
    // dbFilename block each other even in different directories: every instance gets its own name.
    database: { dbFilename: `${name.replace(/[^a-zA-Z0-9_-]/g, '_')}-${randomUUID()}.sqlite`, dbLocation: dir },
    logger,
    remoteOptions: { customFetch }
  });
  const backend = new TestBackend(env, options.userId, options.firstToken);
  await withTimeout(
    `${name} to connect`,
    db.connect(backend, {
      connectionMethod: options.connectionMethod ?? SyncStreamConnectionMethod.HTTP,
      checkpointMode: options.checkpointMode,
      retryDelayMs: 1000,
      crudUploadThrottleMs: 100,
      ...(options.includeDefaultStreams === undefined ? {} : { includeDefaultStreams: options.includeDefaultStreams })
    })
  );
  let closed = false;
  return {
    db,
    backend,
    logs,
    requests,
    streamContentTypes: () =>
      requests.filter((r) => r.path === '/sync/stream' && r.status === 200).map((r) => r.contentType),
    todos: () => db.getAll<TodoRow>('SELECT id, description, owner_id FROM todos ORDER BY id'),
    async close() {
      if (closed) return;
      closed = true;
      await withTimeout(`${name} to close`, db.close({ disconnect: true }), 15_000).catch((error) =>
        log(`close: ${describeError(error)}`)
      );
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause === undefined ? '' : ` (cause: ${describeError(error.cause)})`;
    return `${error.name}: ${error.message}${cause}`;
  }
  return String(error);
}
