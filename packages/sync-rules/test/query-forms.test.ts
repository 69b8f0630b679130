/**
 * Issue 11 items 2 and 4: every parameter/data query form the reference accepts (one table row each, evaluated end
 * to end: replication indexes the parameter rows, a request resolves its buckets, data rows land in buckets), and
 * every rejection the reference makes, with the message naming definition, query and position.
 */
import { describe, expect, test } from 'vitest';
import {
  parseParameterRows,
  parseSyncRules,
  serializeParameterLookup,
  serializeParameterRows,
  type ParameterLookup,
  type RequestParameters,
  type SqliteRow,
  type SyncRules
} from '../src/index.js';
import { definition, loadRules } from './helpers.js';

/** Replication into an in-memory parameter index, then the request's buckets, sorted. */
async function bucketsFor(
  rules: SyncRules,
  parameterRows: Array<{ table: string; row: Record<string, unknown> }>,
  request: RequestParameters
): Promise<string[]> {
  const index = new Map<string, SqliteRow[]>();
  for (const { table, row } of parameterRows) {
    const result = rules.evaluateParameterRow({ table, row });
    expect(result.errors).toEqual([]);
    for (const entry of result.lookups) {
      // Through the storage serialization, as the service stores them.
      const stored = parseParameterRows(serializeParameterRows(entry.outputs));
      index.set(entry.serializedLookup, [...(index.get(entry.serializedLookup) ?? []), ...stored]);
    }
  }
  const fetch = (lookups: ParameterLookup[]) =>
    Promise.resolve(lookups.map((lookup) => index.get(serializeParameterLookup(lookup)) ?? []));
  const result = await rules.queryBuckets(request, fetch);
  expect(result.errors).toEqual([]);
  return result.buckets.map((bucket) => bucket.bucket).sort();
}

interface FormCase {
  name: string;
  parameters?: string | string[];
  data: string[];
  parameterRows?: Array<{ table: string; row: Record<string, unknown> }>;
  requests: Array<{ request: RequestParameters; buckets: string[] }>;
  dataRows?: Array<{ table: string; row: Record<string, unknown>; buckets: string[] }>;
}

const MEMBERS = [
  { table: 'members', row: { id: 'm1', user_id: 'u1', org_id: 'o1', is_owner: 1n, role: 'admin' } },
  { table: 'members', row: { id: 'm2', user_id: 'u2', org_id: 'o1', is_owner: 0n, role: 'viewer' } },
  { table: 'members', row: { id: 'm3', user_id: 'U1', org_id: 'o2', is_owner: 1n, role: 'viewer' } }
];

