import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import { sourceSchema } from '@syncpoint/test-fixtures';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodePgoutput,
  UNCHANGED_TOAST,
  type PgoutputMessage,
  type RelationColumn
} from '../src/replication/pgoutput-decoder.js';
import { TypeCatalog } from '../src/replication/type-catalog.js';
import { convertTuple, convertValue, type SqliteValue } from '../src/replication/value-conversion.js';

/** What each column of the fixture's `all_types` table converts to. */
interface Case {
  /** Test and column name (`c_<name>`). */
  name: string;
  /** The column's type (the value itself is in the test-fixtures `all-types` schema's seed row 1). */
  type: string;
  expected: SqliteValue;
  /**
   * When `col::text` differs from the type's output function (what pgoutput sends and what a plain
   * `SELECT col` returns in text format): the converted value of the `::text` form.
   */
  castExpected?: SqliteValue;
}

const allTypes = sourceSchema('all-types');
const bytes = (...values: number[]) => Uint8Array.from(values);

const CASES: Case[] = [
  { name: 'bool_true', type: 'bool', expected: 1n },
  { name: 'bool_false', type: 'bool', expected: 0n },
  { name: 'bytea', type: 'bytea', expected: bytes(0, 255, 16) },
  { name: 'bytea_empty', type: 'bytea', expected: bytes() },
  { name: 'char', type: '"char"', expected: 'a' },
  { name: 'name', type: 'name', expected: 'hello' },
  { name: 'int8_max', type: 'int8', expected: 9223372036854775807n },
  { name: 'int8_min', type: 'int8', expected: -9223372036854775808n },
  { name: 'int2', type: 'int2', expected: -32768n },
  { name: 'int4', type: 'int4', expected: 2147483647n },
  {
    name: 'text',
    type: 'text',
    expected: 'héllo "wörld"\n\ttab \\ end'
  },
  { name: 'oid', type: 'oid', expected: 4294967295n },
  {
    name: 'json',
    type: 'json',
    expected: '{"b": 12345678901234567890, "a" : [1, 2.50, 1e400]}'
  },
  { name: 'xml', type: 'xml', expected: '<a x="1">b</a>' },
  { name: 'float4', type: 'float4', expected: 0.1 },
  { name: 'float8', type: 'float8', expected: 3.141592653589793 },
  { name: 'float8_large', type: 'float8', expected: 1e300 },
  { name: 'float8_negative_zero', type: 'float8', expected: -0 },
  { name: 'float8_nan', type: 'float8', expected: 'NaN' },
  { name: 'float8_infinity', type: 'float8', expected: 'Infinity' },
  { name: 'float4_negative_infinity', type: 'float4', expected: '-Infinity' },
  // bpchar → text casts strip the padding; the output function (and pgoutput) keeps it.
  { name: 'bpchar', type: 'char(5)', expected: 'ab   ', castExpected: 'ab' },
  { name: 'varchar', type: 'varchar(10)', expected: 'abc' },
  { name: 'date', type: 'date', expected: '2024-02-29' },
  { name: 'date_bc', type: 'date', expected: '0044-03-15 BC' },
  { name: 'date_infinity', type: 'date', expected: 'infinity' },
  { name: 'time', type: 'time', expected: '12:34:56.789' },
  { name: 'timestamp', type: 'timestamp', expected: '2024-01-02 03:04:05.123456' },
  { name: 'timestamp_whole_seconds', type: 'timestamp', expected: '2024-01-02 03:04:05' },
  { name: 'timestamp_infinity', type: 'timestamp', expected: 'infinity' },
  {
    name: 'timestamptz',
    type: 'timestamptz',
    expected: '2024-01-02 03:04:05.123456Z'
  },
  {
    name: 'timestamptz_offset',
    type: 'timestamptz',
    expected: '2023-12-31 23:30:00.5Z'
  },
  {
    name: 'timestamptz_bc',
    type: 'timestamptz',
    expected: '0044-03-15 12:00:00+00 BC'
  },
  { name: 'timestamptz_minus_infinity', type: 'timestamptz', expected: '-infinity' },
  { name: 'interval', type: 'interval', expected: '1 day 02:03:04.5' },
  { name: 'timetz', type: 'timetz', expected: '12:00:00+02' },
  { name: 'bit', type: 'bit(4)', expected: '1010' },
  { name: 'varbit', type: 'varbit', expected: '101' },
  {
    name: 'numeric',
    type: 'numeric',
    expected: '1234567890123456789012345678901234567890.0123456789'
  },
  { name: 'numeric_scale', type: 'numeric(10,4)', expected: '1.5000' },
  { name: 'numeric_nan', type: 'numeric', expected: 'NaN' },
  {
    name: 'uuid',
    type: 'uuid',
    expected: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'
  },
  { name: 'pg_lsn', type: 'pg_lsn', expected: '00000016/B374D848' },
  {
    name: 'jsonb',
    type: 'jsonb',
    expected: '{"a": [1, 2.50, "x"], "n": null, "big": 12345678901234567890}'
  },
  { name: 'enum', type: 'all_types_mood', expected: 'happy' },
  { name: 'domain_int8', type: 'all_types_posint8', expected: 9223372036854775807n },
  { name: 'inet', type: 'inet', expected: '10.0.0.1/8' },
  // inet → text casts always print the netmask; the output function omits /32.
  { name: 'inet_host', type: 'inet', expected: '10.0.0.1', castExpected: '10.0.0.1/32' },
  { name: 'null', type: 'text', expected: null },
  // Arrays
  { name: 'bool_array', type: 'bool[]', expected: '[1,0,null]' },
  { name: 'bytea_array', type: 'bytea[]', expected: '["\\\\x0102",null]' },
  { name: 'int2_array', type: 'int2[]', expected: '[1,-2]' },
  { name: 'int4_array_empty', type: 'int4[]', expected: '[]' },
  { name: 'int4_array_2d', type: 'int4[]', expected: '[[1,2],[3,null]]' },
  { name: 'int4_array_lower_bound', type: 'int4[]', expected: '[5,6]' },
  {
    name: 'int8_array',
    type: 'int8[]',
    expected: '[1,-9223372036854775808,9223372036854775807,null]'
  },
  {
    name: 'text_array',
    type: 'text[]',
    expected: JSON.stringify(['a"b', 'c,d', 'e\\f', null, 'NULL', 'null', '', ' sp ', 'x{y}', 'ü'])
  },
  { name: 'text_array_3d', type: 'text[]', expected: '[[["a"]],[["b"]]]' },
  { name: 'varchar_array', type: 'varchar[]', expected: '["a","b"]' },
  { name: 'float4_array', type: 'float4[]', expected: '[0.1,-2.5]' },
  {
    name: 'float8_array',
    type: 'float8[]',
    expected: '[1.5,"NaN","-Infinity",1e+300]'
  },
  {
    name: 'numeric_array',
    type: 'numeric[]',
    expected: '["1.10","NaN","12345678901234567890123"]'
  },
  {
    name: 'uuid_array',
    type: 'uuid[]',
    expected: '["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]'
  },
  {
    name: 'json_array',
    type: 'json[]',
    expected: '[{"a": 12345678901234567890},null,[1, "x,y"],"s",null]'
  },
  {
    name: 'jsonb_array',
    type: 'jsonb[]',
    expected: '[{"a": 12345678901234567890, "b": 1},"q\\"uote"]'
  },
  { name: 'date_array', type: 'date[]', expected: '["2024-01-01",null]' },
  {
    name: 'timestamp_array',
    type: 'timestamp[]',
    expected: '["2024-01-02 03:04:05.5","infinity"]'
  },
  {
    name: 'timestamptz_array',
    type: 'timestamptz[]',
    expected: '["2024-01-02 02:04:05.5Z"]'
  },
  { name: 'pg_lsn_array', type: 'pg_lsn[]', expected: '["00000016/B374D848"]' },
  { name: 'box_array', type: 'box[]', expected: '["(1,1),(0,0)","(2,2),(1,1)"]' },
  { name: 'enum_array', type: 'all_types_mood[]', expected: '["happy","sad",null]' },
  { name: 'domain_array', type: 'all_types_posint8[]', expected: '[1,9223372036854775807]' },
  { name: 'domain_over_array', type: 'all_types_int8s', expected: '[1,2]' }
];

