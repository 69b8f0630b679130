/** Problems found while loading sync rules, and problems found while evaluating rows. */

/** Where in a query text a problem is: character offsets (0-based, end exclusive) and line/column (1-based). */
export interface QueryPosition {
  start: number;
  end: number;
  line: number;
  column: number;
}

/** A place in the YAML document (1-based). */
export interface YamlPosition {
  line: number;
  column: number;
}

/** `parameters`/`data` of a bucket definition; `query`/`queries` of a stream; `with` for a CTE body. */
export type QueryKind = 'parameters' | 'data' | 'query' | 'queries' | 'with';

export interface SyncRulesIssue {
  severity: 'error' | 'warning';
  /** Human-readable, self-contained: names the definition, the query, the position and the reason. */
  message: string;
  /** Just the reason, without location. */
  reason: string;
  /** The bucket definition the problem is in, when it is inside one. */
  bucketDefinition?: string;
  /** The stream (entry under `streams:`) the problem is in, when it is inside one. */
  stream?: string;
  /** The CTE (`with:` entry, global or of `stream`) the problem is in. */
  cte?: string;
  /** Which query of the definition or stream, with its 0-based index and text. */
  queryKind?: QueryKind;
  queryIndex?: number;
  query?: string;
  /** Position inside `query`. */
  position?: QueryPosition;
  /** Position in the YAML text (of the offending node, or of the query's start). */
  yamlPosition?: YamlPosition;
}

/** A row or request value that the rules could not evaluate; the affected output is skipped. */
export interface EvaluationError {
  message: string;
  /** The definition and query that failed; absent when the input itself was malformed (e.g. a row that is not an object). */
  bucketDefinition?: string;
  queryKind?: QueryKind;
  queryIndex?: number;
}

export function queryPosition(query: string, start: number, end: number): QueryPosition {
  const before = query.slice(0, start);
  const lines = before.split('\n');
  return { start, end, line: lines.length, column: lines[lines.length - 1]!.length + 1 };
}

const MAX_QUOTED_QUERY = 200;

/** Builds an issue with a message such as `bucket_definitions.by_org.data[1] at line 1, column 30: Unknown bucket parameter ... (in "SELECT ...")`. */
export function makeIssue(
  fields: Omit<SyncRulesIssue, 'message' | 'severity'> & { severity?: SyncRulesIssue['severity'] }
): SyncRulesIssue {
  const { severity = 'error', ...rest } = fields;
  let place = '';
  if (rest.bucketDefinition !== undefined) {
    place = `bucket_definitions.${rest.bucketDefinition}`;
    if (rest.queryKind !== undefined) place += `.${rest.queryKind}[${rest.queryIndex ?? 0}]`;
  } else if (rest.stream !== undefined || rest.cte !== undefined) {
    place = rest.stream !== undefined ? `streams.${rest.stream}` : '';
    if (rest.cte !== undefined) place += `${place ? '.' : ''}with.${rest.cte}`;
    else if (rest.queryKind === 'queries') place += `.queries[${rest.queryIndex ?? 0}]`;
    else if (rest.queryKind === 'query') place += '.query';
  }
  if (rest.position) place += `${place ? ' ' : ''}at line ${rest.position.line}, column ${rest.position.column}`;
  else if (rest.yamlPosition && place)
    place += ` (YAML line ${rest.yamlPosition.line}, column ${rest.yamlPosition.column})`;
  else if (rest.yamlPosition) place = `YAML line ${rest.yamlPosition.line}, column ${rest.yamlPosition.column}`;
  let message = place ? `${place}: ${rest.reason}` : rest.reason;
  if (rest.query !== undefined) {
    const quoted = rest.query.length > MAX_QUOTED_QUERY ? `${rest.query.slice(0, MAX_QUOTED_QUERY)}…` : rest.query;
    message += ` (in ${JSON.stringify(quoted)})`;
  }
  return { severity, message, ...rest };
}