const FORMS: FormCase[] = [
  {
    name: 'bare SELECT: always one parameterless bucket',
    parameters: 'SELECT',
    data: ['SELECT * FROM docs'],
    requests: [{ request: { userId: 'u1' }, buckets: ['d[]'] }]
  },
  {
    name: 'SELECT WHERE token_parameters.is_admin: a parameterless bucket when the condition holds',
    parameters: 'SELECT WHERE token_parameters.is_admin',
    data: ['SELECT * FROM docs'],
    requests: [
      { request: { userId: 'u1', tokenParameters: { parameters: { is_admin: true } } }, buckets: ['d[]'] },
      { request: { userId: 'u2', tokenParameters: { parameters: { is_admin: false } } }, buckets: [] },
      { request: { userId: 'u3' }, buckets: [] }
    ]
  },
  {
    name: "SELECT WHERE request.jwt() ->> 'role' IN '[...]': IN against a JSON array text",
    parameters: `SELECT WHERE request.jwt() ->> 'role' IN '["admin","owner"]'`,
    data: ['SELECT * FROM docs'],
    requests: [
      { request: { userId: 'u1', tokenParameters: { role: 'owner' } }, buckets: ['d[]'] },
      { request: { userId: 'u2', tokenParameters: { role: 'viewer' } }, buckets: [] }
    ]
  },
  {
    name: 'SELECT FROM users WHERE id = request.user_id(): a parameterless bucket when a row matches',
    parameters: 'SELECT FROM members WHERE user_id = request.user_id() AND members.is_owner',
    data: ['SELECT * FROM docs'],
    parameterRows: MEMBERS,
    requests: [
      { request: { userId: 'u1' }, buckets: ['d[]'] },
      { request: { userId: 'u2' }, buckets: [] },
      { request: { userId: 'nobody' }, buckets: [] }
    ]
  },
  {
    name: "request.parameter('name') and request.parameters() ->> 'x' (client parameters)",
    parameters: ["SELECT request.parameter('list') AS list_id", "SELECT request.parameters() ->> 'other' AS list_id"],
    data: ['SELECT * FROM todos WHERE list_id = bucket.list_id'],
    requests: [
      { request: { userId: 'u1', clientParameters: { list: 'l1', other: 'l2' } }, buckets: ['d["l1"]', 'd["l2"]'] }
    ]
  },
  {
    name: "request.jwt() ->> 'claim', token_parameters.x and user_parameters.x mixed with table columns",
    parameters:
      "SELECT org_id, request.jwt() ->> 'region' AS region, token_parameters.tier AS tier, user_parameters.tab AS tab FROM members WHERE user_id = request.user_id()",
    data: [
      'SELECT * FROM docs WHERE org_id = bucket.org_id AND region = bucket.region AND tier = bucket.tier AND tab = bucket.tab'
    ],
    parameterRows: MEMBERS,
    requests: [
      {
        request: {
          userId: 'u1',
          tokenParameters: { region: 'eu', parameters: { tier: 2 } },
          clientParameters: { tab: 'inbox' }
        },
        buckets: ['d["o1","eu",2,"inbox"]']
      }
    ],
    dataRows: [
      {
        table: 'docs',
        row: { id: 'x', org_id: 'o1', region: 'eu', tier: 2n, tab: 'inbox' },
        buckets: ['d["o1","eu",2,"inbox"]']
      }
    ]
  },
  {
    name: 'upper(token_parameters.user_id) as the looked-up value, and OR between conditions on the same request value',
    parameters:
      'SELECT org_id FROM members WHERE user_id = upper(token_parameters.user_id) OR role = upper(token_parameters.user_id)',
    data: ['SELECT * FROM docs WHERE org_id = bucket.org_id'],
    parameterRows: [
      ...MEMBERS,
      { table: 'members', row: { id: 'm4', user_id: 'zz', org_id: 'o9', is_owner: 0n, role: 'U1' } }
    ],
    requests: [{ request: { userId: 'u1' }, buckets: ['d["o2"]', 'd["o9"]'] }]
  },
  {
    name: 'boolean bucket parameter: WHERE bucket.is_admin in a data query',
    parameters: 'SELECT token_parameters.is_admin AS is_admin',
    data: ['SELECT * FROM admin_docs WHERE bucket.is_admin'],
    requests: [
      { request: { userId: 'u1', tokenParameters: { parameters: { is_admin: true } } }, buckets: ['d[1]'] },
      { request: { userId: 'u2', tokenParameters: { parameters: { is_admin: false } } }, buckets: ['d[0]'] }
    ],
    dataRows: [{ table: 'admin_docs', row: { id: 'a' }, buckets: ['d[1]'] }]
  },
  {
    name: 'IN against a JSON array request parameter (lookup expands the array)',
    parameters: "SELECT org_id FROM members WHERE org_id IN request.jwt() -> 'orgs' AND user_id = request.user_id()",
    data: ['SELECT * FROM docs WHERE org_id = bucket.org_id'],
    parameterRows: MEMBERS,
    requests: [
      { request: { userId: 'u1', tokenParameters: { orgs: ['o1', 'o2'] } }, buckets: ['d["o1"]'] },
      { request: { userId: 'U1', tokenParameters: { orgs: ['o2'] } }, buckets: ['d["o2"]'] }
    ]
  },
  {
    name: 'json_each over request.jwt() and over token_parameters',
    parameters: [
      "SELECT value AS org_id FROM json_each(request.jwt() -> 'orgs')",
      'SELECT json_each.value AS org_id FROM json_each(token_parameters.extra_orgs)'
    ],
    data: ['SELECT * FROM docs WHERE org_id = bucket.org_id'],
    requests: [
      {
        request: { userId: 'u1', tokenParameters: { orgs: ['o1', 2], parameters: { extra_orgs: ['o3'] } } },
        buckets: ['d["o1"]', 'd["o3"]', 'd[2]']
      }
    ]
  },
  {
    name: 'unquoted identifiers in any case match lower-case columns; quoted ones keep their case',
    parameters: 'SELECT Members.Org_Id FROM Members WHERE MEMBERS.USER_ID = Request.User_Id()',
    data: ['SELECT "Title", ID FROM Docs WHERE Org_ID = Bucket.Org_Id'],
    parameterRows: MEMBERS,
    requests: [{ request: { userId: 'u1' }, buckets: ['d["o1"]'] }],
    dataRows: [{ table: 'docs', row: { id: 'x', org_id: 'o1', Title: 'T' }, buckets: ['d["o1"]'] }]
  },
  {
    name: 'schema-qualified tables and table-name patterns',
    parameters: 'SELECT org_id FROM app.members WHERE user_id = request.user_id()',
    data: ['SELECT * FROM app."docs_%" WHERE org_id = bucket.org_id'],
    requests: [{ request: { userId: 'u1' }, buckets: [] }],
    dataRows: [{ table: 'docs_2024', row: { id: 'x', org_id: 'o1' }, buckets: [] }]
  },
  {
    name: 'a numeric JWT sub keeps its type in bucket parameters',
    parameters: ['SELECT request.user_id() AS user_id', 'SELECT token_parameters.user_id AS user_id'],
    data: ['SELECT * FROM docs WHERE owner = bucket.user_id'],
    requests: [
      { request: { userId: '123', tokenParameters: { sub: 123 } }, buckets: ['d[123]'] },
      { request: { userId: '123', tokenParameters: { sub: '123' } }, buckets: ['d["123"]'] }
    ],
    dataRows: [{ table: 'docs', row: { id: 'x', owner: 123n }, buckets: ['d[123]'] }]
  }
];

