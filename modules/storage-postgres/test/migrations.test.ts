import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresStorage, MIGRATIONS, type PostgresBucketStorage } from '../src/index.js';

describe('Postgres storage migrations', () => {
  let server: PostgresServer;
  let storage: PostgresBucketStorage;
  beforeAll(async () => {
    server = await testPostgresServer();
    const database = `syncpoint_migrations_${process.pid}`;
    await server.ensureDatabase(database);
    storage = createPostgresStorage({ type: 'postgresql', uri: server.url(database), max_pool_size: 4 });
  });
  afterAll(async () => {
    await storage?.close();
    await server?.stop();
  });

  const recorded = async () =>
    (await storage.pool.query<{ name: string }>('SELECT name FROM powersync.migrations ORDER BY name')).rows.map(
      (r) => r.name
    );

  it('applies every migration once, even when several processes migrate at the same time', async () => {
    const reports = await Promise.all([storage.migrate('up'), storage.migrate('up'), storage.migrate('up')]);
    expect(reports.flatMap((r) => r.applied)).toEqual(MIGRATIONS.map((m) => m.name));
    expect(await recorded()).toEqual(MIGRATIONS.map((m) => m.name));
    expect((await storage.migrate('up')).applied).toEqual([]);
  });

  it('reverts the newest migration on down and re-applies it on up, keeping the data', async () => {
    await storage.pool.query(
      `INSERT INTO powersync.write_checkpoints (user_id, lsns, write_checkpoint) VALUES ('kept', '{"1":"00000000/00000010"}', 9)`
    );
    const newest = MIGRATIONS.at(-1)!.name;
    expect((await storage.migrate('down')).applied).toEqual([newest]);
    expect(await recorded()).not.toContain(newest);
    expect((await storage.migrate('up')).applied).toEqual([newest]);
    const { rows } = await storage.pool.query(
      `SELECT write_checkpoint, head_lsn::text FROM powersync.write_checkpoints`
    );
    expect(rows).toEqual([{ write_checkpoint: 9n, head_lsn: '0/10' }]);
  });

  it('can be taken all the way down and up again', async () => {
    for (let i = 0; i < MIGRATIONS.length; i++) await storage.migrate('down');
    expect(await recorded()).toEqual([]);
    expect((await storage.migrate('down')).applied).toEqual([]);
    expect((await storage.migrate('up')).applied).toHaveLength(MIGRATIONS.length);
  });
});
