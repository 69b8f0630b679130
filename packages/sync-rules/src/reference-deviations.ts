/**
 * Every place where expression evaluation deliberately differs from SQLite, in one list.
 *
 * Sync rules evaluate like SQLite, except where the reference service (PowerSync) gives other results
 * that PowerSync clients already depend on; those results are kept so that a team moving from the
 * reference gets the same rows and bucket ids on its devices. Each entry says what SQLite does, what
 * is done here instead and why.
 *
 * The evaluator asks {@link referenceDeviation} at each such place. The differential test against real
 * SQLite (test/differential-sqlite.test.ts) switches them all off with {@link withSqliteSemantics} and
 * then requires identical values and storage classes; test/functions-*.test.ts check the reference
 * behaviour of each entry with them on.
 */

export type ReferenceDeviationId =
  | 'real-to-text'
  | 'json-reprinted'
  | 'json-null-extract'
  | 'json-valid-null'
  | 'json-each-null'
  | 'not-missing-column'
  | 'unicode-case';

export interface ReferenceDeviation {
  id: ReferenceDeviationId;
  /** What SQLite does. */
  sqlite: string;
  /** What the evaluator does instead. */
  reference: string;
  /** Why the reference behaviour is kept. */
  why: string;
}

export const REFERENCE_DEVIATIONS: readonly ReferenceDeviation[] = [
  {
    id: 'real-to-text',
    sqlite: "A REAL becomes text with '%!.15g': CAST(2.0 AS TEXT) = '2.0', 3e60 → '3.0e+60', 0.1 + 0.2 → '0.3'.",
    reference:
      "JavaScript's shortest round-trip form: '2', '3e+60' (so upper(3e60) = '3E+60'), '0.30000000000000004'. " +
      'Applies wherever a REAL turns into text: CAST, ||, upper/lower, length, hex, substr, instr, the id column.',
    why: 'The reference converts numbers with Number.prototype.toString; ids and text columns derived from REAL values must match what PowerSync clients already hold.'
  },
  {
    id: 'json-reprinted',
    sqlite:
      "JSON text produced from parsed JSON (->, json_extract of an object or array) keeps each number literal and string escape as written ('1.50', '3E+60', '\\u00e4').",
    reference:
      "The JSON is printed anew: integral REALs as '42.0', other REALs in JavaScript's shortest form ('1.5', '3e+60'), " +
      "strings as JSON.stringify writes them ('ä'). REAL columns in the JSON data of output rows and ST_AsGeoJSON print the same way. " +
      'This one is not switched off in the differential test; its generator writes JSON the way both print it.',
    why: "The reference parses JSON into values and prints them with its JSON printer, which keeps the '.0' of integral REALs so the type survives."
  },
  {
    id: 'json-null-extract',
    sqlite:
      "json_extract(doc, path) and doc ->> path give SQL NULL for a JSON null (doc -> path gives the text 'null').",
    reference: "json_extract and ->> give the text 'null' for a JSON null; a missing path is still SQL NULL.",
    why: "The reference (without the later 'fixed_json_extract' compatibility option) maps JSON null to the text 'null', so a bucket parameter or column read from a JSON null is the text 'null' on clients."
  },
  {
    id: 'json-valid-null',
    sqlite: 'json_valid(NULL) is NULL.',
    reference: 'json_valid(NULL) is 0.',
    why: 'The reference treats NULL as text that is not JSON; a filter such as `WHERE NOT json_valid(col)` then syncs rows with a NULL column.'
  },
  {
    id: 'json-each-null',
    sqlite: "json_each yields a JSON null element with value NULL and type 'null'.",
    reference: "The element's value is the text 'null' (its type stays 'null'), so it still produces a bucket.",
    why: "Same mapping as 'json-null-extract' in the reference's json_each: a JSON null array element in a token claim gives the bucket parameter 'null'."
  },
  {
    id: 'not-missing-column',
    sqlite: 'NOT of a NULL is NULL, so `WHERE NOT archived` drops a row whose value is NULL.',
    reference:
      'NOT of a column the row does not have at all is 1 (true): the row is synced. A column that is present and NULL still gives NULL.',
    why: 'The reference reads a missing column as false in a condition; rows replicated before a column was added must keep syncing under `NOT <column>`.'
  },
  {
    id: 'unicode-case',
    sqlite: 'upper()/lower() change only ASCII letters.',
    reference: "JavaScript's full Unicode case mapping (upper('ß') = 'SS', lower('Ä') = 'ä').",
    why: 'The reference uses String.prototype.toUpperCase/toLowerCase.'
  }
];

let sqliteSemantics = false;

/** Whether the evaluator should apply the given reference deviation right now. */
export function referenceDeviation(_id: ReferenceDeviationId): boolean {
  return !sqliteSemantics;
}

/**
 * Runs `action` (synchronously) with every deviation switched off, i.e. with plain SQLite semantics.
 * Only for comparing against SQLite in tests: evaluation is synchronous, so the switch cannot leak into
 * other work.
 */
export function withSqliteSemantics<T>(action: () => T): T {
  const previous = sqliteSemantics;
  sqliteSemantics = true;
  try {
    return action();
  } finally {
    sqliteSemantics = previous;
  }
}