describe('query forms of the reference (issue 11 item 2)', () => {
  test.each(FORMS)('$name', async (form) => {
    const rules = loadRules(definition('d', { parameters: form.parameters, data: form.data }));
    for (const { request, buckets } of form.requests)
      expect(await bucketsFor(rules, form.parameterRows ?? [], request), JSON.stringify(request)).toEqual(buckets);
    for (const { table, row, buckets } of form.dataRows ?? []) {
      const result = rules.evaluateRow({ table, row });
      expect(result.errors).toEqual([]);
      expect(result.buckets.map((bucket) => bucket.bucket).sort()).toEqual(buckets);
    }
  });

  test('schema-qualified tables match only their schema; patterns match by prefix', () => {
    const rules = loadRules(
      definition('d', {
        parameters: 'SELECT org_id FROM app.members WHERE user_id = request.user_id()',
        data: ['SELECT * FROM app."docs_%" WHERE org_id = bucket.org_id']
      })
    );
    expect(rules.sourceTables()).toEqual([
      { schema: 'app', name: 'docs_%', wildcard: true },
      { schema: 'app', name: 'members', wildcard: false }
    ]);
    expect(rules.evaluateRow({ schema: 'app', table: 'docs_2024', row: { id: 'x', org_id: 'o1' } }).buckets).toEqual([
      { bucket: 'd["o1"]', table: 'docs_2024', id: 'x', data: '{"id":"x","org_id":"o1"}' }
    ]);
    expect(rules.evaluateRow({ table: 'docs_2024', row: { id: 'x', org_id: 'o1' } }).buckets).toEqual([]);
    expect(rules.tableSyncsParameters({ schema: 'app', table: 'members' })).toBe(true);
    expect(rules.tableSyncsParameters({ table: 'members' })).toBe(false);
  });

  test('unquoted mixed-case identifiers load with the reference warning, at their position', () => {
    const result = parseSyncRules(
      definition('d', {
        parameters: 'SELECT org_id FROM members WHERE userId = request.user_id()',
        data: ['SELECT id, "Title" FROM Docs WHERE org_id = bucket.org_id']
      })
    );
    expect(result.ok).toBe(true);
    expect(result.warnings.map((warning) => [warning.queryKind, warning.reason, warning.position?.column])).toEqual([
      ['parameters', 'Unquoted identifiers are converted to lower-case. Use "userId" instead.', 34],
      ['data', 'Unquoted identifiers are converted to lower-case. Use "Docs" instead.', 25]
    ]);
  });

  test('a lookup with request-valued outputs stores only the table columns', () => {
    const rules = loadRules(
      definition('d', {
        parameters:
          "SELECT org_id, request.parameters() ->> 'tab' AS tab FROM members WHERE user_id = request.user_id()",
        data: ['SELECT * FROM docs WHERE org_id = bucket.org_id AND tab = bucket.tab']
      })
    );
    const result = rules.evaluateParameterRow(MEMBERS[0]!);
    expect(result.lookups.map((entry) => entry.outputs)).toEqual([[{ org_id: 'o1' }]]);
    expect(rules.definitions[0]!.parameterNames).toEqual(['org_id', 'tab']);
  });
});

