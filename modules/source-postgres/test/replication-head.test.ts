import { normalizeLsn } from '@syncpoint/codecs';
import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresSource, markerSql, type PostgresReplicationSource } from '../src/index.js';

describe('replication head and marker', () => {
  let server: PostgresServer;
  let source: PostgresReplicationSource;
  let admin: pg.Client;
  const slot = `head_test_${process.pid}`;

  beforeAll(async () => {
    server = await testPostgresServer();
    await server.ensureDatabase('syncpoint_source_head');
    source = createPostgresSource({
      type: 'postgresql',
      uri: server.url('syncpoint_source_head'),
      sslmode: 'disable',
      id: '1',
      tag: 'default',
      slot_name_prefix: 'powersync_',
      heartbeat_interval_seconds: 60,
      max_pool_size: 2
    });
    admin = new pg.Client({ connectionString: server.url('syncpoint_source_head') });
    await admin.connect();
    await admin.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [slot]);
  });
  afterAll(async () => {
    await admin?.query(`SELECT pg_drop_replication_slot($1)`, [slot]).catch(() => {});
    await admin?.end();
    await source?.close();
    await server?.stop();
  });

  /** Marker messages decoded from the slot since the last call (consumes them). */
  async function markersInWal(): Promise<string[]> {
    const { rows } = await admin.query<{ data: string }>(
      `SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)`,
      [slot]
    );
    return rows.map((row) => row.data).filter((data) => data.startsWith('message:'));
  }

  it('stores the mapping before emitting the marker, and emits it when asked', async () => {
    await markersInWal();
    let markersSeenInsideCallback: string[] | undefined;
    const response = await source.createReplicationHead(async (head) => {
      expect(head).toMatch(/^[0-9A-F]{8}\/[0-9A-F]{8}$/);
      markersSeenInsideCallback = await markersInWal();
      return { response: `stored at ${head}`, shouldAdvance: true };
    });
    expect(response).toMatch(/^stored at /);
    expect(markersSeenInsideCallback).toEqual([]);
    const markers = await markersInWal();
    expect(markers).toHaveLength(1);
    expect(markers[0]).toMatch(/prefix: powersync, sz: 4 content:ping/);
  });

  it('emits no marker when storage says none is needed', async () => {
    await markersInWal();
    await source.createReplicationHead(() => Promise.resolve({ response: null, shouldAdvance: false }));
    expect(await markersInWal()).toEqual([]);
  });

  it('does not emit a marker when the callback fails', async () => {
    await markersInWal();
    await expect(source.createReplicationHead(() => Promise.reject(new Error('storage is down')))).rejects.toThrow(
      'storage is down'
    );
    expect(await markersInWal()).toEqual([]);
  });

  it('returns a head that is the current source position', async () => {
    const before = normalizeLsn((await admin.query<{ l: string }>('SELECT pg_current_wal_lsn() AS l')).rows[0]!.l);
    const head = await source.currentHead();
    expect(head >= before).toBe(true);
  });

  async function expectFlushedOnReturn(sql: string) {
    const client = new pg.Client({ connectionString: server.url('syncpoint_source_head') });
    await client.connect();
    try {
      for (let i = 0; i < 20; i++) {
        const { rows } = await client.query<{ lsn: string }>(`${sql} AS lsn`);
        const flushed = await client.query<{ flushed: boolean }>(
          'SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn AS flushed',
          [rows[0]!.lsn]
        );
        expect(flushed.rows[0]?.flushed).toBe(true);
      }
    } finally {
      await client.end();
    }
  }

  it("this server's marker is flushed when the statement returns, not left for the WAL writer", async () => {
    const version = await source.serverVersionNum();
    await markersInWal();
    await expectFlushedOnReturn(markerSql(version));
    const markers = await markersInWal();
    expect(markers).toHaveLength(20);
    expect(markers[0]).toContain(version >= 170000 ? 'transactional: 0' : 'transactional: 1');
  });

  it('the Postgres 14-16 form (transactional message) is flushed on return too', async () => {
    await expectFlushedOnReturn(markerSql(150000));
  });
});