describe('value conversion of streamed and snapshot values', () => {
  let server: PostgresServer;
  let client: pg.Client;
  const database = 'syncpoint_value_conversion';
  const slot = `value_conversion_${process.pid}`;
  const catalog = new TypeCatalog();
  let columns: RelationColumn[];
  let streamed: Map<number, PgoutputMessage[]>; // by relation id
  let relations: Map<string, { relationId: number; columns: RelationColumn[] }>;
  /** Snapshot read as `SELECT col::text`. */
  let snapshotCast: Record<string, string | null>;
  /** Snapshot read as `SELECT col` with every value left as Postgres's text output. */
  let snapshotRaw: Record<string, string | null>;

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
    await client.query(`SET TimeZone = 'UTC'`);
    await client.query(`
      SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '${slot}';
      DROP PUBLICATION IF EXISTS powersync;
      DROP TABLE IF EXISTS all_types, vc_toast;
      DROP DOMAIN IF EXISTS all_types_posint8, all_types_int8s;
      DROP TYPE IF EXISTS all_types_mood;
      ${allTypes.ddl}
      CREATE TABLE vc_toast (id int8 PRIMARY KEY, big text, n int4);
      ALTER TABLE vc_toast REPLICA IDENTITY FULL;
      CREATE PUBLICATION powersync FOR ALL TABLES;
    `);
    await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    await client.query(allTypes.seed);
    await client.query(`
      INSERT INTO vc_toast (id, big, n)
      SELECT 1, string_agg(encode(sha256(i::text::bytea), 'base64'), ''), 1 FROM generate_series(1, 2300) i`);
    await client.query(`UPDATE vc_toast SET n = 2`);

    const messages = await changes();
    relations = new Map();
    streamed = new Map();
    for (const message of messages) {
      if (message.tag === 'relation') relations.set(message.name, message);
      if (message.tag === 'insert' || message.tag === 'update') {
        streamed.set(message.relationId, [...(streamed.get(message.relationId) ?? []), message]);
      }
    }
    columns = relations.get('all_types')!.columns;
    await catalog.load(
      client,
      [...relations.values()].flatMap((relation) => relation.columns.map((column) => column.typeOid))
    );

    // The snapshot path, with the same session settings: every column cast to text (column names of
    // `x::text` are the original names) ...
    const cast = await client.query<Record<string, string | null>>(
      `SELECT ${columns.map((c) => `${pg.escapeIdentifier(c.name)}::text`).join(', ')} FROM all_types ORDER BY id`
    );
    snapshotCast = cast.rows[0]!;
    expect(cast.rows[1]!.id).toBe('2');
    // ... and the plain columns in text format, without pg's type parsers (the type output functions).
    const raw = await client.query<Record<string, string | null>>({
      text: `SELECT * FROM all_types ORDER BY id`,
      types: { getTypeParser: () => (text: string) => text }
    });
    snapshotRaw = raw.rows[0]!;
  }, 120_000);

  afterAll(async () => {
    await client?.query(`SELECT pg_drop_replication_slot($1)`, [slot]).catch(() => {});
    await client?.end();
    await server?.stop();
  });

  function streamedRow(index: number) {
    const inserts = streamed.get(relations.get('all_types')!.relationId)!;
    const insert = inserts[index] as Extract<PgoutputMessage, { tag: 'insert' }>;
    return convertTuple(columns, insert.new, catalog);
  }

  it('has an expectation for every column of the fixture table, in its order', () => {
    expect(columns.map((c) => c.name)).toEqual(['id', ...CASES.map((c) => `c_${c.name}`)]);
  });

  it.each(CASES)('$name ($type)', ({ name, expected, castExpected }) => {
    const column = columns.find((c) => c.name === `c_${name}`)!;
    const { row, unchangedToast } = streamedRow(0);
    expect(unchangedToast).toEqual([]);
    expect(row[column.name]).toStrictEqual(expected);
    expect(convertValue(snapshotRaw[column.name]!, column.typeOid, catalog)).toStrictEqual(expected);
    expect(convertValue(snapshotCast[column.name]!, column.typeOid, catalog)).toStrictEqual(
      castExpected === undefined ? expected : castExpected
    );
  });

  it('converts the key column and an all-NULL row', () => {
    expect(streamedRow(0).row.id).toBe(1n);
    const { row } = streamedRow(1);
    expect(row).toStrictEqual({ id: 2n, ...Object.fromEntries(CASES.map((c) => [`c_${c.name}`, null])) });
  });

  it('loads enum, domain and array types from pg_type', () => {
    const typeOf = (name: string) => columns.find((c) => c.name === `c_${name}`)!.typeOid;
    expect(catalog.get(typeOf('enum'))).toMatchObject({ name: 'all_types_mood', category: 'text' });
    expect(catalog.get(typeOf('domain_int8'))).toMatchObject({ name: 'all_types_posint8', category: 'integer' });
    expect(catalog.get(typeOf('enum_array'))).toMatchObject({
      name: '_all_types_mood',
      category: 'array',
      elementOid: typeOf('enum')
    });
    expect(catalog.get(typeOf('domain_array'))).toMatchObject({ category: 'array', elementOid: typeOf('domain_int8') });
    expect(catalog.get(typeOf('domain_over_array'))).toMatchObject({
      name: 'all_types_int8s',
      category: 'array',
      elementOid: 20
    });
  });

  it('omits unchanged TOASTed columns and lists them', () => {
    const relation = relations.get('vc_toast')!;
    const [insert, update] = streamed.get(relation.relationId)! as [
      Extract<PgoutputMessage, { tag: 'insert' }>,
      Extract<PgoutputMessage, { tag: 'update' }>
    ];
    expect(convertTuple(relation.columns, insert.new, catalog).row).toMatchObject({ id: 1n, n: 1n });
    // REPLICA IDENTITY FULL: the old row carries the TOASTed value, the new one does not (Postgres < 16 and ≥ 16 alike).
    expect(update.new[1]).toBe(UNCHANGED_TOAST);
    expect(convertTuple(relation.columns, update.new, catalog)).toStrictEqual({
      row: { id: 1n, n: 2n },
      unchangedToast: ['big']
    });
  });
});

