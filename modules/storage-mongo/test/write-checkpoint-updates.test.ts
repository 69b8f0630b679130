import { CorruptStoredValueError, INT64_MAX, normalizeLsn } from '@syncpoint/codecs';
import { BSON, Long, type Document } from 'mongodb';
import { describe, expect, it } from 'vitest';
import {
  acknowledgedAt,
  expiredRequestFilter,
  generatedCheckpointUpdate,
  int64ToLong,
  latestCheckpointPerUser,
  reachedPendingFilter,
  storedIdToBigint,
  suppliedCheckpointUpdate,
  suppliedShouldAdvance,
  type StoredCheckpoint
} from '../src/index.js';

const heads = (text: string) => ({ '1': normalizeLsn(text) });
const now = new Date('2025-06-01T12:00:00.000Z');
const earlier = new Date('2025-06-01T11:00:00.000Z');

/**
 * A deliberately tiny evaluator for the aggregation-expression subset the supplied-id pipeline uses
 * ($set, $cond, $or, $eq, $lt, $lte, $ifNull, $literal, field paths), with MongoDB's rules that a missing field
 * sorts below null and null below numbers. It checks the *logic* of the expressions against the table of
 * PROTOCOL §4.3; it is not MongoDB and claims nothing about the server (the conformance suite does that).
 */
const MISSING = Symbol('missing');
type Value = unknown;

function rank(value: Value): number {
  if (value === MISSING) return 0;
  if (value === null) return 1;
  return 2;
}

