import { testPostgresServer, type PostgresServer } from '@syncpoint/dev-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CopyEncodingError, copyLinesIn, copyTextField } from '../src/copy-text.js';

/** Values that break naive text encodings: separators, escapes, the null marker spelled out, and non-ASCII. */
const AWKWARD = [
  '',
  'plain',
  'tab\there',
  'line\nbreak',
  'carriage\r\nreturn',
  'back\\slash',
  '\\N',
  '\\',
  'ends with backslash\\',
  '{"json":"with \\"quotes\\" and \\\\ escapes","n":[1,2]}',
  'unicode: é ñ 中文 🙂 \u2028',
  '\t\n\\\r',
  'x'.repeat(300_000) // longer than one chunk sent to the socket
];

describe('COPY text encoding', () => {
  it('escapes backslash, tab, newline and carriage return; null is \\N; other text is unchanged', () => {
    expect(copyTextField(null)).toBe('\\N');
    expect(copyTextField('plain é 🙂')).toBe('plain é 🙂');
    expect(copyTextField('a\tb\nc\rd\\e')).toBe('a\\tb\\nc\\rd\\\\e');
    expect(copyTextField('\\N')).toBe('\\\\N');
  });

  it('refuses a NUL character with a stable code', () => {
    expect(() => copyTextField('a\0b')).toThrow(CopyEncodingError);
    try {
      copyTextField('\0');
    } catch (error) {
      expect((error as CopyEncodingError).code).toBe('COPY_NUL_CHARACTER');
    }
  });
});

describe('COPY into Postgres', () => {
  let server: PostgresServer;
  let pool: pg.Pool;
  beforeAll(async () => {
    server = await testPostgresServer();
    const database = `syncpoint_copy_${process.pid}`;
    await server.ensureDatabase(database);
    pool = new pg.Pool({ connectionString: server.url(database), max: 2 });
    await pool.query(`CREATE TABLE copied (n int4 PRIMARY KEY, big int8, value text)`);
  });
  afterAll(async () => {
    await pool?.end();
    await server?.stop();
  });

  it('round-trips awkward text, nulls and int8 extremes exactly, inside the caller’s transaction', async () => {
    const rows: Array<{ n: number; big: string | null; value: string | null }> = [
      ...AWKWARD.map((value, n) => ({ n, big: String(n), value })),
      { n: 100, big: '9223372036854775807', value: null },
      { n: 101, big: '-9223372036854775808', value: 'min' },
      { n: 102, big: null, value: 'null int8' }
    ];
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await copyLinesIn(
        client,
        'COPY copied (n, big, value) FROM STDIN',
        rows.map((row) => `${row.n}\t${copyTextField(row.big)}\t${copyTextField(row.value)}\n`)
      );
      // Not visible outside the transaction before COMMIT.
      expect((await pool.query<{ c: number }>('SELECT count(*)::int AS c FROM copied')).rows[0]!.c).toBe(0);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const { rows: stored } = await pool.query<{ n: number; big: string | null; value: string | null }>(
      'SELECT n, big::text AS big, value FROM copied ORDER BY n'
    );
    expect(stored).toEqual(rows);
  });

  it('a failing COPY fails the call and leaves the transaction to roll back', async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await expect(
        copyLinesIn(client, 'COPY copied (n, big, value) FROM STDIN', ['200\tnot a number\tx\n'])
      ).rejects.toThrow(/invalid input syntax/);
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    expect((await pool.query<{ c: number }>('SELECT count(*)::int AS c FROM copied WHERE n = 200')).rows[0]!.c).toBe(0);
  });
});
