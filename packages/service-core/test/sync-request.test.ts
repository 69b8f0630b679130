import { describe, expect, test } from 'vitest';
import { ServiceError } from '../src/errors.js';
import {
  MAX_PARAMETERS_BYTES,
  MAX_PARAMETERS_DEPTH,
  MAX_SUBSCRIPTIONS,
  parseSyncRequest
} from '../src/sync/sync-request.js';

/** The `streams` field of a sync request (STREAMS §5.1): accepted shapes and every type violation. */

const parse = (body: unknown) => parseSyncRequest(body, { maxBuckets: 1000 });

/** The 400 PSYNC_S2001 problems of an invalid body. */
function problemsOf(body: unknown): string[] {
  try {
    parse(body);
  } catch (error) {
    expect(error).toBeInstanceOf(ServiceError);
    const serviceError = error as ServiceError;
    expect(serviceError.code).toBe('PSYNC_S2001');
    expect(serviceError.status).toBe(400);
    return JSON.parse(serviceError.details!) as string[];
  }
  throw new Error(`accepted: ${JSON.stringify(body).slice(0, 200)}`);
}

function nested(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = { leaf: 1 };
  for (let i = 1; i < depth; i++) value = { next: value };
  return value;
}

describe('the streams field', () => {
  test('absent or null: defaults included, no subscriptions', () => {
    for (const body of [{}, { streams: null }]) {
      const request = parse(body);
      expect(request.includeDefaults).toBe(true);
      expect(request.subscriptions).toEqual([]);
    }
  });

  test('the SDK shape, order and duplicates kept, null parameters and priority accepted', () => {
    const request = parse({
      streams: {
        include_defaults: false,
        subscriptions: [
          { stream: 'board', parameters: { id: 'b1' }, override_priority: null },
          { stream: 'board', parameters: { id: 'b1' }, override_priority: null },
          { stream: 'tags', parameters: null, override_priority: 0 }
        ]
      }
    });
    expect(request.includeDefaults).toBe(false);
    expect(request.subscriptions).toEqual([
      { stream: 'board', parameters: { id: 'b1' }, overridePriority: null },
      { stream: 'board', parameters: { id: 'b1' }, overridePriority: null },
      { stream: 'tags', parameters: null, overridePriority: 0 }
    ]);
  });

  test('missing subscriptions, parameters and override_priority are empty / null; unknown keys are ignored', () => {
    expect(parse({ streams: { include_defaults: true, extra: [1] } }).subscriptions).toEqual([]);
    expect(parse({ streams: { subscriptions: [{ stream: 's', other: 'x' }] } }).subscriptions).toEqual([
      { stream: 's', parameters: null, overridePriority: null }
    ]);
  });

  test('an out-of-range override_priority is left to the resolver (a per-subscription error, STREAMS §6.1)', () => {
    const request = parse({ streams: { subscriptions: [{ stream: 's', parameters: {}, override_priority: 7 }] } });
    expect(request.subscriptions[0]?.overridePriority).toBe(7);
  });

  test.each([
    ['streams that is not an object', { streams: [] }, 'streams must be an object'],
    ['include_defaults that is not a boolean', { streams: { include_defaults: 'yes' } }, 'streams.include_defaults'],
    [
      'subscriptions that is not an array',
      { streams: { subscriptions: {} } },
      'streams.subscriptions must be an array'
    ],
    ['a subscription that is not an object', { streams: { subscriptions: ['board'] } }, 'streams.subscriptions[0]'],
    ['a subscription that is null', { streams: { subscriptions: [null] } }, 'streams.subscriptions[0]'],
    ['a stream name that is a number', { streams: { subscriptions: [{ stream: 5 }] } }, 'subscriptions[0].stream'],
    ['a missing stream name', { streams: { subscriptions: [{ parameters: {} }] } }, 'subscriptions[0].stream'],
    ['an empty stream name', { streams: { subscriptions: [{ stream: '' }] } }, 'subscriptions[0].stream'],
    [
      'parameters that are an array',
      { streams: { subscriptions: [{ stream: 's' }, { stream: 's', parameters: [] }] } },
      'streams.subscriptions[1].parameters must be a JSON object'
    ],
    [
      'parameters that are a string',
      { streams: { subscriptions: [{ stream: 's', parameters: '{"id":1}' }] } },
      'subscriptions[0].parameters'
    ],
    [
      'an override_priority that is a string',
      { streams: { subscriptions: [{ stream: 's', override_priority: '0' }] } },
      'subscriptions[0].override_priority'
    ]
  ])('rejects %s with 400 PSYNC_S2001 naming the field', (_what, body, expected) => {
    const problems = problemsOf(body);
    expect(problems.join('\n')).toContain(expected);
  });

  test(`more than ${MAX_SUBSCRIPTIONS} subscriptions are refused; exactly ${MAX_SUBSCRIPTIONS} are fine`, () => {
    const subscriptions = (count: number) =>
      Array.from({ length: count }, (_, i) => ({ stream: 's', parameters: { i }, override_priority: null }));
    expect(parse({ streams: { subscriptions: subscriptions(MAX_SUBSCRIPTIONS) } }).subscriptions).toHaveLength(
      MAX_SUBSCRIPTIONS
    );
    expect(problemsOf({ streams: { subscriptions: subscriptions(MAX_SUBSCRIPTIONS + 1) } })).toEqual([
      `streams.subscriptions has more than ${MAX_SUBSCRIPTIONS} entries`
    ]);
  });

  test('deeply nested parameter objects are refused, at the limit they are fine', () => {
    expect(
      parse({ streams: { subscriptions: [{ stream: 's', parameters: nested(MAX_PARAMETERS_DEPTH) }] } })
    ).toBeTruthy();
    expect(
      problemsOf({ streams: { subscriptions: [{ stream: 's', parameters: nested(MAX_PARAMETERS_DEPTH + 1) }] } })
    ).toEqual([`streams.subscriptions[0].parameters are nested more than ${MAX_PARAMETERS_DEPTH} levels deep`]);
    // Nesting through arrays counts too, and request parameters have the same limit.
    let array: unknown = 1;
    for (let i = 0; i < 100_000; i++) array = [array];
    expect(problemsOf({ parameters: { a: array } })[0]).toContain('parameters are nested more than');
  });

  test('huge parameter objects are refused', () => {
    const big = { text: 'x'.repeat(MAX_PARAMETERS_BYTES) };
    expect(problemsOf({ streams: { subscriptions: [{ stream: 's', parameters: big }] } })[0]).toContain(
      `streams.subscriptions[0].parameters are larger than ${MAX_PARAMETERS_BYTES} bytes`
    );
    const many = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, i]));
    expect(problemsOf({ parameters: many })[0]).toContain('parameters are larger than');
  });

  test('every problem is reported at once', () => {
    const problems = problemsOf({
      streams: { subscriptions: [{ stream: 1, parameters: [], override_priority: 'high' }, 'x'] }
    });
    expect(problems).toEqual([
      'streams.subscriptions[0].stream must be a non-empty string',
      'streams.subscriptions[0].parameters must be a JSON object or null',
      'streams.subscriptions[0].override_priority must be a number or null',
      'streams.subscriptions[1] must be an object'
    ]);
  });
});
