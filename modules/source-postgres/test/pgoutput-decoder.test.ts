import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePgoutput, UNCHANGED_TOAST, type PgoutputMessage } from '../src/replication/pgoutput-decoder.js';

/** Builds pgoutput messages byte by byte. */
class Builder {
  private readonly parts: number[] = [];
  byte(value: number | string): this {
    this.parts.push(typeof value === 'string' ? value.charCodeAt(0) : value);
    return this;
  }
  int16(value: number): this {
    return this.byte((value >> 8) & 0xff).byte(value & 0xff);
  }
  int32(value: number): this {
    for (const shift of [24, 16, 8, 0]) this.byte((value >>> shift) & 0xff);
    return this;
  }
  int64(value: bigint): this {
    const unsigned = BigInt.asUintN(64, value);
    return this.int32(Number(unsigned >> 32n)).int32(Number(unsigned & 0xffffffffn));
  }
  cstring(text: string): this {
    for (const b of new TextEncoder().encode(text)) this.byte(b);
    return this.byte(0);
  }
  text(text: string): this {
    const bytes = new TextEncoder().encode(text);
    this.byte('t').int32(bytes.length);
    for (const b of bytes) this.byte(b);
    return this;
  }
  build(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

describe('decodePgoutput on hand-built messages', () => {
  const begin = new Builder()
    .byte('B')
    .int64(0xffff_ffff_ffff_fff0n)
    .int64(789_012_345_678_901n)
    .int32(0xfffffffe)
    .build();

  it('decodes Begin with a 64-bit LSN above 2^53 and an unsigned xid', () => {
    expect(decodePgoutput(begin)).toEqual({
      tag: 'begin',
      finalLsn: 'FFFFFFFF/FFFFFFF0',
      commitTime: 789_012_345_678_901n,
      xid: 0xfffffffe
    });
  });

  it('decodes Commit', () => {
    const commit = new Builder().byte('C').byte(0).int64(0x16_b374d848n).int64(0x16_b374d878n).int64(5n).build();
    expect(decodePgoutput(commit)).toEqual({
      tag: 'commit',
      flags: 0,
      commitLsn: '00000016/B374D848',
      endLsn: '00000016/B374D878',
      commitTime: 5n
    });
  });

  it('decodes Relation (empty namespace = pg_catalog), Type and Origin', () => {
    const relation = new Builder()
      .byte('R')
      .int32(16385)
      .cstring('')
      .cstring('tëst')
      .byte('i')
      .int16(2)
      .byte(1)
      .cstring('id')
      .int32(20)
      .int32(-1)
      .byte(0)
      .cstring('name')
      .int32(1043)
      .int32(14)
      .build();
    expect(decodePgoutput(relation)).toEqual({
      tag: 'relation',
      relationId: 16385,
      schema: 'pg_catalog',
      name: 'tëst',
      replicaIdentity: 'index',
      columns: [
        { name: 'id', typeOid: 20, typeMod: -1, isKey: true },
        { name: 'name', typeOid: 1043, typeMod: 14, isKey: false }
      ]
    });
    expect(decodePgoutput(new Builder().byte('Y').int32(99999).cstring('public').cstring('mood').build())).toEqual({
      tag: 'type',
      typeOid: 99999,
      schema: 'public',
      name: 'mood'
    });
    expect(decodePgoutput(new Builder().byte('O').int64(0x1_00000000n).cstring('origin').build())).toEqual({
      tag: 'origin',
      originLsn: '00000001/00000000',
      name: 'origin'
    });
  });

  it('decodes tuples with text, null and unchanged TOAST values', () => {
    const update = new Builder()
      .byte('U')
      .int32(7)
      .byte('K')
      .int16(2)
      .text('1')
      .byte('n')
      .byte('N')
      .int16(3)
      .text('2')
      .byte('u')
      .text('')
      .build();
    expect(decodePgoutput(update)).toEqual({
      tag: 'update',
      relationId: 7,
      key: ['1', null],
      new: ['2', UNCHANGED_TOAST, '']
    });
    const insert = new Builder().byte('I').int32(7).byte('N').int16(1).text('héllo').build();
    expect(decodePgoutput(insert)).toEqual({ tag: 'insert', relationId: 7, new: ['héllo'] });
    const del = new Builder().byte('D').int32(7).byte('O').int16(1).byte('n').build();
    expect(decodePgoutput(del)).toEqual({ tag: 'delete', relationId: 7, old: [null] });
  });

  it('decodes Truncate and Message', () => {
    const truncate = new Builder().byte('T').int32(2).byte(3).int32(1).int32(0xffffffff).build();
    expect(decodePgoutput(truncate)).toEqual({
      tag: 'truncate',
      relationIds: [1, 0xffffffff],
      cascade: true,
      restartIdentity: true
    });
    const message = new Builder().byte('M').byte(0).int64(0x20n).cstring('powersync').int32(4).cstring('pin').build();
    message[message.length - 1] = 'g'.charCodeAt(0);
    const decoded = decodePgoutput(message);
    expect(decoded).toEqual({
      tag: 'message',
      transactional: false,
      lsn: '00000000/00000020',
      prefix: 'powersync',
      content: new TextEncoder().encode('ping')
    });
  });

  it('throws a clear error on every truncation of a message', () => {
    const update = new Builder()
      .byte('U')
      .int32(7)
      .byte('O')
      .int16(2)
      .text('1')
      .byte('n')
      .byte('N')
      .int16(1)
      .text('22')
      .build();
    for (let length = 1; length < update.length; length++) {
      expect(() => decodePgoutput(update.subarray(0, length)), `length ${length}`).toThrow(
        /^pgoutput: truncated Update message/
      );
    }
    for (let length = 1; length < begin.length; length++) {
      expect(() => decodePgoutput(begin.subarray(0, length))).toThrow(/truncated Begin message: need \d byte\(s\) for/);
    }
    expect(() => decodePgoutput(new Builder().byte('Y').int32(1).cstring('public').byte(0x41).build())).toThrow(
      /truncated Type message: unterminated string for type name/
    );
  });

  it('rejects empty, unknown, trailing, binary and non-v1 input', () => {
    expect(() => decodePgoutput(new Uint8Array())).toThrow('pgoutput: empty message');
    expect(() => decodePgoutput(Uint8Array.of(0x5a))).toThrow(/unknown message type byte 0x5a \("Z"\)/);
    expect(() => decodePgoutput(Uint8Array.of('S'.charCodeAt(0), 0, 0, 0, 1, 1))).toThrow(
      /Stream Start \(protocol version 2\)/
    );
    expect(() => decodePgoutput(new Builder().byte('T').int32(0).byte(0).byte(0).build())).toThrow(
      /1 unexpected trailing byte/
    );
    const binary = new Builder().byte('I').int32(7).byte('N').int16(1).byte('b').int32(1).byte(1).build();
    expect(() => decodePgoutput(binary)).toThrow(/binary column value \('b'\)/);
    expect(() => decodePgoutput(new Builder().byte('I').int32(7).byte('K').int16(0).build())).toThrow(
      /expected "N" in Insert message, got "K"/
    );
    expect(() => decodePgoutput(new Builder().byte('I').int32(7).byte('N').int16(1).byte('x').build())).toThrow(
      /unknown tuple column kind "x"/
    );
  });
});

describe('decodePgoutput on a real pgoutput stream', () => {
  let server: PostgresServer;
  let client: pg.Client;
  const database = 'syncpoint_pgoutput_decoder';
  const slot = `pgoutput_decoder_${process.pid}`;

  async function changes(): Promise<PgoutputMessage[]> {
    const { rows } = await client.query<{ data: Buffer }>(
      `SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
         'proto_version', '1', 'publication_names', 'powersync', 'messages', 'true')`,
      [slot]
    );
    return rows.map((row) => decodePgoutput(row.data));
  }

  beforeAll(async () => {
    server = await testPostgresServer();
    await server.ensureDatabase(database);
    client = new pg.Client({ connectionString: server.url(database), options: '-c TimeZone=UTC -c DateStyle=ISO' });
    await client.connect();
    await client.query(`
      SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '${slot}';
      DROP PUBLICATION IF EXISTS powersync;
      DROP TABLE IF EXISTS t_pk, t_full, t_enum;
      DROP TYPE IF EXISTS decoder_mood;
      CREATE TYPE decoder_mood AS ENUM ('sad', 'happy');
      CREATE TABLE t_pk (id int8 PRIMARY KEY, v text, big text);
      CREATE TABLE t_full (id int4 NOT NULL, v text);
      ALTER TABLE t_full REPLICA IDENTITY FULL;
      CREATE TABLE t_enum (id int4 PRIMARY KEY, mood decoder_mood);
      CREATE PUBLICATION powersync FOR ALL TABLES;
    `);
    await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  }, 120_000);

  afterAll(async () => {
    await client?.query(`SELECT pg_drop_replication_slot($1)`, [slot]).catch(() => {});
    await client?.end();
    await server?.stop();
  });

  it('decodes begin, relation, insert and commit', async () => {
    await client.query(`INSERT INTO t_pk (id, v) VALUES (1, 'a'), (2, NULL)`);
    const messages = await changes();
    expect(messages.map((m) => m.tag)).toEqual(['begin', 'relation', 'insert', 'insert', 'commit']);
    const [begin, relation, insert1, insert2, commit] = messages as [
      Extract<PgoutputMessage, { tag: 'begin' }>,
      Extract<PgoutputMessage, { tag: 'relation' }>,
      PgoutputMessage,
      PgoutputMessage,
      Extract<PgoutputMessage, { tag: 'commit' }>
    ];
    const relid = Number((await client.query<{ oid: string }>(`SELECT 't_pk'::regclass::oid AS oid`)).rows[0]!.oid);
    expect(relation).toEqual({
      tag: 'relation',
      relationId: relid,
      schema: 'public',
      name: 't_pk',
      replicaIdentity: 'default',
      columns: [
        { name: 'id', typeOid: 20, typeMod: -1, isKey: true },
        { name: 'v', typeOid: 25, typeMod: -1, isKey: false },
        { name: 'big', typeOid: 25, typeMod: -1, isKey: false }
      ]
    });
    expect(insert1).toEqual({ tag: 'insert', relationId: relid, new: ['1', 'a', null] });
    expect(insert2).toEqual({ tag: 'insert', relationId: relid, new: ['2', null, null] });
    expect(begin.finalLsn).toMatch(/^[0-9A-F]{8}\/[0-9A-F]{8}$/);
    expect(begin.finalLsn).toBe(commit.commitLsn);
    expect(commit.endLsn > commit.commitLsn).toBe(true);
    expect(commit.flags).toBe(0);
    expect(begin.commitTime).toBe(commit.commitTime);
    // Microseconds since 2000-01-01: within a minute of now.
    const commitMs = Number(commit.commitTime / 1000n) + Date.UTC(2000, 0, 1);
    expect(Math.abs(commitMs - Date.now())).toBeLessThan(60_000);
    expect(begin.xid).toBeGreaterThan(2); // a normal transaction id
  });

  it('reports unchanged TOASTed values and key changes in updates', async () => {
    // ~100 kB of incompressible text, stored out of line.
    await client.query(`
      INSERT INTO t_pk (id, v, big)
      SELECT 10, 'x', string_agg(encode(sha256(i::text::bytea), 'base64'), '') FROM generate_series(1, 2300) i`);
    const bigLength = Number(
      (await client.query<{ n: string }>(`SELECT length(big) AS n FROM t_pk WHERE id = 10`)).rows[0]!.n
    );
    expect(bigLength).toBeGreaterThan(100_000);
    await client.query(`UPDATE t_pk SET v = 'y' WHERE id = 10`);
    await client.query(`UPDATE t_pk SET id = 11 WHERE id = 10`);
    await client.query(`DELETE FROM t_pk WHERE id = 11`);
    const rows = (await changes()).filter((m) => m.tag !== 'begin' && m.tag !== 'commit' && m.tag !== 'relation');
    expect(rows.map((m) => m.tag)).toEqual(['insert', 'update', 'update', 'delete']);
    const [insert, update, keyUpdate, del] = rows as [
      Extract<PgoutputMessage, { tag: 'insert' }>,
      Extract<PgoutputMessage, { tag: 'update' }>,
      Extract<PgoutputMessage, { tag: 'update' }>,
      Extract<PgoutputMessage, { tag: 'delete' }>
    ];
    expect((insert.new[2] as string).length).toBe(bigLength);
    expect(update).toEqual({ tag: 'update', relationId: insert.relationId, new: ['10', 'y', UNCHANGED_TOAST] });
    // Key change: the old key is sent (non-key columns null); the TOASTed value stays unchanged.
    expect(keyUpdate).toEqual({
      tag: 'update',
      relationId: insert.relationId,
      key: ['10', null, null],
      new: ['11', 'y', UNCHANGED_TOAST]
    });
    expect(del).toEqual({ tag: 'delete', relationId: insert.relationId, key: ['11', null, null] });
  });

  it('sends full old rows with REPLICA IDENTITY FULL', async () => {
    await client.query(`INSERT INTO t_full VALUES (1, 'a')`);
    await client.query(`UPDATE t_full SET v = 'b'`);
    await client.query(`DELETE FROM t_full`);
    const messages = await changes();
    const relation = messages.find((m) => m.tag === 'relation');
    expect(relation).toMatchObject({
      name: 't_full',
      replicaIdentity: 'full',
      columns: [
        { name: 'id', typeOid: 23, isKey: true },
        { name: 'v', typeOid: 25, isKey: true }
      ]
    });
    const rows = messages.filter((m) => ['insert', 'update', 'delete'].includes(m.tag));
    expect(rows).toEqual([
      { tag: 'insert', relationId: (relation as { relationId: number }).relationId, new: ['1', 'a'] },
      { tag: 'update', relationId: (relation as { relationId: number }).relationId, old: ['1', 'a'], new: ['1', 'b'] },
      { tag: 'delete', relationId: (relation as { relationId: number }).relationId, old: ['1', 'b'] }
    ]);
  });

  it('sends a Type message before a relation with a non-builtin column type', async () => {
    await client.query(`INSERT INTO t_enum VALUES (1, 'happy')`);
    const messages = await changes();
    expect(messages.map((m) => m.tag)).toEqual(['begin', 'type', 'relation', 'insert', 'commit']);
    const moodOid = Number(
      (await client.query<{ oid: string }>(`SELECT 'decoder_mood'::regtype::oid AS oid`)).rows[0]!.oid
    );
    expect(messages[1]).toEqual({ tag: 'type', typeOid: moodOid, schema: 'public', name: 'decoder_mood' });
    expect(messages[2]).toMatchObject({
      columns: [
        { name: 'id', typeOid: 23 },
        { name: 'mood', typeOid: moodOid }
      ]
    });
    expect(messages[3]).toMatchObject({ new: ['1', 'happy'] });
  });

  it('decodes truncate', async () => {
    await client.query(`TRUNCATE t_pk, t_full`);
    await client.query(`TRUNCATE t_enum RESTART IDENTITY CASCADE`);
    const truncates = (await changes()).filter((m) => m.tag === 'truncate');
    const oids = (
      await client.query<{ a: string; b: string; c: string }>(
        `SELECT 't_pk'::regclass::oid AS a, 't_full'::regclass::oid AS b, 't_enum'::regclass::oid AS c`
      )
    ).rows[0]!;
    expect(truncates).toEqual([
      { tag: 'truncate', relationIds: [Number(oids.a), Number(oids.b)], cascade: false, restartIdentity: false },
      { tag: 'truncate', relationIds: [Number(oids.c)], cascade: true, restartIdentity: true }
    ]);
  });

  it('decodes transactional and non-transactional logical messages', async () => {
    const { rows } = await client.query<{ lsn: string }>(
      `SELECT pg_logical_emit_message(false, 'powersync', 'ping')::text AS lsn`
    );
    // The non-transactional message is only decoded once the WAL is flushed past it: the commit below does that.
    await client.query(`SELECT pg_logical_emit_message(true, 'powersync', 'ping')`);
    const messages = await changes();
    expect(messages.map((m) => m.tag)).toEqual(['message', 'begin', 'message', 'commit']);
    const ping = new TextEncoder().encode('ping');
    const [high, low] = rows[0]!.lsn.split('/');
    expect(messages[0]).toEqual({
      tag: 'message',
      transactional: false,
      lsn: `${high!.padStart(8, '0')}/${low!.padStart(8, '0')}`,
      prefix: 'powersync',
      content: ping
    });
    expect(messages[2]).toMatchObject({ tag: 'message', transactional: true, prefix: 'powersync', content: ping });
    expect((messages[2] as { lsn: string }).lsn > (messages[0] as { lsn: string }).lsn).toBe(true);
  });

  it('decodes Origin messages of transactions replayed with a replication origin', async () => {
    await client.query(
      `SELECT pg_replication_origin_drop('decoder_origin') FROM pg_replication_origin WHERE roname = 'decoder_origin'`
    );
    await client.query(`SELECT pg_replication_origin_create('decoder_origin')`);
    await client.query(`SELECT pg_replication_origin_session_setup('decoder_origin')`);
    try {
      await client.query('BEGIN');
      await client.query(`SELECT pg_replication_origin_xact_setup('AB/CDEF0123', now())`);
      await client.query(`INSERT INTO t_full VALUES (5, 'o')`);
      await client.query('COMMIT');
    } finally {
      await client.query(`SELECT pg_replication_origin_session_reset()`);
      await client.query(`SELECT pg_replication_origin_drop('decoder_origin')`);
    }
    const messages = await changes();
    // The relation is sent again: the TRUNCATE above invalidated it.
    expect(messages.map((m) => m.tag)).toEqual(['begin', 'origin', 'relation', 'insert', 'commit']);
    expect(messages[1]).toEqual({ tag: 'origin', originLsn: '000000AB/CDEF0123', name: 'decoder_origin' });
  });
});