interface Rejection {
  name: string;
  yaml: string;
  reason: RegExp;
  /** Text at the reported position in the query (or YAML key for config errors). */
  at?: string;
  queryKind?: 'parameters' | 'data';
}

const DATA = ['SELECT * FROM docs WHERE org_id = bucket.org_id'];

const REJECTIONS: Rejection[] = [
  {
    name: 'table alias in a parameter query',
    yaml: definition('d', {
      parameters: 'SELECT m.org_id FROM members m WHERE m.user_id = request.user_id()',
      data: DATA
    }),
    reason: /Table aliases are not supported in parameter queries/,
    at: 'members m',
    queryKind: 'parameters'
  },
  {
    name: 'two array (IN) request parameters in one query',
    yaml: definition('d', {
      parameters:
        "SELECT org_id FROM members WHERE org_id IN request.jwt() -> 'orgs' AND role IN request.jwt() -> 'roles'",
      data: DATA
    }),
    reason: /Cannot have multiple array input parameters/,
    at: 'org_id IN',
    queryKind: 'parameters'
  },
  {
    name: 'two IN expressions over array columns in one query',
    yaml: definition('d', {
      parameters:
        "SELECT org_id FROM members WHERE request.user_id() IN user_ids AND request.jwt() ->> 'team' IN team_ids",
      data: DATA
    }),
    reason: /Cannot have multiple IN expressions on bucket parameters/,
    at: 'request.jwt()',
    queryKind: 'parameters'
  },
  {
    name: 'IN with a literal list in a parameter query',
    yaml: definition('d', {
      parameters: "SELECT org_id FROM members WHERE user_id = request.user_id() AND role IN ('admin', 'owner')",
      data: DATA
    }),
    reason: /IN with a literal list is not supported in parameter queries/,
    at: "role IN ('admin', 'owner')",
    queryKind: 'parameters'
  },
  {
    name: 'IN with a literal list in a static parameter query',
    yaml: definition('d', {
      parameters: "SELECT WHERE request.jwt() ->> 'role' IN ('admin', 'owner')",
      data: ['SELECT * FROM docs']
    }),
    reason: /IN with a literal list is not supported/,
    at: "request.jwt() ->> 'role' IN",
    queryKind: 'parameters'
  },
  {
    name: '_priority that is not a constant',
    yaml: definition('d', {
      parameters: 'SELECT org_id, level AS _priority FROM members WHERE user_id = request.user_id()',
      data: DATA
    }),
    reason: /"_priority" must be a constant/,
    at: 'level',
    queryKind: 'parameters'
  },
  {
    name: '_priority out of range',
    yaml: definition('d', { parameters: 'SELECT request.user_id() AS org_id, 7 AS _priority', data: DATA }),
    reason: /"_priority" must be an integer from 0 to 3/,
    at: '7',
    queryKind: 'parameters'
  },
  {
    name: 'priority set twice (definition priority and _priority)',
    yaml: definition('d', {
      priority: 1,
      parameters: 'SELECT request.user_id() AS org_id, 0 AS _priority',
      data: DATA
    }),
    reason: /Cannot set priority multiple times/,
    at: '0 AS _priority',
    queryKind: 'parameters'
  },
  {
    name: 'OR between conditions on different request values',
    yaml: definition('d', {
      parameters: "SELECT org_id FROM members WHERE user_id = request.user_id() OR role = request.jwt() ->> 'role'",
      data: DATA
    }),
    reason: /Left and right sides of OR must use the same request values/,
    at: 'user_id =',
    queryKind: 'parameters'
  },
  {
    name: 'unknown function',
    yaml: definition('d', { data: ['SELECT id, frobnicate(name) AS n FROM docs'] }),
    reason: /Unknown or unsupported function frobnicate\(\)/,
    at: 'frobnicate(name)',
    queryKind: 'data'
  },
  {
    name: 'wrong argument count',
    yaml: definition('d', { data: ['SELECT id, upper(name, 2) AS n FROM docs'] }),
    reason: /upper\(\) takes 1 argument, got 2/,
    at: 'upper(name, 2)',
    queryKind: 'data'
  },
  {
    name: 'wrong argument count of a request function',
    yaml: definition('d', { parameters: 'SELECT request.parameter() AS org_id', data: DATA }),
    reason: /request.parameter\(\) takes 1 argument/,
    at: 'request.parameter()',
    queryKind: 'parameters'
  },
  {
    name: 'deeply nested expression',
    yaml: definition('d', { data: [`SELECT * FROM docs WHERE ${'('.repeat(250)}1${')'.repeat(250)}`] }),
    reason: /nested too deeply \(more than 200 levels\)/,
    queryKind: 'data'
  },
  {
    name: 'enormous expression',
    yaml: definition('d', {
      data: [`SELECT * FROM docs WHERE ${Array.from({ length: 2000 }, (_, i) => `c${i} = ${i}`).join(' OR ')}`]
    }),
    reason: /Query is too long \(\d+ characters; at most 16384\)/,
    queryKind: 'data'
  },
  {
    name: 'invalid UTF-8 (replacement character) in a query',
    yaml: definition('d', { data: ["SELECT * FROM docs WHERE name = 'caf\uFFFD'"] }),
    reason: /not valid UTF-8/,
    at: '\uFFFD',
    queryKind: 'data'
  },
  {
    name: 'config option that needs a later edition',
    yaml: `config:\n  unstable_sqlite_expression_engine: true\n${definition('d', { data: ['SELECT * FROM docs'] })}`,
    reason: /unstable_sqlite_expression_engine requires edition: 3/
  },
  {
    name: 'config option that needs another option',
    yaml: `config:\n  timestamp_max_precision: seconds\n${definition('d', { data: ['SELECT * FROM docs'] })}`,
    reason: /"timestamp_max_precision" requires "timestamps_iso8601"/
  },
  {
    name: 'unknown config key',
    yaml: `config:\n  edition: 1\n  flux_capacitor: true\n${definition('d', { data: ['SELECT * FROM docs'] })}`,
    reason: /Unknown key "flux_capacitor" in "config"/
  },
  {
    name: 'edition out of range',
    yaml: `config:\n  edition: 9\n${definition('d', { data: ['SELECT * FROM docs'] })}`,
    reason: /"config.edition" must be an integer from 1 to 3/
  }
];

