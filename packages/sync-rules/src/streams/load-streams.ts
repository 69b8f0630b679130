/**
 * Loads `streams:` and the root `with:` of a sync config (STREAMS.md §2): shapes per edition, then every
 * query and CTE body through the query checks, with diagnostics that name the stream, the query (or CTE)
 * and the position inside it.
 */
import { isMap, isScalar, type Node as YamlNode } from 'yaml';
import { makeIssue, queryPosition, type QueryKind, type SyncRulesIssue, type YamlPosition } from '../errors.js';
import {
  loadCommonTableExpressions,
  loadStreamDefinition,
  type CommonTableExpression,
  type StreamDefinition,
  type YamlLoadContext
} from './stream-config.js';
import { checkStreamQuery, type CheckedCte, type QueryDiagnostic } from './stream-query-check.js';

/** Most bucket sources one stream may compile to (STREAMS §2.4, §6). */
export const MAX_BUCKET_SOURCES = 100;

export interface LoadedStreams {
  /** Names of every entry under `streams:` (also invalid ones), to detect clashes with bucket definitions. */
  streamNames: Set<string>;
  streams: StreamDefinition[];
  /** The CTEs each stream's queries see (local ones shadowing global ones), by stream name, for compilation. */
  visibleCtes: Map<string, Map<string, CheckedCte>>;
}

interface RootEntry {
  key: YamlNode;
  value: unknown;
}

export function loadStreamsConfig(
  streamsEntry: RootEntry | undefined,
  globalWithEntry: RootEntry | undefined,
  edition: number,
  context: YamlLoadContext
): LoadedStreams {
  const { at, resolve, errors, warnings } = context;
  const loaded: LoadedStreams = { streamNames: new Set(), streams: [], visibleCtes: new Map() };

  let globalCtes = new Map<string, CommonTableExpression>();
  if (globalWithEntry) {
    if (edition < 3)
      errors.push(
        makeIssue({ reason: 'A root "with" (global CTEs) needs edition 3', yamlPosition: at(globalWithEntry.key) })
      );
    else globalCtes = loadCommonTableExpressions(globalWithEntry.value, at(globalWithEntry.key), undefined, context);
  }
  const checkedGlobal = checkCtes(globalCtes, undefined, context);
  const used = new Set<CommonTableExpression>();

  if (streamsEntry) {
    const node = streamsEntry.value;
    if (!isMap(node) && !(isScalar(node) && node.value === null))
      errors.push(
        makeIssue({
          reason: '"streams" must be a mapping of stream names to streams',
          yamlPosition: at(node as YamlNode) ?? at(streamsEntry.key)
        })
      );
    else if (edition === 2)
      warnings.push(
        makeIssue({
          severity: 'warning',
          reason: 'Sync Streams in edition 2 are the alpha version; use "config: edition: 3"',
          yamlPosition: at(streamsEntry.key)
        })
      );
    for (const pair of isMap(node) ? node.items : []) {
      const key = resolve(pair.key);
      if (!isScalar(key) || key.value === null || key.value === '' || typeof key.value === 'object') {
        errors.push(makeIssue({ reason: 'Stream names must be non-empty strings', yamlPosition: at(key as YamlNode) }));
        continue;
      }
      const name = typeof key.value === 'string' ? key.value : JSON.stringify(key.value);
      loaded.streamNames.add(name);
      if (edition < 2) {
        errors.push(
          makeIssue({
            reason: 'Sync Streams require edition 2 or later; add "config: edition: 3"',
            stream: name,
            yamlPosition: at(key)
          })
        );
        continue;
      }
      const stream = loadStreamDefinition(name, resolve(pair.value), at(key), edition, context);
      if (!stream) continue;
      loaded.streams.push(stream);
      loaded.visibleCtes.set(stream.name, checkStream(stream, edition, globalCtes, checkedGlobal, used, context));
    }
  }

  if (edition >= 3) {
    for (const cte of globalCtes.values())
      if (!used.has(cte))
        warnings.push(
          makeIssue({
            severity: 'warning',
            reason: `CTE "${cte.name}" is not used by any stream query`,
            cte: cte.name,
            yamlPosition: cte.yamlPosition
          })
        );
  }
  return loaded;
}

