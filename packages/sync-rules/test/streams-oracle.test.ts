/**
 * The test oracle of STREAMS.md §4.5: for random table contents and random connection data, the union of
 * rows in a subscription's buckets equals the result of the stream query run by real SQLite (better-sqlite3)
 * with that subscription's connection data. Rows go through `evaluateRow`, index tables through
 * `evaluateParameterRow`, and the buckets through `resolveConnection` reading those index entries — the same
 * path replication and the sync stream take.
 */
import { readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterAll, describe, expect, test } from 'vitest';
import type { ConnectionRequest, ParameterLookup, SqliteValue, SyncRules } from '../src/index.js';
import { parseSyncRules, serializeParameterLookup } from '../src/index.js';

const YAML = readFileSync(new URL('../../../test-fixtures/sync-configs/streams-boards.yaml', import.meta.url), 'utf8');

/**
 * Each stream's query written for SQLite: `:user` is `auth.user_id()`, `:id` / `:ids` the subscription's
 * parameters (`:ids` as JSON text). Same meaning, SQLite syntax.
 */
const SQLITE_QUERIES: Record<string, { table: string; sql: string }> = {
  board: {
    table: 'cards',
    sql: 'SELECT id FROM cards WHERE board_id = :id AND board_id IN (SELECT board_id FROM board_members WHERE user_id = :user)'
  },
  my_boards: { table: 'boards', sql: 'SELECT id FROM boards WHERE owner_id = :user OR is_public' },
  member_cards: {
    table: 'cards',
    sql: 'SELECT id FROM cards WHERE board_id IN (SELECT board_id FROM board_members WHERE user_id = :user)'
  },
  team_cards: {
    table: 'c',
    sql: 'SELECT DISTINCT c.id FROM cards c JOIN boards b ON c.board_id = b.id JOIN team_members m ON m.team_id = b.team_id WHERE m.user_id = :user'
  },
  picked: { table: 'boards', sql: 'SELECT id FROM boards WHERE id IN (SELECT value FROM json_each(:ids))' },
  edited: {
    table: 'boards',
    sql: 'SELECT id FROM boards WHERE :user IN (SELECT value FROM json_each(boards.editors))'
  },
  admin_only: {
    table: 'cards',
    sql: "SELECT id FROM cards WHERE 'admin' IN (SELECT role FROM board_members WHERE user_id = :user)"
  },
  open_or_mine: {
    table: 'cards',
    sql: "SELECT id FROM cards WHERE state = 'open' OR board_id IN (SELECT id FROM boards WHERE owner_id = :user)"
  }
};

const users = ['u0', 'u1', 'u2'];
const boardIds = ['b0', 'b1', 'b2', 'b3'];

const data = fc.record({
  boards: fc.uniqueArray(
    fc.record({
      id: fc.constantFrom(...boardIds),
      owner_id: fc.option(fc.constantFrom(...users)),
      team_id: fc.option(fc.constantFrom('t0', 't1')),
      is_public: fc.constantFrom(0n, 1n),
      editors: fc.array(fc.constantFrom(...users), { maxLength: 2 }).map((list) => JSON.stringify(list))
    }),
    { selector: (board) => board.id }
  ),
  cards: fc.uniqueArray(
    fc.record({
      id: fc.constantFrom('c0', 'c1', 'c2', 'c3', 'c4', 'c5'),
      board_id: fc.option(fc.constantFrom(...boardIds, 'b9')),
      state: fc.constantFrom('open', 'done')
    }),
    { selector: (card) => card.id }
  ),
  board_members: fc.array(
    fc.record({
      board_id: fc.constantFrom(...boardIds),
      user_id: fc.constantFrom(...users),
      role: fc.constantFrom('admin', 'member')
    }),
    { maxLength: 6 }
  ),
  team_members: fc.array(fc.record({ team_id: fc.constantFrom('t0', 't1'), user_id: fc.constantFrom(...users) }), {
    maxLength: 4
  })
});

type Tables = Record<string, Array<Record<string, SqliteValue>>>;

