import { createHash } from 'node:crypto';
import { addChecksums, toSignedChecksum } from '@syncpoint/codecs';
import { describe, expect, it } from 'vitest';
import { evaluateRowChange, putChecksum, removeChecksum, replicaKeyOf, subkeyOf } from '../src/index.js';
import { lists, members, rules } from './lists-rules.js';

describe('checksums (PROTOCOL §7.5)', () => {
  it('are the first 4 bytes of SHA-256 read as little-endian u32', () => {
    // sha256("put.t.1.{}") starts with bytes that read as this LE integer (computed independently below).
    const expected = createHash('sha256').update('put.t.1.{}').digest().readUInt32LE(0);
    expect(putChecksum('t', '1', '{}')).toBe(expected);
    expect(removeChecksum('x')).toBeGreaterThanOrEqual(0);
    expect(removeChecksum('x')).toBeLessThan(2 ** 32);
  });
  it('add with wrap-around and convert to signed int32', () => {
    expect(addChecksums(0xffffffff, 2)).toBe(1);
    expect(toSignedChecksum(0xffffffff)).toBe(-1);
    expect(toSignedChecksum(5)).toBe(5);
  });
});

describe('evaluateRowChange (PROTOCOL §8.3)', () => {
  const key = replicaKeyOf(lists, { id: 'l1' });
  const subkey = subkeyOf(lists, key);

  it('puts an inserted row in every matching bucket', () => {
    const ops = evaluateRowChange(
      rules,
      { kind: 'insert', table: lists, after: { id: 'l1', title: 'A', owner_id: 'u1' } },
      null,
      subkey
    );
    expect(ops.puts.map((p) => p.bucket).sort()).toEqual(['by_member["l1"]', 'by_owner["u1"]', 'global[]']);
    expect(ops.puts[0]).toMatchObject({ table: 'lists', id: 'l1', subkey, data: '{"id":"l1","title":"A"}' });
    expect(ops.puts[0]!.checksum).toBe(putChecksum('lists', 'l1', '{"id":"l1","title":"A"}'));
    expect(ops.removes).toEqual([]);
    expect(ops.state?.buckets).toHaveLength(3);
  });

  it('removes a row from buckets it left, with the subkey checksum', () => {
    const before = evaluateRowChange(
      rules,
      { kind: 'insert', table: lists, after: { id: 'l1', title: 'A', owner_id: 'u1' } },
      null,
      subkey
    );
    const after = evaluateRowChange(
      rules,
      { kind: 'update', table: lists, after: { id: 'l1', title: 'B', owner_id: 'u2' } },
      before.state,
      subkey
    );
    expect(after.removes).toEqual([
      { bucket: 'by_owner["u1"]', table: 'lists', id: 'l1', subkey, checksum: removeChecksum(subkey) }
    ]);
    expect(after.puts.map((p) => p.bucket).sort()).toEqual(['by_member["l1"]', 'by_owner["u2"]', 'global[]']);
  });

  it('removes a deleted row everywhere and forgets it', () => {
    const before = evaluateRowChange(
      rules,
      { kind: 'insert', table: lists, after: { id: 'l1', title: 'A', owner_id: 'u1' } },
      null,
      subkey
    );
    const deleted = evaluateRowChange(
      rules,
      { kind: 'delete', table: lists, beforeKey: { id: 'l1' } },
      before.state,
      subkey
    );
    expect(deleted.puts).toEqual([]);
    expect(deleted.removes).toHaveLength(3);
    expect(deleted.state).toBeNull();
  });

  it('stores parameter lookups and reports the ones a row leaves', () => {
    const memberKey = subkeyOf(members, replicaKeyOf(members, { id: 'm1' }));
    const first = evaluateRowChange(
      rules,
      { kind: 'insert', table: members, after: { id: 'm1', user_id: 'u1', list_id: 'l1' } },
      null,
      memberKey
    );
    expect(first.lookups).toHaveLength(1);
    expect(first.lookups[0]!.outputs).toEqual([{ list_id: 'l1' }]);
    const moved = evaluateRowChange(
      rules,
      { kind: 'update', table: members, after: { id: 'm1', user_id: 'u2', list_id: 'l1' } },
      first.state,
      memberKey
    );
    expect(moved.removedLookups).toEqual([first.lookups[0]!.serializedLookup]);
    const gone = evaluateRowChange(
      rules,
      { kind: 'delete', table: members, beforeKey: { id: 'm1' } },
      moved.state,
      memberKey
    );
    expect(gone.removedLookups).toEqual(moved.state!.lookups);
    expect(gone.state).toBeNull();
  });

  it('keeps int8 values exact in the row JSON', () => {
    const ops = evaluateRowChange(
      rules,
      { kind: 'insert', table: lists, after: { id: 'l9', title: 9007199254740993n, owner_id: 'u1' } },
      null,
      subkey
    );
    expect(ops.puts[0]!.data).toBe('{"id":"l9","title":9007199254740993}');
  });

  it('subkeys are stable per row and distinct across tables', () => {
    expect(subkeyOf(lists, replicaKeyOf(lists, { id: 'a' }))).toBe(subkeyOf(lists, replicaKeyOf(lists, { id: 'a' })));
    expect(subkeyOf(lists, replicaKeyOf(lists, { id: 'a' }))).not.toBe(
      subkeyOf(members, replicaKeyOf(members, { id: 'a' }))
    );
  });
});
