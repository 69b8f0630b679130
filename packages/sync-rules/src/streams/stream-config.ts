/**
 * The `streams:` and root `with:` keys of a sync config (STREAMS.md §2.1, §2.3): the shape of every stream
 * entry, edition by edition, with a diagnostic naming the stream, the key and the YAML position for each
 * problem. The queries themselves are checked by `stream-query-check.ts`.
 */
import { isMap, isScalar, isSeq, type Node as YamlNode } from 'yaml';
import { makeIssue, type SyncRulesIssue, type YamlPosition } from '../errors.js';

const DEFAULT_STREAM_PRIORITY = 3;

/** What the loader of `sync-rules.ts` passes down: YAML positions, alias resolution, and the issue lists. */
export interface YamlLoadContext {
  at: (node: YamlNode | null | undefined) => YamlPosition | undefined;
  resolve: (node: unknown) => unknown;
  errors: SyncRulesIssue[];
  warnings: SyncRulesIssue[];
}

/** One query text of a stream or CTE, with where it starts in the YAML (for error positions). */
interface StreamQueryText {
  sql: string;
  yamlPosition: YamlPosition | undefined;
}

export interface CommonTableExpression extends StreamQueryText {
  /** Lower-cased: CTE names are SQL identifiers and match case-insensitively (§3.8). */
  name: string;
  /** The stream it is local to; absent for a global (root `with:`) CTE. */
  stream?: string;
}

export interface StreamDefinition {
  name: string;
  yamlPosition: YamlPosition | undefined;
  /** `query` (one) or `queries` (a list, edition 3): decides how diagnostics name the query. */
  queriesKey: 'query' | 'queries';
  queries: StreamQueryText[];
  autoSubscribe: boolean;
  /** The stream's default bucket priority (0–3). */
  priority: number;
  acceptPotentiallyDangerousQueries: boolean;
  /** Stream-local CTEs, by lower-cased name. */
  ctes: Map<string, CommonTableExpression>;
}

const STREAM_KEYS = ['query', 'queries', 'auto_subscribe', 'priority', 'accept_potentially_dangerous_queries', 'with'];

/** Reads the `with:` mapping (root or stream-level) into CTEs; a body must be a SQL string. */
export function loadCommonTableExpressions(
  node: unknown,
  keyPosition: YamlPosition | undefined,
  stream: string | undefined,
  context: YamlLoadContext
): Map<string, CommonTableExpression> {
  const { at, resolve, errors } = context;
  const ctes = new Map<string, CommonTableExpression>();
  if (isScalar(node) && node.value === null) return ctes;
  if (!isMap(node)) {
    errors.push(
      makeIssue({
        reason: '"with" must be a mapping of CTE names to SELECT queries',
        ...(stream !== undefined ? { stream } : {}),
        yamlPosition: at(node as YamlNode) ?? keyPosition
      })
    );
    return ctes;
  }
  for (const pair of node.items) {
    const keyNode = resolve(pair.key);
    const valueNode = resolve(pair.value);
    const rawName = isScalar(keyNode) ? keyNode.value : undefined;
    if (typeof rawName !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(rawName)) {
      errors.push(
        makeIssue({
          reason: `CTE names must be SQL identifiers (letters, digits, _), got ${JSON.stringify(isScalar(keyNode) ? keyNode.value : String(keyNode))}`,
          ...(stream !== undefined ? { stream } : {}),
          yamlPosition: at(keyNode as YamlNode)
        })
      );
      continue;
    }
    const name = rawName.toLowerCase();
    if (!isScalar(valueNode) || typeof valueNode.value !== 'string') {
      errors.push(
        makeIssue({
          reason: 'A CTE body must be a SELECT query (a YAML string)',
          ...(stream !== undefined ? { stream } : {}),
          cte: name,
          yamlPosition: at(valueNode as YamlNode) ?? at(keyNode as YamlNode)
        })
      );
      continue;
    }
    if (ctes.has(name)) {
      // Distinct YAML keys that fold to the same SQL name would make `IN name` ambiguous.
      errors.push(
        makeIssue({
          reason: `Duplicate CTE name "${name}" (CTE names are case-insensitive)`,
          ...(stream !== undefined ? { stream } : {}),
          cte: name,
          yamlPosition: at(keyNode as YamlNode)
        })
      );
      continue;
    }
    ctes.set(name, {
      name,
      sql: valueNode.value,
      yamlPosition: at(valueNode),
      ...(stream !== undefined ? { stream } : {})
    });
  }
  return ctes;
}