/** Checks each CTE body on its own (§3.8): it cannot reference other CTEs and cannot use `*`. */
function checkCtes(
  ctes: Map<string, CommonTableExpression>,
  stream: string | undefined,
  context: YamlLoadContext
): Map<string, CheckedCte> {
  const checked = new Map<string, CheckedCte>();
  for (const cte of ctes.values()) {
    const result = checkStreamQuery(cte.sql, { edition: 3, isCteBody: true });
    report(result.diagnostics, { sql: cte.sql, yamlPosition: cte.yamlPosition }, { stream, cte: cte.name }, context);
    checked.set(cte.name, {
      name: cte.name,
      columns: result.outputColumns,
      ...(result.statement ? { statement: result.statement } : {}),
      valid: !result.diagnostics.some((diagnostic) => diagnostic.severity === 'error')
    });
  }
  return checked;
}

function checkStream(
  stream: StreamDefinition,
  edition: number,
  globalCtes: Map<string, CommonTableExpression>,
  checkedGlobal: Map<string, CheckedCte>,
  used: Set<CommonTableExpression>,
  context: YamlLoadContext
): Map<string, CheckedCte> {
  // Local CTEs shadow global ones of the same (case-insensitive) name.
  const visible = new Map<string, CheckedCte>(checkedGlobal);
  for (const [name, cte] of checkCtes(stream.ctes, stream.name, context)) visible.set(name, cte);
  const usedLocal = new Set<string>();
  let bucketSources = 0;
  for (const [index, text] of stream.queries.entries()) {
    const result = checkStreamQuery(text.sql, { edition, ctes: visible });
    const where = { stream: stream.name, queryKind: stream.queriesKey, queryIndex: index } as const;
    report(result.diagnostics, text, where, context);
    bucketSources += result.termCount ?? 0;
    if (result.dangerous && !stream.acceptPotentiallyDangerousQueries)
      report(
        [
          {
            severity: 'warning',
            reason:
              'Potentially dangerous query: a bucket of this stream can be reached with subscription.* / connection.* data alone, which clients can set to any value; this is unsuitable for authorization. Add a condition on auth.* data, or set "accept_potentially_dangerous_queries: true" if that is intended',
            ...result.dangerous
          }
        ],
        text,
        where,
        context
      );
    for (const name of result.referencedCtes) {
      if (stream.ctes.has(name)) usedLocal.add(name);
      else if (globalCtes.has(name)) used.add(globalCtes.get(name)!);
    }
    if (edition === 2 && stream.autoSubscribe && result.readsSubscription)
      context.warnings.push(
        makeIssue({
          severity: 'warning',
          reason: 'This auto_subscribe stream reads subscription.*, but its default subscription has no parameters',
          ...where,
          query: text.sql,
          yamlPosition: text.yamlPosition
        })
      );
  }
  // Counted before merging identical candidates (§4.1), so this can be stricter than the reference's limit.
  if (bucketSources > MAX_BUCKET_SOURCES)
    context.errors.push(
      makeIssue({
        reason: `This stream compiles to ${bucketSources} bucket sources (one per OR-branch of each query); at most ${MAX_BUCKET_SOURCES} are allowed. Split it into several streams`,
        stream: stream.name,
        yamlPosition: stream.yamlPosition
      })
    );
  for (const cte of stream.ctes.values())
    if (!usedLocal.has(cte.name))
      context.warnings.push(
        makeIssue({
          severity: 'warning',
          reason: `CTE "${cte.name}" is not used by any query of this stream`,
          stream: stream.name,
          cte: cte.name,
          yamlPosition: cte.yamlPosition
        })
      );
  return visible;
}

function report(
  diagnostics: QueryDiagnostic[],
  text: { sql: string; yamlPosition: YamlPosition | undefined },
  where: { stream?: string | undefined; cte?: string; queryKind?: QueryKind; queryIndex?: number },
  context: YamlLoadContext
): void {
  for (const diagnostic of diagnostics) {
    const issue: SyncRulesIssue = makeIssue({
      severity: diagnostic.severity,
      reason: diagnostic.reason,
      ...(where.stream !== undefined ? { stream: where.stream } : {}),
      ...(where.cte !== undefined ? { cte: where.cte } : {}),
      ...(where.queryKind !== undefined ? { queryKind: where.queryKind, queryIndex: where.queryIndex ?? 0 } : {}),
      query: text.sql,
      position: queryPosition(text.sql, diagnostic.start, Math.min(diagnostic.end, text.sql.length)),
      yamlPosition: text.yamlPosition
    });
    (diagnostic.severity === 'error' ? context.errors : context.warnings).push(issue);
  }
}