describe('convertValue without a server', () => {
  const catalog = new TypeCatalog();

  it('shifts timestamptz offsets to UTC and keeps the fraction digits', () => {
    expect(convertValue('2024-01-02 03:04:05.123+05:30', 1184, catalog)).toBe('2024-01-01 21:34:05.123Z');
    expect(convertValue('2024-02-28 23:00:00-01:00:30', 1184, catalog)).toBe('2024-02-29 00:00:30Z');
    expect(convertValue('12345-01-01 00:00:00+00', 1184, catalog)).toBe('12345-01-01 00:00:00Z');
    expect(convertValue('Tue Jan 02 03:04:05.5 2024 UTC', 1184, catalog)).toBe('Tue Jan 02 03:04:05.5 2024 UTC');
  });

  it('decodes the escape bytea format', () => {
    expect(convertValue('a\\000\\\\\\377', 17, catalog)).toStrictEqual(bytes(0x61, 0, 0x5c, 0xff));
    expect(() => convertValue('\\x0', 17, catalog)).toThrow(/invalid bytea hex/);
  });

  it('parses array text with whitespace, escapes and quoted NULL', () => {
    expect(convertValue('{ 1 , 2 }', 1007, catalog)).toBe('[1,2]');
    expect(convertValue('{"NULL",NULL,nUlL,"a\\\\b\\"c"}', 1009, catalog)).toBe('["NULL",null,null,"a\\\\b\\"c"]');
    expect(convertValue('[1:1][0:1]={{a,b}}', 1009, catalog)).toBe('[["a","b"]]');
    expect(() => convertValue('{1,2', 1007, catalog)).toThrow(/invalid Postgres array text/);
    expect(() => convertValue('1,2', 1007, catalog)).toThrow(
      /invalid Postgres array text at offset 0 \(expected '\{'\)/
    );
  });

  it('treats unknown OIDs as text and rejects tuples of the wrong width', () => {
    expect(convertValue('whatever', 999_999, catalog)).toBe('whatever');
    expect(() => convertTuple([{ name: 'a', typeOid: 25 }], [], catalog)).toThrow(
      /tuple has 0 value\(s\) but the relation has 1 column/
    );
  });
});
