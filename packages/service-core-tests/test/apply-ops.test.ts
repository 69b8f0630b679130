import { describe, expect, it } from 'vitest';
import { applyOps } from '../src/index.js';

/** The suite's model client must apply ops the way the SDK does, or the conformance checks prove nothing. */
describe("applyOps (the conformance suite's model client)", () => {
  const put = (op_id: bigint, id: string, data: string, checksum: number) => ({
    op_id,
    op: 'PUT' as const,
    object_type: 't',
    object_id: id,
    subkey: 's',
    data,
    checksum
  });
  const empty = { rows: new Map<string, string>(), checksum: 0 };

  it('PUT replaces, REMOVE deletes, MOVE only adds its checksum, all with wrapping sums', () => {
    const state = applyOps(empty, [
      put(1n, 'a', '{"v":1}', 0xffff_fff0),
      put(2n, 'a', '{"v":2}', 0x20),
      put(3n, 'b', '{"v":3}', 1),
      { op_id: 4n, op: 'REMOVE', object_type: 't', object_id: 'b', subkey: 's', checksum: 2 },
      { op_id: 5n, op: 'MOVE', checksum: 3 }
    ]);
    expect([...state.rows.values()]).toEqual(['{"v":2}']);
    expect(state.checksum).toBe((0xffff_fff0 + 0x20 + 1 + 2 + 3) % 2 ** 32);
  });

  it('CLEAR drops every earlier row and restarts the checksum at its own', () => {
    const state = applyOps(empty, [
      put(1n, 'a', '{}', 7),
      { op_id: 2n, op: 'CLEAR', checksum: 9 },
      put(3n, 'c', '{}', 1)
    ]);
    expect([...state.rows.keys()]).toEqual(['t\u0000c\u0000s']);
    expect(state.checksum).toBe(10);
  });
});