describe('rejections of the reference (issue 11 item 4) and load-time bad input', () => {
  test.each(REJECTIONS)('$name', (rejection) => {
    const result = parseSyncRules(rejection.yaml);
    expect(result.ok).toBe(false);
    const error = result.errors.find((candidate) => rejection.reason.test(candidate.reason));
    expect(error, JSON.stringify(result.errors.map((candidate) => candidate.message))).toBeDefined();
    expect(error!.message).toContain(error!.reason);
    if (rejection.queryKind) {
      expect(error!.bucketDefinition).toBe('d');
      expect(error!.queryKind).toBe(rejection.queryKind);
      expect(error!.message).toMatch(
        new RegExp(`^bucket_definitions\\.d\\.${rejection.queryKind}\\[0\\] at line \\d+, column \\d+: `)
      );
      expect(error!.position).toBeDefined();
    } else {
      expect(error!.yamlPosition).toBeDefined();
    }
    if (rejection.at !== undefined)
      expect(error!.query!.slice(error!.position!.start)).toMatch(new RegExp(`^${escape(rejection.at)}`));
  });

  test('edition 2 options are accepted with a warning naming those not applied (versioned_bucket_ids is)', () => {
    const result = parseSyncRules(`config:\n  edition: 2\n${definition('d', { data: ['SELECT * FROM docs'] })}`);
    expect(result.ok).toBe(true);
    expect(result.warnings.map((warning) => warning.reason)).toEqual([
      expect.stringMatching(/enables timestamps_iso8601, fixed_json_extract, custom_postgres_types, which/)
    ]);
  });

  test('a plain edition 1 config gives no warning', () => {
    const result = parseSyncRules(`config:\n  edition: 1\n${definition('d', { data: ['SELECT * FROM docs'] })}`);
    expect(result.ok).toBe(true);
    expect(result.warnings).toEqual([]);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