/**
 * One entry under `streams:`. Returns undefined when the entry's shape is invalid (errors are pushed);
 * edition decides which keys exist (§2.3).
 */
export function loadStreamDefinition(
  name: string,
  node: unknown,
  position: YamlPosition | undefined,
  edition: number,
  context: YamlLoadContext
): StreamDefinition | undefined {
  const { at, resolve, errors } = context;
  const issue = (reason: string, yamlPosition: YamlPosition | undefined) =>
    errors.push(makeIssue({ reason, stream: name, yamlPosition }));
  if (!isMap(node)) {
    issue('A stream must be a mapping with "query" (or, in edition 3, "queries")', at(node as YamlNode) ?? position);
    return undefined;
  }
  const errorCount = errors.length;
  let query: StreamQueryText | undefined;
  let queries: StreamQueryText[] | undefined;
  let autoSubscribe = false;
  let priority = DEFAULT_STREAM_PRIORITY;
  let acceptDangerous = false;
  let ctes = new Map<string, CommonTableExpression>();

  for (const pair of node.items) {
    const keyNode = resolve(pair.key);
    const key = isScalar(keyNode) ? String(keyNode.value) : String(keyNode);
    const value = resolve(pair.value);
    const keyPosition = at(keyNode as YamlNode);
    const valuePosition = at(value as YamlNode) ?? keyPosition;
    const scalar = isScalar(value) ? value.value : undefined;
    switch (key) {
      case 'query':
        if (typeof scalar === 'string') query = { sql: scalar, yamlPosition: valuePosition };
        else issue('"query" must be a SELECT query (a YAML string)', valuePosition);
        break;
      case 'queries': {
        if (edition < 3) {
          issue('"queries" (multiple queries per stream) needs edition 3; use "query"', keyPosition);
          break;
        }
        const items = isSeq(value) ? value.items.map((item) => resolve(item)) : undefined;
        if (!items || items.length === 0 || !items.every((item) => isScalar(item) && typeof item.value === 'string')) {
          issue('"queries" must be a non-empty list of SELECT queries (YAML strings)', valuePosition);
          break;
        }
        queries = items.map((item) => ({
          sql: String((item as { value: string }).value),
          yamlPosition: at(item as YamlNode)
        }));
        break;
      }
      case 'auto_subscribe':
        if (typeof scalar === 'boolean') autoSubscribe = scalar;
        else issue('"auto_subscribe" must be true or false', valuePosition);
        break;
      case 'priority':
        if (typeof scalar === 'number' && Number.isInteger(scalar) && scalar >= 0 && scalar <= 3) priority = scalar;
        else {
          const shown = isScalar(value) ? JSON.stringify(value.source ?? value.value) : 'a non-scalar value';
          issue(`"priority" must be an integer from 0 to 3, got ${shown}`, valuePosition);
        }
        break;
      case 'accept_potentially_dangerous_queries':
        if (typeof scalar === 'boolean') acceptDangerous = scalar;
        else issue('"accept_potentially_dangerous_queries" must be true or false', valuePosition);
        break;
      case 'with':
        if (edition < 3) issue('"with" (common table expressions) needs edition 3', keyPosition);
        else ctes = loadCommonTableExpressions(value, keyPosition, name, context);
        break;
      default:
        issue(`Unknown key ${JSON.stringify(key)} in stream; expected one of ${STREAM_KEYS.join(', ')}`, keyPosition);
    }
  }
  // The edition-2 reference drops a stream without a query silently (STREAMS §6.1); we report it in every edition.
  if (query !== undefined && queries !== undefined)
    issue('A stream has either "query" or "queries", not both', position);
  else if (query === undefined && queries === undefined && errors.length === errorCount)
    issue(edition >= 3 ? 'A stream needs "query" or "queries"' : 'A stream needs "query"', position);
  if (errors.length > errorCount) return undefined;
  return {
    name,
    yamlPosition: position,
    queriesKey: query !== undefined ? 'query' : 'queries',
    queries: query !== undefined ? [query] : queries!,
    autoSubscribe,
    priority,
    acceptPotentiallyDangerousQueries: acceptDangerous,
    ctes
  };
}