function compare(a: Value, b: Value): number {
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  if (rank(a) < 2) return 0;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  const x = storedIdToBigint(a);
  const y = storedIdToBigint(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

function path(root: Value, parts: string[]): Value {
  let current = root;
  for (const part of parts) {
    if (current === null || typeof current !== 'object' || !(part in current)) return MISSING;
    current = (current as Record<string, Value>)[part];
  }
  return current;
}

type Variables = Record<string, Value>;

function evaluate(expression: Value, document: Record<string, Value>, vars: Variables = {}): Value {
  const ev = (value: Value) => evaluate(value, document, vars);
  if (typeof expression === 'string' && expression.startsWith('$$')) {
    const [name, ...rest] = expression.slice(2).split('.');
    return path(vars[name!], rest);
  }
  if (typeof expression === 'string' && expression.startsWith('$'))
    return path(document, expression.slice(1).split('.'));
  if (Array.isArray(expression)) return expression.map(ev);
  if (
    expression === null ||
    typeof expression !== 'object' ||
    expression instanceof Long ||
    expression instanceof Date
  ) {
    return expression;
  }
  const [operator, ...rest] = Object.keys(expression);
  if (operator !== undefined && !operator.startsWith('$')) {
    return Object.fromEntries(Object.entries(expression).map(([key, value]) => [key, ev(value)]));
  }
  if (rest.length > 0 || operator === undefined) throw new Error(`unexpected ${JSON.stringify(expression)}`);
  const argument = (expression as Record<string, Value>)[operator];
  const args = Array.isArray(argument) ? (argument as Value[]) : [argument];
  switch (operator) {
    case '$literal':
      return argument;
    case '$cond':
      return ev(args[0]) === true ? ev(args[1]) : ev(args[2]);
    case '$or':
      return args.some((arg) => ev(arg) === true);
    case '$and':
      return args.every((arg) => ev(arg) === true);
    case '$not':
      return ev(args[0]) !== true;
    case '$ifNull': {
      const value = ev(args[0]);
      return value === null || value === MISSING ? ev(args[1]) : value;
    }
    case '$eq':
      return compare(ev(args[0]), ev(args[1])) === 0;
    case '$lt':
      return compare(ev(args[0]), ev(args[1])) < 0;
    case '$lte':
      return compare(ev(args[0]), ev(args[1])) <= 0;
    case '$gt':
      return compare(ev(args[0]), ev(args[1])) > 0;
    case '$gte':
      return compare(ev(args[0]), ev(args[1])) >= 0;
    case '$add':
      return Long.fromBigInt(args.reduce<bigint>((sum, arg) => sum + storedIdToBigint(ev(arg)), 0n));
    case '$toLong':
      throw new Error(`Failed to parse number '${String(ev(args[0]))}' in $convert`);
    case '$concatArrays':
      return args.flatMap((arg) => ev(arg) as Value[]);
    case '$anyElementTrue':
      return (ev(args[0]) as Value[]).some((value) => value === true);
    case '$slice': {
      const list = ev(args[0]) as Value[];
      const count = args[1] as number;
      return count < 0 ? list.slice(Math.max(0, list.length + count)) : list.slice(0, count);
    }
    case '$filter': {
      const spec = argument as { input: Value; as: string; cond: Value };
      return (ev(spec.input) as Value[]).filter(
        (item) => evaluate(spec.cond, document, { ...vars, [spec.as]: item }) === true
      );
    }
    case '$map': {
      const spec = argument as { input: Value; as: string; in: Value };
      return (ev(spec.input) as Value[]).map((item) => evaluate(spec.in, document, { ...vars, [spec.as]: item }));
    }
    default:
      throw new Error(`operator ${operator} not supported by the test evaluator`);
  }
}

/** Apply a pipeline of `$set` / `$unset` stages to a document; a field whose expression is missing is left out. */
function applyPipeline(pipeline: Document[], document: Record<string, Value>): Record<string, Value> {
  let current = { ...document };
  for (const stage of pipeline) {
    const next = { ...current };
    if ('$unset' in stage) {
      for (const field of [stage.$unset as string | string[]].flat()) delete next[field];
    } else {
      expect(Object.keys(stage)).toEqual(['$set']);
      for (const [field, expression] of Object.entries(stage.$set as Record<string, Value>)) {
        const value = evaluate(expression, current);
        if (value === MISSING) delete next[field];
        else next[field] = value;
      }
    }
    current = next;
  }
  return current;
}

const upsertedDocument = (user_id: string) => ({ user_id });

describe('suppliedCheckpointUpdate', () => {
  it('is a single $set stage whose constants are $literal and whose id is an Int64 Long', () => {
    const pipeline = suppliedCheckpointUpdate(42n, heads('0/100'), now);
    expect(pipeline).toHaveLength(1);
    const set = pipeline[0]!.$set as Record<string, Document>;
    expect(Object.keys(set).sort()).toEqual([
      'checkpoint_requested_at',
      'client_id',
      'lsns',
      'pending',
      'processed_at_lsn'
    ]);
    const [, requested, otherwise] = set.client_id!.$cond as [Document, Document, string];
    expect(requested.$literal).toBeInstanceOf(Long);
    expect((requested.$literal as Long).toBigInt()).toBe(42n);
    expect(otherwise).toBe('$client_id');
    expect((set.lsns!.$cond as Document[])[1]).toEqual({ $literal: { '1': '00000000/00000100' } });
    expect((set.checkpoint_requested_at!.$cond as Document[])[1]).toEqual({ $literal: now });
  });

  it('carries 2^63-1 exactly and refuses ids outside int64 instead of wrapping', () => {
    const set = suppliedCheckpointUpdate(INT64_MAX, heads('0/1'), now)[0]!.$set as Record<string, Document>;
    const literal = ((set.client_id!.$cond as Document[])[1] as Document).$literal as Long;
    expect(literal.toBigInt()).toBe(INT64_MAX);
    expect(literal.toString()).toBe('9223372036854775807');
    expect(() => suppliedCheckpointUpdate(INT64_MAX + 1n, heads('0/1'), now)).toThrow(RangeError);
  });

  it('none stored: creates {R, head}, pending, requested now', () => {
    const result = applyPipeline(suppliedCheckpointUpdate(42n, heads('0/100'), now), upsertedDocument('u'));
    expect(result).toEqual({
      user_id: 'u',
      client_id: Long.fromBigInt(42n),
      lsns: { '1': '00000000/00000100' },
      processed_at_lsn: null,
      checkpoint_requested_at: now
    });
  });

  it('stored null id is treated like none', () => {
    const result = applyPipeline(suppliedCheckpointUpdate(3n, heads('0/100'), now), { user_id: 'u', client_id: null });
    expect(storedIdToBigint(result.client_id)).toBe(3n);
    expect(result.processed_at_lsn).toBeNull();
  });

  const processed = {
    user_id: 'u',
    client_id: Long.fromBigInt(10n),
    lsns: { '1': '00000000/00000050' },
    processed_at_lsn: '00000000/00000060',
    checkpoint_requested_at: earlier
  };

  it('S < R: replaces id and head, marks pending, refreshes the timestamp', () => {
    const result = applyPipeline(suppliedCheckpointUpdate(11n, heads('0/900'), now), processed);
    expect(result).toEqual({
      user_id: 'u',
      client_id: Long.fromBigInt(11n),
      lsns: { '1': '00000000/00000900' },
      pending: [{ id: Long.fromBigInt(10n), lsn: '00000000/00000050' }],
      processed_at_lsn: null,
      checkpoint_requested_at: now
    });
  });

  it('S = R: keeps id, original head and processed state; refreshes the timestamp', () => {
    const result = applyPipeline(suppliedCheckpointUpdate(10n, heads('0/900'), now), processed);
    expect(result).toEqual({ ...processed, checkpoint_requested_at: now });
  });

  it('S > R: changes nothing, not even the timestamp', () => {
    const result = applyPipeline(suppliedCheckpointUpdate(9n, heads('0/900'), now), processed);
    expect(result).toEqual(processed);
  });

  it('S = R on a generated record (no timestamp) makes it temporary again', () => {
    const { checkpoint_requested_at: _, ...generated } = processed;
    const result = applyPipeline(suppliedCheckpointUpdate(10n, heads('0/900'), now), generated);
    expect(result).toEqual({ ...generated, checkpoint_requested_at: now });
  });

  it('S > R on a generated record leaves it permanent (no timestamp added)', () => {
    const { checkpoint_requested_at: _, ...generated } = processed;
    expect(applyPipeline(suppliedCheckpointUpdate(1n, heads('0/900'), now), generated)).toEqual(generated);
  });

  it('compares ids above 2^53 exactly', () => {
    const stored = { ...processed, client_id: Long.fromBigInt(INT64_MAX - 1n) };
    const advanced = applyPipeline(suppliedCheckpointUpdate(INT64_MAX, heads('0/900'), now), stored);
    expect(storedIdToBigint(advanced.client_id)).toBe(INT64_MAX);
    const stale = applyPipeline(suppliedCheckpointUpdate(INT64_MAX - 2n, heads('0/900'), now), stored);
    expect(stale).toEqual(stored);
  });
});

describe('generatedCheckpointUpdate', () => {
  it('creates id 1 (Int64) with the head, pending, no timestamp, no earlier pairs', () => {
    const result = applyPipeline(generatedCheckpointUpdate(heads('1/A')), upsertedDocument('u'));
    expect(result).toEqual({
      user_id: 'u',
      client_id: Long.fromInt(1),
      lsns: { '1': '00000001/0000000A' },
      pending: [],
      processed_at_lsn: null
    });
    // A JS number 1 would make a freshly upserted client_id an Int32.
    expect(result.client_id).toBeInstanceOf(Long);
  });

  it('increments, keeps the superseded pair, marks pending and removes the timestamp', () => {
    const stored = {
      user_id: 'u',
      client_id: Long.fromInt(4),
      lsns: { '1': '00000000/00000100' },
      processed_at_lsn: null,
      checkpoint_requested_at: earlier
    };
    expect(applyPipeline(generatedCheckpointUpdate(heads('0/200')), stored)).toEqual({
      user_id: 'u',
      client_id: Long.fromInt(5),
      lsns: { '1': '00000000/00000200' },
      pending: [{ id: Long.fromInt(4), lsn: '00000000/00000100' }],
      processed_at_lsn: null
    });
  });

  it('fails instead of passing 2^63-1', () => {
    const stored = { user_id: 'u', client_id: Long.fromBigInt(INT64_MAX), lsns: { '1': '00000000/00000100' } };
    expect(() => applyPipeline(generatedCheckpointUpdate(heads('0/200')), stored)).toThrow(
      /write checkpoint id exhausted/
    );
  });
});

describe('earlier pairs (issue 6)', () => {
  const lsnOf = (n: number) => normalizeLsn(`0/${n.toString(16)}000`);
  /** Apply supplied requests 1..n with increasing heads, no processing in between. */
  function requests(n: number) {
    let document: Record<string, Value> = upsertedDocument('u');
    for (let id = 1; id <= n; id++)
      document = applyPipeline(suppliedCheckpointUpdate(BigInt(id), { '1': lsnOf(id) }, now), document);
    return document;
  }

  it('42 at A then 43 at B: 42 is acknowledged at A ≤ L < B', () => {
    let document: Record<string, Value> = applyPipeline(
      suppliedCheckpointUpdate(42n, heads('0/1000'), now),
      upsertedDocument('u')
    );
    document = applyPipeline(suppliedCheckpointUpdate(43n, heads('0/2000'), now), document);
    const at = (lsn: string) => acknowledgedAt([document as never], normalizeLsn(lsn));
    expect(at('0/FFF')).toBeNull();
    expect(at('0/1000')).toBe(42n);
    expect(at('0/1FFF')).toBe(42n);
    expect(at('0/2000')).toBe(43n);
  });

  it('keeps at most 16 earlier pairs, the newest', () => {
    const document = requests(20);
    expect((document.pending as Array<{ id: Long }>).map((pair) => pair.id.toNumber())).toEqual(
      Array.from({ length: 16 }, (_, i) => i + 4)
    );
    expect(acknowledgedAt([document as never], lsnOf(3))).toBeNull();
    expect(acknowledgedAt([document as never], lsnOf(4))).toBe(4n);
  });

  it('drops a pair dominated by a later id with an earlier head', () => {
    let document: Record<string, Value> = applyPipeline(
      suppliedCheckpointUpdate(42n, heads('0/3000'), now),
      upsertedDocument('u')
    );
    document = applyPipeline(suppliedCheckpointUpdate(43n, heads('0/2000'), now), document);
    expect(document.pending).toEqual([]);
  });

  it('forgets earlier pairs once the latest was processed', () => {
    const document = { ...requests(3), processed_at_lsn: lsnOf(3) };
    const next = applyPipeline(suppliedCheckpointUpdate(4n, { '1': lsnOf(4) }, now), document);
    expect(next.pending).toEqual([{ id: Long.fromInt(3), lsn: lsnOf(3) }]);
  });
});

describe('on the wire', () => {
  /** An update pipeline's `$set` stage whose fields are `{ $cond: [test, { $literal: value }, else] }`. */
  type UpdateOnTheWire = { u: { $set: Record<string, { $cond: [unknown, { $literal: unknown }, unknown] }> }[] };
  /** Serialise as the driver does, and read back without promoting Int64 to numbers. */
  const roundTrip = (value: Document) =>
    BSON.deserialize(BSON.serialize(value), { promoteLongs: false }) as UpdateOnTheWire;

  it('sends the supplied id as a BSON Int64, 2^63-1 included', () => {
    const wire = roundTrip({ u: suppliedCheckpointUpdate(INT64_MAX, heads('0/1'), now) });
    const literal = wire.u[0]!.$set.client_id!.$cond[1].$literal;
    expect(literal).toBeInstanceOf(Long);
    expect((literal as Long).toBigInt()).toBe(INT64_MAX);
    expect(wire.u[0]!.$set.checkpoint_requested_at!.$cond[1].$literal).toEqual(now);
  });

  it('sends the generated increment as a BSON Int64', () => {
    const wire = roundTrip({ u: generatedCheckpointUpdate(heads('0/1')) });
    const one = wire.u[0]!.$set.client_id!.$cond[1].$literal;
    expect(one).toBeInstanceOf(Long);
    expect((one as Long).toBigInt()).toBe(1n);
  });
});

describe('filters', () => {
  it('marks pending records whose head is reached', () => {
    expect(reachedPendingFilter(normalizeLsn('0/550'))).toEqual({
      processed_at_lsn: null,
      'lsns.1': { $lte: '00000000/00000550' }
    });
  });

  it('expires only processed records with a timestamp before the cutoff', () => {
    expect(expiredRequestFilter(now)).toEqual({
      checkpoint_requested_at: { $exists: true, $lt: now },
      processed_at_lsn: { $ne: null }
    });
  });
});

describe('int64 ids', () => {
  it('round-trips through Long at both ends of int64', () => {
    for (const id of [1n, 2n ** 53n + 1n, INT64_MAX, -(2n ** 63n)]) {
      expect(storedIdToBigint(int64ToLong(id))).toBe(id);
    }
    expect(() => int64ToLong(2n ** 63n)).toThrow(RangeError);
    expect(() => int64ToLong(-(2n ** 63n) - 1n)).toThrow(RangeError);
  });

  it('reads older Int32/Double ids, and refuses what is not an integer', () => {
    expect(storedIdToBigint(7)).toBe(7n);
    // Not an integer, or a Double beyond 2^53 that may have been rounded: corrupt, with a typed error.
    expect(() => storedIdToBigint(1.5)).toThrow(CorruptStoredValueError);
    expect(() => storedIdToBigint('7')).toThrow(CorruptStoredValueError);
    expect(() => storedIdToBigint(2 ** 53)).toThrow('Corrupt int64 read from mongodb Long: not an integer');
  });
});

describe('read-back selection and shouldAdvance', () => {
  const record = (user_id: string, id: bigint, processed: string | null | undefined): StoredCheckpoint => ({
    user_id,
    client_id: Long.fromBigInt(id),
    ...(processed === undefined ? {} : { processed_at_lsn: processed })
  });

  it('takes the highest id per user', () => {
    const states = latestCheckpointPerUser([record('a', 3n, null), record('a', 9n, 'X'), record('b', 1n, null)]);
    expect(states).toEqual(
      new Map([
        ['a', { id: 9n, pending: false }],
        ['b', { id: 1n, pending: true }]
      ])
    );
  });

  it('prefers a pending record among equal ids, in either order', () => {
    const pendingFirst = [record('a', 9n, null), record('a', 9n, '00000000/00000100')];
    expect(latestCheckpointPerUser(pendingFirst).get('a')).toEqual({ id: 9n, pending: true });
    expect(latestCheckpointPerUser([...pendingFirst].reverse()).get('a')).toEqual({ id: 9n, pending: true });
  });

  it('treats a missing processed_at_lsn (older documents) as pending', () => {
    expect(latestCheckpointPerUser([record('a', 1n, undefined)]).get('a')).toEqual({ id: 1n, pending: true });
  });

  it('orders ids above 2^53 exactly', () => {
    const states = latestCheckpointPerUser([record('a', INT64_MAX, 'X'), record('a', INT64_MAX - 1n, null)]);
    expect(states.get('a')).toEqual({ id: INT64_MAX, pending: false });
  });

  it('ignores documents without an id', () => {
    expect(latestCheckpointPerUser([{ user_id: 'a', processed_at_lsn: null }]).size).toBe(0);
  });

  it('advances iff some user of the batch has a pending winning record', () => {
    const states = latestCheckpointPerUser([
      record('done', 5n, 'X'),
      record('done', 4n, null), // a lower pending duplicate does not count
      record('waiting', 2n, null)
    ]);
    expect(suppliedShouldAdvance(['done'], states)).toBe(false);
    expect(suppliedShouldAdvance(['done', 'waiting'], states)).toBe(true);
    expect(suppliedShouldAdvance(['unknown'], states)).toBe(false);
    expect(suppliedShouldAdvance([], states)).toBe(false);
  });
});