const sqlite = new Database(':memory:');
sqlite.defaultSafeIntegers(true);
afterAll(() => sqlite.close());
sqlite.exec(`
  CREATE TABLE boards (id TEXT, owner_id TEXT, team_id TEXT, is_public INTEGER, editors TEXT);
  CREATE TABLE cards (id TEXT, board_id TEXT, state TEXT);
  CREATE TABLE board_members (board_id TEXT, user_id TEXT, role TEXT);
  CREATE TABLE team_members (team_id TEXT, user_id TEXT);
`);

function load(tables: Tables): void {
  for (const [name, rows] of Object.entries(tables)) {
    sqlite.exec(`DELETE FROM ${name}`);
    for (const row of rows) {
      const columns = Object.keys(row);
      sqlite
        .prepare(`INSERT INTO ${name} (${columns.join(', ')}) VALUES (${columns.map((c) => `@${c}`).join(', ')})`)
        .run(row);
    }
  }
}

/** What replication stores: bucket → rows, and the parameter index. */
function replicate(rules: SyncRules, tables: Tables) {
  const buckets = new Map<string, Set<string>>();
  const index = new Map<string, Array<Record<string, SqliteValue>>>();
  for (const [table, rows] of Object.entries(tables)) {
    for (const row of rows) {
      const evaluated = rules.evaluateRow({ table, row });
      expect(evaluated.errors).toEqual([]);
      for (const bucketRow of evaluated.buckets) {
        const set = buckets.get(bucketRow.bucket) ?? new Set();
        set.add(`${bucketRow.table}/${bucketRow.id}`);
        buckets.set(bucketRow.bucket, set);
      }
      const parameters = rules.evaluateParameterRow({ table, row });
      expect(parameters.errors).toEqual([]);
      for (const entry of parameters.lookups)
        index.set(entry.serializedLookup, [...(index.get(entry.serializedLookup) ?? []), ...entry.outputs]);
    }
  }
  const fetchLookups = (lookups: ParameterLookup[]) =>
    Promise.resolve(lookups.map((lookup) => index.get(serializeParameterLookup(lookup)) ?? []));
  return { buckets, fetchLookups };
}

describe('stream buckets match the SQL result of the stream query (§4.5 oracle)', () => {
  const loaded = parseSyncRules(YAML, { deploymentId: 7 });
  if (!loaded.ok) throw new Error(loaded.errors.map((error) => error.message).join('\n'));
  const rules = loaded.rules;

  test.each(Object.keys(SQLITE_QUERIES))('%s', async (stream) => {
    const { table, sql } = SQLITE_QUERIES[stream]!;
    await fc.assert(
      fc.asyncProperty(
        data,
        fc.constantFrom(...users, 'nobody'),
        fc.constantFrom(...boardIds),
        fc.array(fc.constantFrom(...boardIds, 'b9'), { maxLength: 3 }),
        async (tables, user, id, ids) => {
          load(tables);
          const { buckets, fetchLookups } = replicate(rules, tables);
          const request: ConnectionRequest = {
            userId: user,
            tokenParameters: { sub: user },
            includeDefaults: false,
            subscriptions: [{ stream, parameters: { id, ids }, overridePriority: null }]
          };
          const resolved = await rules.resolveConnection(request, fetchLookups);
          expect(resolved.streams).toEqual([{ name: stream, isDefault: stream === 'my_boards', errors: [] }]);
          const synced = new Set<string>();
          for (const bucket of resolved.buckets) {
            expect(bucket.subscriptions).toEqual([{ sub: 0 }]);
            for (const row of buckets.get(bucket.bucket) ?? []) synced.add(row);
          }
          const values: Record<string, string> = { user, id, ids: JSON.stringify(ids) };
          const used = Object.fromEntries(Object.entries(values).filter(([name]) => sql.includes(`:${name}`)));
          const expected = (sqlite.prepare(sql).all(used) as Array<{ id: string }>).map((row) => `${table}/${row.id}`);
          expect([...synced].sort()).toEqual([...new Set(expected)].sort());
        }
      ),
      { numRuns: 60 }
    );
  });
});
