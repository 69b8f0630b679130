/**
 * Sync rules: loading the YAML (`bucket_definitions`), and the evaluation API
 * used by replication (rows → bucket rows, rows → parameter lookups) and by
 * the sync engine (request → bucket ids).
 */
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { formatBucketId, serializeBucketParameterValue, type BucketParameterValue } from './bucket-id.js';
import { compileDataQuery, type DataQuery, type EvaluatedBucketRow } from './data-query.js';
import {
  makeIssue,
  queryPosition,
  type EvaluationError,
  type QueryKind,
  type SyncRulesIssue,
  type YamlPosition
} from './errors.js';
import { requestValues, type RequestValues } from './expression.js';
import { bucketParametersOf, compileParameterQuery, PRIORITY_COLUMN, type ParameterQuery } from './parameter-query.js';
import { DEFAULT_SCHEMA, sameSourceTable, tableMatches, type SourceTable } from './source-table.js';
import { stringifyRow } from './json.js';
import { SqlSyntaxError } from './sql/syntax-error.js';
import type {
  BucketInclusion,
  ConnectionRequest,
  FetchLookups,
  ResolvedBucket,
  ResolvedConnection,
  SubscribableSource,
  SubscribedStream
} from './subscriptions.js';
import { loadStreamsConfig, MAX_BUCKET_SOURCES, type LoadedStreams } from './streams/load-streams.js';
import { compileStream } from './streams/compile-stream.js';
import {
  evaluateLookupRow,
  evaluateStreamRow,
  runtimeSource,
  SourceResolution,
  streamBucketId,
  streamConnectionValues,
  type RuntimeBucketSource
} from './streams/stream-runtime.js';
import { EvaluationFailure, type InputRow, type SqliteRow, type SqliteValue } from './sqlite-value.js';

export const DEFAULT_BUCKET_PRIORITY = 3;
export const MIN_BUCKET_PRIORITY = 0;
export const MAX_BUCKET_PRIORITY = 3;

/** A source row change as replication sees it. */
export interface SourceRowInput {
  /** Source schema; default `public`. */
  schema?: string;
  table: string;
  row: InputRow;
}

export interface EvaluateRowResult {
  buckets: EvaluatedBucketRow[];
  errors: EvaluationError[];
}

/** Key of a parameter lookup index entry: `(definition, query, lookup values)`. */
export interface ParameterLookup {
  definition: string;
  queryIndex: number;
  values: BucketParameterValue[];
}

export interface ParameterLookupEntry {
  lookup: ParameterLookup;
  /** Stable text form of `lookup`, for indexing (see {@link serializeParameterLookup}). */
  serializedLookup: string;
  /** Output rows (bucket parameters and optional `_priority`) stored under the lookup. */
  outputs: SqliteRow[];
}

export interface EvaluateParameterRowResult {
  lookups: ParameterLookupEntry[];
  errors: EvaluationError[];
}

/** What a connection contributes: the JWT `sub`, the JWT payload, and the client's parameters. */
export interface RequestParameters {
  userId: string;
  tokenParameters?: Readonly<Record<string, unknown>>;
  clientParameters?: Readonly<Record<string, unknown>>;
}

export interface BucketDescription {
  bucket: string;
  definition: string;
  priority: number;
}

export interface QueriedBuckets {
  buckets: BucketDescription[];
  errors: EvaluationError[];
}

/**
 * First step of resolving a request's buckets: the buckets known without I/O,
 * and the lookups whose stored outputs the caller must fetch before calling `finish`.
 */
export interface BucketQueryPlan {
  /** Buckets from definitions without parameters or with static parameter queries only. */
  staticBuckets: BucketDescription[];
  /** Distinct lookups to fetch from the parameter index (as of the checkpoint being served). */
  lookups: ParameterLookup[];
  errors: EvaluationError[];
  /** Completes the bucket list; `results[i]` are the stored output rows for `lookups[i]`. */
  finish(results: ReadonlyArray<ReadonlyArray<Readonly<Record<string, SqliteValue>>>>): QueriedBuckets;
}

export interface BucketDefinitionSummary {
  name: string;
  priority: number;
  /** Bucket parameter names in declaration order. */
  parameterNames: readonly string[];
  parameterQueries: ReadonlyArray<{ sql: string; kind: 'static' | 'lookup'; table?: SourceTable }>;
  dataQueries: ReadonlyArray<{ sql: string; table: SourceTable }>;
  acceptPotentiallyDangerousQueries: boolean;
}

export interface SyncRules {
  readonly definitions: readonly BucketDefinitionSummary[];
  /** Distinct source tables referenced by data and parameter queries. */
  sourceTables(): SourceTable[];
  /** Whether rows of this table can land in buckets / parameter lookups. */
  tableSyncsData(table: { schema?: string; table: string }): boolean;
  tableSyncsParameters(table: { schema?: string; table: string }): boolean;
  /** A source row → the bucket rows it produces. Never throws; problems are in `errors`. */
  evaluateRow(input: SourceRowInput): EvaluateRowResult;
  /** A source row → its parameter lookup entries. Never throws; problems are in `errors`. */
  evaluateParameterRow(input: SourceRowInput): EvaluateParameterRowResult;
  /** Static buckets and the lookups needed for the dynamic ones. Never throws. */
  planBuckets(request: RequestParameters): BucketQueryPlan;
  /** The streams and bucket definitions a connection can subscribe to, in definition order. */
  readonly sources: readonly SubscribableSource[];
  /**
   * A connection's subscribed streams and merged buckets at one checkpoint (STREAMS.md §4.5–4.7). Never throws;
   * rejects only if `fetchLookups` does (that is how the caller's limits end the stream).
   */
  resolveConnection(request: ConnectionRequest, fetchLookups: FetchLookups): Promise<ResolvedConnection>;
  /** Convenience: `planBuckets`, fetch the lookups with `fetchLookups`, `finish`. Rejects only if `fetchLookups` does. */
  queryBuckets(
    request: RequestParameters,
    fetchLookups: (
      lookups: ParameterLookup[]
    ) => Promise<ReadonlyArray<ReadonlyArray<Readonly<Record<string, SqliteValue>>>>>
  ): Promise<QueriedBuckets>;
}

export type ParseSyncRulesResult =
  | { ok: true; rules: SyncRules; errors: readonly SyncRulesIssue[]; warnings: SyncRulesIssue[] }
  | { ok: false; rules: undefined; errors: SyncRulesIssue[]; warnings: SyncRulesIssue[] };

/** Stable text key of a lookup, e.g. `["by_org",0,"u1"]`; INTEGER 1 and REAL 1.0 give the same key. */
export function serializeParameterLookup(lookup: ParameterLookup): string {
  const parts = [
    JSON.stringify(lookup.definition),
    String(lookup.queryIndex),
    ...lookup.values.map(serializeBucketParameterValue)
  ];
  return `[${parts.join(',')}]`;
}

interface BucketDefinition {
  name: string;
  /** `name`, prefixed with `<deploymentId>#` when bucket ids are versioned. */
  bucketName: string;
  priority: number;
  parameterNames: string[];
  parameterQueries: ParameterQuery[];
  dataQueries: DataQuery[];
  acceptPotentiallyDangerousQueries: boolean;
}

const DEFINITION_KEYS = new Set(['parameters', 'data', 'priority', 'accept_potentially_dangerous_queries']);

export interface ParseSyncRulesOptions {
  /**
   * The id of the deployed config (the replication stream id): with `versioned_bucket_ids` (default from
   * edition 2) every bucket id starts with `<deploymentId>#` (STREAMS §4.2). Without it ids are unversioned.
   */
  deploymentId?: number | string;
}

/** Loads sync rules YAML. Never throws: problems are returned as errors (load refused) or warnings. */
export function parseSyncRules(yamlText: string, options: ParseSyncRulesOptions = {}): ParseSyncRulesResult {
  try {
    return parseSyncRulesUnchecked(yamlText, options);
  } catch (error) {
    const reason = `Internal error while loading sync rules: ${error instanceof Error ? error.message : String(error)}`;
    return { ok: false, rules: undefined, errors: [makeIssue({ reason })], warnings: [] };
  }
}

function parseSyncRulesUnchecked(yamlText: string, options: ParseSyncRulesOptions): ParseSyncRulesResult {
  const errors: SyncRulesIssue[] = [];
  const warnings: SyncRulesIssue[] = [];
  const failed = (): ParseSyncRulesResult => ({ ok: false, rules: undefined, errors, warnings });
  if (typeof yamlText !== 'string') {
    errors.push(makeIssue({ reason: 'Sync rules must be YAML text' }));
    return failed();
  }

  const lineCounter = new LineCounter();
  const document = parseDocument(yamlText, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const at = (node: YamlNode | null | undefined): YamlPosition | undefined => {
    const offset = node?.range?.[0];
    if (offset === undefined) return undefined;
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const resolve = (node: unknown): unknown => (isAlias(node) ? node.resolve(document) : node);

  if (document.errors.length > 0) {
    for (const error of document.errors) {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      const yamlPosition = { line, column: col };
      if (error.code === 'DUPLICATE_KEY') {
        const duplicate = findKeyAt(document.contents, error.pos[0], []);
        if (duplicate && duplicate.path.length === 1 && duplicate.path[0] === 'bucket_definitions') {
          errors.push(
            makeIssue({
              reason: `Duplicate bucket definition name "${duplicate.key}"`,
              bucketDefinition: duplicate.key,
              yamlPosition
            })
          );
        } else if (duplicate) {
          const [, definition] = duplicate.path;
          const inside = duplicate.path.length > 0 ? ` in ${duplicate.path.join('.')}` : '';
          const reason = `Duplicate key ${JSON.stringify(duplicate.key)}${inside}`;
          errors.push(
            makeIssue({
              reason,
              yamlPosition,
              ...(duplicate.path[0] === 'bucket_definitions' && definition ? { bucketDefinition: definition } : {})
            })
          );
        } else {
          errors.push(makeIssue({ reason: 'Duplicate key in YAML mapping', yamlPosition }));
        }
      } else {
        errors.push(makeIssue({ reason: `Invalid YAML: ${error.message}`, yamlPosition }));
      }
    }
    return failed();
  }
  for (const warning of document.warnings) {
    const { line, col } = lineCounter.linePos(warning.pos[0]);
    warnings.push(
      makeIssue({ severity: 'warning', reason: `YAML: ${warning.message}`, yamlPosition: { line, column: col } })
    );
  }

  const context: LoadContext = { at, resolve, errors, warnings };
  const root = resolve(document.contents);
  if (!isMap(root)) {
    errors.push(
      makeIssue({
        reason: 'Sync rules must be a YAML mapping with a "bucket_definitions" or "streams" key',
        yamlPosition: at(root as YamlNode)
      })
    );
    return failed();
  }

  // `config` first: the edition decides which other keys are allowed (STREAMS §2.1).
  const rootEntries = new Map<string, { key: YamlNode; value: unknown }>();
  for (const pair of root.items) {
    const key = resolve(pair.key) as YamlNode;
    const name = isScalar(key) ? String(key.value) : String(key);
    if (ROOT_KEYS.includes(name)) rootEntries.set(name, { key, value: resolve(pair.value) });
    else
      errors.push(
        makeIssue({
          reason: `Unknown top-level key ${JSON.stringify(name)}; expected one of ${ROOT_KEYS.join(', ')}`,
          yamlPosition: at(key)
        })
      );
  }
  const configEntry = rootEntries.get('config');
  const { edition, versionedBucketIds } = configEntry
    ? checkConfig(configEntry.value, at(configEntry.key), context)
    : { edition: 1, versionedBucketIds: false };
  const bucketPrefix =
    versionedBucketIds && options.deploymentId !== undefined && options.deploymentId !== ''
      ? `${options.deploymentId}#`
      : '';
  const streamsEntry = rootEntries.get('streams');
  const globalWithEntry = rootEntries.get('with');
  let definitionsNode: unknown = rootEntries.get('bucket_definitions')?.value;
  const definitionsKey = rootEntries.get('bucket_definitions')?.key;
  if (edition >= 3 && definitionsKey) {
    errors.push(
      makeIssue({
        reason: 'Edition 3 does not accept "bucket_definitions"; translate them to "streams" (or use edition 2)',
        yamlPosition: at(definitionsKey)
      })
    );
    definitionsNode = undefined;
  }
  if (edition >= 3 && !streamsEntry) {
    errors.push(makeIssue({ reason: 'Edition 3 requires "streams"', yamlPosition: at(configEntry?.key) }));
    return failed();
  }
  if (definitionsNode === undefined && !streamsEntry) {
    errors.push(makeIssue({ reason: 'Missing "bucket_definitions" (or "streams")', yamlPosition: at(root) }));
    return failed();
  }
  const streamConfig = loadStreamsConfig(streamsEntry, globalWithEntry, edition, context);
  if (definitionsNode === undefined) definitionsNode = null;
  const definitions: BucketDefinition[] = [];
  for (const pair of isMap(definitionsNode) ? definitionsNode.items : []) {
    const key = resolve(pair.key);
    if (!isScalar(key) || key.value === null || key.value === '' || typeof key.value === 'object') {
      errors.push(
        makeIssue({ reason: 'Bucket definition names must be non-empty strings', yamlPosition: at(key as YamlNode) })
      );
      continue;
    }
    // A scalar that is neither null nor an object (checked above): a string, number or boolean.
    const scalarValue = key.value as string | number | boolean;
    const name = String(scalarValue);
    if (streamConfig.streamNames.has(name))
      errors.push(
        makeIssue({
          reason: `Duplicate stream or bucket definition name "${name}"`,
          bucketDefinition: name,
          yamlPosition: at(key)
        })
      );
    const definition = loadDefinition(name, resolve(pair.value), at(key), context, bucketPrefix);
    if (definition) definitions.push(definition);
  }

  if (errors.length > 0) return failed();
  const streams = compileStreams(streamConfig, edition, bucketPrefix, errors);
  if (errors.length > 0) return failed();
  return { ok: true, rules: createSyncRules(definitions, streams), errors: [], warnings };
}

/** A compiled stream, ready for replication and resolution. */
interface LoadedStream {
  name: string;
  priority: number;
  autoSubscribe: boolean;
  edition: number;
  bucketPrefix: string;
  sources: RuntimeBucketSource[];
}

/** Compiles every stream (§4.1); a query the compiler cannot handle is a load error naming it. */
function compileStreams(
  config: LoadedStreams,
  edition: number,
  bucketPrefix: string,
  errors: SyncRulesIssue[]
): LoadedStream[] {
  const loaded: LoadedStream[] = [];
  for (const stream of config.streams) {
    try {
      const compiled = compileStream({
        edition,
        queries: stream.queries.map((query) => query.sql),
        ctes: config.visibleCtes.get(stream.name) ?? new Map()
      });
      if (compiled.length > MAX_BUCKET_SOURCES) {
        errors.push(
          makeIssue({
            reason: `This stream compiles to ${compiled.length} bucket sources; at most ${MAX_BUCKET_SOURCES} are allowed`,
            stream: stream.name,
            yamlPosition: stream.yamlPosition
          })
        );
        continue;
      }
      loaded.push({
        name: stream.name,
        // Edition 2 validates the stream priority and, unlike the reference, applies it (STREAMS §6.1).
        priority: stream.priority,
        autoSubscribe: stream.autoSubscribe,
        edition,
        bucketPrefix,
        sources: compiled.map((source) => runtimeSource(source, edition))
      });
    } catch (error) {
      if (!(error instanceof SqlSyntaxError)) throw error;
      const queryIndex = (error as SqlSyntaxError & { query?: number }).query ?? 0;
      const text = stream.queries[queryIndex];
      errors.push(
        makeIssue({
          reason: error.message,
          stream: stream.name,
          queryKind: stream.queriesKey,
          queryIndex,
          ...(text
            ? { query: text.sql, position: queryPosition(text.sql, error.start, Math.max(error.end, error.start + 1)) }
            : {}),
          yamlPosition: text?.yamlPosition ?? stream.yamlPosition
        })
      );
    }
  }
  return loaded;
}

const ROOT_KEYS = ['config', 'bucket_definitions', 'streams', 'with'];
const TIMESTAMP_PRECISIONS = ['seconds', 'milliseconds', 'microseconds', 'nanoseconds'];

/** Editions of the reference: 1 legacy (the default), 2 sync streams, 3 compiled sync streams. */
const MAX_EDITION = 3;
/** Options that the reference turns on from edition 2; we accept them and warn that their effect is not implemented. */
const COMPATIBILITY_OPTIONS = [
  'timestamps_iso8601',
  'versioned_bucket_ids',
  'fixed_json_extract',
  'custom_postgres_types',
  'unstable_sqlite_expression_engine'
];

/**
 * `config:` as the reference validates it: known keys only, `edition` 1–3, and the options that need a later
 * edition (or another option) rejected. Bucket definitions are edition-1 rules; options that would change
 * their evaluation are accepted with a warning because this implementation does not apply them.
 */
function checkConfig(
  node: unknown,
  keyPosition: YamlPosition | undefined,
  context: LoadContext
): { edition: number; versionedBucketIds: boolean } {
  const { at, resolve, errors, warnings } = context;
  if (!isMap(node)) {
    errors.push(makeIssue({ reason: '"config" must be a mapping', yamlPosition: at(node as YamlNode) ?? keyPosition }));
    return { edition: 1, versionedBucketIds: false };
  }
  const values = new Map<string, { value: unknown; position: YamlPosition | undefined }>();
  for (const pair of node.items) {
    const keyNode = resolve(pair.key);
    const key = isScalar(keyNode) ? String(keyNode.value) : String(keyNode);
    const valueNode = resolve(pair.value);
    values.set(key, { value: isScalar(valueNode) ? valueNode.value : valueNode, position: at(keyNode as YamlNode) });
    const known = ['edition', 'storage_version', 'timestamp_max_precision', 'sync_config_compiler'];
    if (!known.includes(key) && !COMPATIBILITY_OPTIONS.includes(key))
      errors.push(
        makeIssue({
          reason: `Unknown key ${JSON.stringify(key)} in "config"; expected one of ${[...known, ...COMPATIBILITY_OPTIONS].join(', ')}`,
          yamlPosition: at(keyNode as YamlNode)
        })
      );
    else if (COMPATIBILITY_OPTIONS.includes(key) && typeof values.get(key)!.value !== 'boolean')
      errors.push(
        makeIssue({ reason: `"config.${key}" must be true or false`, yamlPosition: at(valueNode as YamlNode) })
      );
  }
  const editionEntry = values.get('edition');
  let edition = 1;
  if (editionEntry) {
    const value = editionEntry.value;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_EDITION) {
      errors.push(
        makeIssue({
          reason: `"config.edition" must be an integer from 1 to ${MAX_EDITION}`,
          yamlPosition: editionEntry.position
        })
      );
      return { edition: 1, versionedBucketIds: false };
    }
    edition = value;
  }
  const enabled = (option: string) => {
    const value = values.get(option)?.value;
    return typeof value === 'boolean' ? value : edition >= 2 && option !== 'unstable_sqlite_expression_engine';
  };
  if (enabled('unstable_sqlite_expression_engine') && edition < 3)
    errors.push(
      makeIssue({
        reason: 'Enabling unstable_sqlite_expression_engine requires edition: 3',
        yamlPosition: values.get('unstable_sqlite_expression_engine')!.position
      })
    );
  else if (enabled('unstable_sqlite_expression_engine') && !enabled('fixed_json_extract'))
    errors.push(
      makeIssue({
        reason: 'Enabling unstable_sqlite_expression_engine requires fixed_json_extract',
        yamlPosition: values.get('unstable_sqlite_expression_engine')!.position
      })
    );
  if (values.has('timestamp_max_precision') && !enabled('timestamps_iso8601'))
    errors.push(
      makeIssue({
        reason: '"timestamp_max_precision" requires "timestamps_iso8601" (edition 2 or later, or set it to true)',
        yamlPosition: values.get('timestamp_max_precision')!.position
      })
    );
  const precision = values.get('timestamp_max_precision');
  if (precision && !TIMESTAMP_PRECISIONS.includes(precision.value as string))
    errors.push(
      makeIssue({
        reason: `"config.timestamp_max_precision" must be one of ${TIMESTAMP_PRECISIONS.join(', ')}`,
        yamlPosition: precision.position
      })
    );
  const storageVersion = values.get('storage_version');
  if (storageVersion && storageVersion.value !== 2 && storageVersion.value !== 3)
    errors.push(
      makeIssue({ reason: '"config.storage_version" must be 2 or 3', yamlPosition: storageVersion.position })
    );
  else if (storageVersion?.value === 3)
    warnings.push(
      makeIssue({
        severity: 'warning',
        reason: '"config.storage_version: 3" is unstable in the reference service; storage here does not depend on it',
        yamlPosition: storageVersion.position
      })
    );
  // versioned_bucket_ids is applied (bucket ids get the deployment prefix); the others are not yet.
  const changed = COMPATIBILITY_OPTIONS.filter((option) => option !== 'versioned_bucket_ids' && enabled(option));
  if (changed.length > 0 && edition < 3)
    warnings.push(
      makeIssue({
        severity: 'warning',
        reason: `"config" enables ${changed.join(', ')}, which this implementation does not apply yet; rules are evaluated as edition 1`,
        yamlPosition: keyPosition
      })
    );
  return { edition, versionedBucketIds: enabled('versioned_bucket_ids') };
}

/** The mapping key starting at `offset`, with the path of keys leading to its mapping. */
function findKeyAt(node: unknown, offset: number, path: string[]): { key: string; path: string[] } | undefined {
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
      if (isScalar(pair.key) && pair.key.range?.[0] === offset) return { key: key!, path };
      const found = findKeyAt(pair.value, offset, [...path, key ?? '?']);
      if (found) return found;
    }
  } else if (isSeq(node)) {
    for (const [index, item] of node.items.entries()) {
      const found = findKeyAt(item, offset, [...path, String(index)]);
      if (found) return found;
    }
  }
  return undefined;
}

interface LoadContext {
  // Function-typed properties (not methods): the loaders destructure them, and neither uses `this`.
  at: (node: YamlNode | null | undefined) => YamlPosition | undefined;
  resolve: (node: unknown) => unknown;
  errors: SyncRulesIssue[];
  warnings: SyncRulesIssue[];
}

interface QueryText {
  sql: string;
  yamlPosition: YamlPosition | undefined;
}

function loadDefinition(
  name: string,
  node: unknown,
  position: YamlPosition | undefined,
  context: LoadContext,
  bucketPrefix: string
): BucketDefinition | undefined {
  const { at, resolve, errors, warnings } = context;
  const issue = (reason: string, yamlPosition: YamlPosition | undefined, extra: Partial<SyncRulesIssue> = {}) =>
    errors.push(makeIssue({ reason, bucketDefinition: name, yamlPosition, ...extra }));
  if (!isMap(node)) {
    issue(
      'A bucket definition must be a mapping with "data" (and optionally "parameters", "priority")',
      at(node as YamlNode) ?? position
    );
    return undefined;
  }
  const errorCount = errors.length;

  let parameterTexts: QueryText[] = [];
  let dataTexts: QueryText[] | undefined;
  let priority = DEFAULT_BUCKET_PRIORITY;
  let definitionHasPriority = false;
  let acceptDangerous = false;

  for (const pair of node.items) {
    const keyNode = resolve(pair.key);
    const key = isScalar(keyNode) ? String(keyNode.value) : String(keyNode);
    const value = resolve(pair.value);
    const keyPosition = at(keyNode as YamlNode);
    if (!DEFINITION_KEYS.has(key)) {
      issue(
        `Unknown key ${JSON.stringify(key)} in bucket definition; expected one of ${[...DEFINITION_KEYS].join(', ')}`,
        keyPosition
      );
      continue;
    }
    switch (key) {
      case 'parameters': {
        const texts = queryTexts(value, context);
        if (!texts)
          issue(
            '"parameters" must be a SELECT query or a list of SELECT queries',
            at(value as YamlNode) ?? keyPosition
          );
        else parameterTexts = texts;
        break;
      }
      case 'data': {
        const texts = queryTexts(value, context);
        if (!texts) issue('"data" must be a list of SELECT queries', at(value as YamlNode) ?? keyPosition);
        else dataTexts = texts;
        break;
      }
      case 'priority': {
        definitionHasPriority = true;
        const raw = isScalar(value) ? value.value : undefined;
        if (
          typeof raw === 'number' &&
          Number.isInteger(raw) &&
          raw >= MIN_BUCKET_PRIORITY &&
          raw <= MAX_BUCKET_PRIORITY
        )
          priority = raw;
        else {
          const shown = isScalar(value) ? JSON.stringify(value.source ?? value.value) : 'a non-scalar value';
          issue(
            `"priority" must be an integer from ${MIN_BUCKET_PRIORITY} to ${MAX_BUCKET_PRIORITY}, got ${shown}`,
            at(value as YamlNode) ?? keyPosition
          );
        }
        break;
      }
      case 'accept_potentially_dangerous_queries': {
        const raw = isScalar(value) ? value.value : undefined;
        if (typeof raw === 'boolean') acceptDangerous = raw;
        else
          issue('"accept_potentially_dangerous_queries" must be true or false', at(value as YamlNode) ?? keyPosition);
        break;
      }
    }
  }
  if (dataTexts === undefined && errors.length === errorCount)
    issue('Missing "data": a bucket definition needs a list of data queries', position);
  if (dataTexts?.length === 0) {
    warnings.push(
      makeIssue({
        severity: 'warning',
        reason: '"data" is empty; buckets of this definition will stay empty',
        bucketDefinition: name,
        yamlPosition: position
      })
    );
  }

  // Parameter queries first: they declare the bucket parameters data queries refer to.
  const parameterQueries: ParameterQuery[] = [];
  for (const [index, text] of parameterTexts.entries()) {
    const query = compileQuery(name, 'parameters', index, text, errors, () =>
      compileParameterQuery(text.sql, index, { definitionHasPriority })
    );
    if (query) parameterQueries.push(query);
  }
  let parameterNames: string[] = [];
  const [firstQuery, ...otherQueries] = parameterQueries;
  if (firstQuery) {
    parameterNames = [...firstQuery.parameterNames];
    for (const query of otherQueries) {
      const same =
        query.parameterNames.length === parameterNames.length &&
        query.parameterNames.every((parameter) => parameterNames.includes(parameter));
      if (!same) {
        const text = parameterTexts[query.index]!;
        errors.push(
          makeIssue({
            position: queryPosition(text.sql, 0, text.sql.length),
            reason: `All parameter queries of a definition must output the same columns: expected ${JSON.stringify(parameterNames)}, got ${JSON.stringify(query.parameterNames)}`,
            bucketDefinition: name,
            queryKind: 'parameters',
            queryIndex: query.index,
            query: text.sql,
            yamlPosition: text.yamlPosition
          })
        );
      }
    }
  }
  for (const query of parameterQueries) {
    const text = parameterTexts[query.index]!;
    for (const warning of query.warnings) {
      warnings.push(
        makeIssue({
          severity: 'warning',
          reason: warning.reason,
          bucketDefinition: name,
          queryKind: 'parameters',
          queryIndex: query.index,
          query: text.sql,
          position: queryPosition(text.sql, warning.start, warning.end),
          yamlPosition: text.yamlPosition
        })
      );
    }
  }
  if (!acceptDangerous) {
    for (const query of parameterQueries) {
      if (!query.usesClientParameters) continue;
      const text = parameterTexts[query.index]!;
      warnings.push(
        makeIssue({
          severity: 'warning',
          reason:
            'This parameter query uses client parameters (request.parameters() / user_parameters), which clients can set freely; set "accept_potentially_dangerous_queries: true" if that is intended',
          bucketDefinition: name,
          queryKind: 'parameters',
          queryIndex: query.index,
          query: text.sql,
          yamlPosition: text.yamlPosition
        })
      );
    }
  }
  // Unknown bucket parameters would be reported against every data query if a parameter query failed; skip them then.
  const parametersFailed = parameterQueries.length !== parameterTexts.length;

  const dataQueries: DataQuery[] = [];
  for (const [index, text] of (parametersFailed ? [] : (dataTexts ?? [])).entries()) {
    const query = compileQuery(name, 'data', index, text, errors, () =>
      compileDataQuery(text.sql, index, { name: bucketPrefix + name, parameterNames })
    );
    if (!query) continue;
    dataQueries.push(query);
    for (const warning of query.warnings) {
      warnings.push(
        makeIssue({
          severity: 'warning',
          reason: warning.reason,
          bucketDefinition: name,
          queryKind: 'data',
          queryIndex: index,
          query: text.sql,
          position: queryPosition(text.sql, warning.start, warning.end),
          yamlPosition: text.yamlPosition
        })
      );
    }
  }

  if (errors.length > errorCount) return undefined;
  return {
    name,
    bucketName: bucketPrefix + name,
    priority,
    parameterNames,
    parameterQueries,
    dataQueries,
    acceptPotentiallyDangerousQueries: acceptDangerous
  };
}

function queryTexts(value: unknown, context: LoadContext): QueryText[] | undefined {
  if (isScalar(value)) {
    return typeof value.value === 'string' ? [{ sql: value.value, yamlPosition: context.at(value) }] : undefined;
  }
  if (!isSeq(value)) return undefined;
  const texts: QueryText[] = [];
  for (const item of value.items) {
    const resolved = context.resolve(item);
    if (!isScalar(resolved) || typeof resolved.value !== 'string') return undefined;
    texts.push({ sql: resolved.value, yamlPosition: context.at(resolved) });
  }
  return texts;
}

function compileQuery<T>(
  definition: string,
  kind: QueryKind,
  index: number,
  text: QueryText,
  errors: SyncRulesIssue[],
  compile: () => T
): T | undefined {
  try {
    return compile();
  } catch (error) {
    if (!(error instanceof SqlSyntaxError)) throw error;
    errors.push(
      makeIssue({
        reason: error.message,
        bucketDefinition: definition,
        queryKind: kind,
        queryIndex: index,
        query: text.sql,
        position: queryPosition(text.sql, error.start, error.end),
        yamlPosition: text.yamlPosition
      })
    );
    return undefined;
  }
}

function evaluationError(
  definition: string,
  queryKind: QueryKind,
  queryIndex: number,
  error: unknown
): EvaluationError {
  if (!(error instanceof EvaluationFailure)) {
    // Not expected; still reported instead of thrown so replication keeps going.
    const reason = error instanceof Error ? error.message : String(error);
    return {
      message: `bucket_definitions.${definition}.${queryKind}[${queryIndex}]: internal error: ${reason}`,
      bucketDefinition: definition,
      queryKind,
      queryIndex
    };
  }
  return {
    message: `bucket_definitions.${definition}.${queryKind}[${queryIndex}]: ${error.message}; row skipped`,
    bucketDefinition: definition,
    queryKind,
    queryIndex
  };
}

function invalidRowInput(input: unknown): EvaluationError | undefined {
  if (input === null || typeof input !== 'object')
    return { message: 'invalid row input: expected { schema?, table, row }' };
  const { schema, table, row } = input as Partial<SourceRowInput>;
  if (typeof table !== 'string') return { message: 'invalid row input: "table" must be a string' };
  if (schema !== undefined && typeof schema !== 'string')
    return { message: 'invalid row input: "schema" must be a string' };
  if (row === null || typeof row !== 'object' || Array.isArray(row))
    return { message: `invalid row input: the row of ${table} must be an object of column values` };
  return undefined;
}

function priorityOf(row: Readonly<Record<string, SqliteValue>>, fallback: number): number {
  if (!Object.hasOwn(row, PRIORITY_COLUMN)) return fallback;
  const value = row[PRIORITY_COLUMN];
  if (value === null || value === undefined) return fallback;
  const number =
    typeof value === 'bigint' ? Number(value) : typeof value === 'number' && Number.isInteger(value) ? value : NaN;
  if (!(number >= MIN_BUCKET_PRIORITY && number <= MAX_BUCKET_PRIORITY)) {
    throw new EvaluationFailure(
      `"${PRIORITY_COLUMN}" must be an integer from ${MIN_BUCKET_PRIORITY} to ${MAX_BUCKET_PRIORITY}`
    );
  }
  return number;
}

function createSyncRules(definitions: BucketDefinition[], streams: LoadedStream[]): SyncRules {
  const tables: SourceTable[] = [];
  const addTable = (table: SourceTable) => {
    if (!tables.some((existing) => sameSourceTable(existing, table))) tables.push(table);
  };
  for (const definition of definitions) {
    definition.dataQueries.forEach((query) => addTable(query.table));
    for (const query of definition.parameterQueries) if (query.kind === 'lookup') addTable(query.table);
  }
  for (const stream of streams)
    for (const source of stream.sources) {
      for (const evaluator of source.evaluators) addTable(evaluator.source.table!);
      for (const lookup of source.lookups) addTable(lookup.source.table!);
    }
  const streamsByName = new Map(streams.map((stream) => [stream.name, stream]));

  const summaries: BucketDefinitionSummary[] = definitions.map((definition) => ({
    name: definition.name,
    priority: definition.priority,
    parameterNames: definition.parameterNames,
    parameterQueries: definition.parameterQueries.map((query) =>
      query.kind === 'lookup'
        ? { sql: query.sql, kind: query.kind, table: query.table }
        : { sql: query.sql, kind: query.kind }
    ),
    dataQueries: definition.dataQueries.map((query) => ({ sql: query.sql, table: query.table })),
    acceptPotentiallyDangerousQueries: definition.acceptPotentiallyDangerousQueries
  }));

  // Definition order; edition 2 mixed configs list bucket definitions first (STREAMS §5.2).
  const sources: SubscribableSource[] = [
    ...definitions.map((definition) => ({
      name: definition.name,
      kind: 'bucket_definition' as const,
      isDefault: true,
      priority: definition.priority
    })),
    ...streams.map((stream) => ({
      name: stream.name,
      kind: 'stream' as const,
      isDefault: stream.autoSubscribe,
      priority: stream.priority
    }))
  ];

  const rules: SyncRules = {
    definitions: summaries,

    sourceTables: () => tables.map((table) => ({ ...table })),

    tableSyncsData: ({ schema = DEFAULT_SCHEMA, table }) =>
      definitions.some((definition) => definition.dataQueries.some((query) => query.matches(schema, table))) ||
      streams.some((stream) =>
        stream.sources.some((source) =>
          source.evaluators.some((evaluator) => tableMatches(evaluator.source.table!, schema, table))
        )
      ),

    tableSyncsParameters: ({ schema = DEFAULT_SCHEMA, table }) =>
      definitions.some((definition) =>
        definition.parameterQueries.some((query) => query.kind === 'lookup' && query.matches(schema, table))
      ) ||
      streams.some((stream) =>
        stream.sources.some((source) =>
          source.lookups.some((lookup) => tableMatches(lookup.source.table!, schema, table))
        )
      ),

    evaluateRow(input) {
      const invalid = invalidRowInput(input);
      if (invalid) return { buckets: [], errors: [invalid] };
      const { schema = DEFAULT_SCHEMA, table, row } = input;
      const buckets: EvaluatedBucketRow[] = [];
      const errors: EvaluationError[] = [];
      for (const definition of definitions) {
        for (const query of definition.dataQueries) {
          try {
            if (!query.matches(schema, table)) continue;
            buckets.push(...query.evaluate(row, table));
          } catch (error) {
            errors.push(evaluationError(definition.name, 'data', query.index, error));
          }
        }
      }
      // A stream row reached by two merged evaluators (or two OR-branches) is one row per bucket (§4.3).
      const seen = new Set<string>();
      for (const stream of streams) {
        for (const source of stream.sources) {
          try {
            for (const bucketRow of evaluateStreamRow(stream, source, { schema, table, row })) {
              const key = JSON.stringify([bucketRow.bucket, bucketRow.table, bucketRow.id]);
              if (seen.has(key)) continue;
              seen.add(key);
              buckets.push(bucketRow);
            }
          } catch (error) {
            // §4.3: an evaluation error skips this bucket source for this row; replication continues.
            errors.push(streamEvaluationError(stream.name, `bucket source ${source.index}`, error));
          }
        }
      }
      return { buckets, errors };
    },

    evaluateParameterRow(input) {
      const invalid = invalidRowInput(input);
      if (invalid) return { lookups: [], errors: [invalid] };
      const { schema = DEFAULT_SCHEMA, table, row } = input;
      const lookups: ParameterLookupEntry[] = [];
      const errors: EvaluationError[] = [];
      for (const definition of definitions) {
        for (const query of definition.parameterQueries) {
          try {
            if (query.kind !== 'lookup' || !query.matches(schema, table)) continue;
            const result = query.evaluateRow(row);
            if (!result) continue;
            bucketParametersOf(result.output, definition.parameterNames); // rejects blob parameters at write time
            priorityOf(result.output, definition.priority);
            const seen = new Set<string>();
            for (const values of result.lookups) {
              const lookup: ParameterLookup = { definition: definition.name, queryIndex: query.index, values };
              const serializedLookup = serializeParameterLookup(lookup);
              if (seen.has(serializedLookup)) continue;
              seen.add(serializedLookup);
              lookups.push({ lookup, serializedLookup, outputs: [{ ...result.output }] });
            }
          } catch (error) {
            errors.push(evaluationError(definition.name, 'parameters', query.index, error));
          }
        }
      }
      for (const stream of streams) {
        for (const source of stream.sources) {
          for (const index of source.lookups) {
            try {
              const grouped = new Map<string, ParameterLookupEntry>();
              for (const { key, output } of evaluateLookupRow(index, { schema, table, row }, stream.edition)) {
                const lookup: ParameterLookup = { definition: stream.name, queryIndex: index.indexId, values: key };
                const serializedLookup = serializeParameterLookup(lookup);
                const entry = grouped.get(serializedLookup) ?? { lookup, serializedLookup, outputs: [] };
                const text = stringifyRow(output);
                if (!entry.outputs.some((existing) => stringifyRow(existing) === text)) entry.outputs.push(output);
                grouped.set(serializedLookup, entry);
              }
              lookups.push(...grouped.values());
            } catch (error) {
              errors.push(streamEvaluationError(stream.name, `parameter index ${index.indexId}`, error));
            }
          }
        }
      }
      return { lookups, errors };
    },

    planBuckets: (request) => planBucketsOf(request, definitions),

    async queryBuckets(request, fetchLookups) {
      const plan = rules.planBuckets(request);
      const results = plan.lookups.length > 0 ? await fetchLookups(plan.lookups) : [];
      const finished = plan.finish(results);
      return { buckets: finished.buckets, errors: [...plan.errors, ...finished.errors] };
    },

    sources,

    resolveConnection: (request, fetchLookups) =>
      resolveConnectionOf(request, fetchLookups, { definitions, streams, streamsByName, sources })
  };
  return rules;
}

/** Adds a bucket, keeping the lowest priority when it is reached twice. */
function addBucket(
  buckets: Map<string, BucketDescription>,
  definition: BucketDefinition,
  values: BucketParameterValue[],
  priority: number
): void {
  const bucket = formatBucketId(definition.bucketName, values);
  const existing = buckets.get(bucket);
  if (!existing || priority < existing.priority) buckets.set(bucket, { bucket, definition: definition.name, priority });
}

/** Static buckets of `definitions` for a request, and the lookups its dynamic buckets need. Never throws. */
function planBucketsOf(request: RequestParameters, definitions: readonly BucketDefinition[]): BucketQueryPlan {
  const staticBuckets = new Map<string, BucketDescription>();
  const errors: EvaluationError[] = [];
  const lookups: ParameterLookup[] = [];
  const lookupOwners: Array<{ definition: BucketDefinition; query: ParameterQuery }> = [];
  const seenLookups = new Set<string>();
  let values: RequestValues;
  try {
    values = requestValues(request);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return {
      staticBuckets: [],
      lookups: [],
      errors: [{ message: `invalid request parameters: ${reason}` }],
      finish: () => ({ buckets: [], errors: [] })
    };
  }

  for (const definition of definitions) {
    if (definition.parameterQueries.length === 0) {
      addBucket(staticBuckets, definition, [], definition.priority);
      continue;
    }
    for (const query of definition.parameterQueries) {
      try {
        if (query.kind === 'static') {
          for (const output of query.evaluate(values)) {
            const parameters = bucketParametersOf(output, definition.parameterNames);
            if (parameters) addBucket(staticBuckets, definition, parameters, priorityOf(output, definition.priority));
          }
        } else {
          for (const lookupValues of query.lookupValues(values)) {
            const lookup: ParameterLookup = {
              definition: definition.name,
              queryIndex: query.index,
              values: lookupValues
            };
            const key = serializeParameterLookup(lookup);
            if (seenLookups.has(key)) continue;
            seenLookups.add(key);
            lookups.push(lookup);
            lookupOwners.push({ definition, query });
          }
        }
      } catch (error) {
        errors.push(evaluationError(definition.name, 'parameters', query.index, error));
      }
    }
  }

  return {
    staticBuckets: [...staticBuckets.values()],
    lookups,
    errors,
    finish(results) {
      const buckets = new Map(staticBuckets);
      const finishErrors: EvaluationError[] = [];
      lookupOwners.forEach(({ definition, query }, index) => {
        // The results come from the caller's lookup: checked at run time, whatever the declared type says.
        const rows: unknown = Array.isArray(results) ? (results as readonly unknown[])[index] : undefined;
        if (!Array.isArray(rows)) {
          finishErrors.push(
            evaluationError(
              definition.name,
              'parameters',
              query.index,
              new EvaluationFailure(`no lookup result given for lookup ${index}`)
            )
          );
          return;
        }
        for (const row of rows) {
          try {
            if (row === null || typeof row !== 'object')
              throw new EvaluationFailure('a lookup result row is not an object');
            // Request-valued output columns are not stored with the lookup entry: join them to each row.
            const requestOutputs = query.kind === 'lookup' ? query.requestOutputs(values) : {};
            const joined: Readonly<Record<string, SqliteValue>> = {
              ...(row as Readonly<Record<string, SqliteValue>>),
              ...requestOutputs
            };
            const parameters = bucketParametersOf(joined, definition.parameterNames);
            if (parameters) addBucket(buckets, definition, parameters, priorityOf(joined, definition.priority));
          } catch (error) {
            finishErrors.push(evaluationError(definition.name, 'parameters', query.index, error));
          }
        }
      });
      return { buckets: [...buckets.values()], errors: finishErrors };
    }
  };
}

function streamEvaluationError(stream: string, where: string, error: unknown): EvaluationError {
  const reason = error instanceof Error ? error.message : String(error);
  const internal = error instanceof EvaluationFailure ? '' : 'internal error: ';
  return { message: `streams.${stream} (${where}): ${internal}${reason}; row skipped` };
}

/** The wire-visible prefix of per-subscription errors (STREAMS §4.5). */
const BUCKET_ERROR_PREFIX = 'Error evaluating bucket ids: ';

interface ResolutionInput {
  definitions: readonly BucketDefinition[];
  streams: readonly LoadedStream[];
  streamsByName: ReadonlyMap<string, LoadedStream>;
  sources: readonly SubscribableSource[];
}

interface ResolutionJob {
  stream: LoadedStream;
  reason: BucketInclusion;
  priority: number;
  streamIndex: number;
  subscription: number | 'default';
  resolution: SourceResolution;
}

function failureMessage(error: unknown): string {
  if (error instanceof EvaluationFailure) return error.message;
  if (error instanceof RangeError) return 'the parameters are nested too deeply';
  return error instanceof Error ? error.message : String(error);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Uint8Array);
}

/** STREAMS §4.5–4.7: a connection's subscriptions, resolved stage by stage and merged by bucket id. */
async function resolveConnectionOf(
  request: ConnectionRequest,
  fetchLookups: FetchLookups,
  input: ResolutionInput
): Promise<ResolvedConnection> {
  const subscriptions: readonly unknown[] = Array.isArray(request.subscriptions) ? request.subscriptions : [];
  const includeDefaults = request.includeDefaults !== false;
  const named = new Set<string>();
  for (const subscription of subscriptions)
    if (isPlainObject(subscription) && typeof subscription['stream'] === 'string') named.add(subscription['stream']);
  const streams: SubscribedStream[] = [];
  const streamIndex = new Map<string, number>();
  for (const source of input.sources) {
    if (!((source.isDefault && includeDefaults) || named.has(source.name))) continue;
    streamIndex.set(source.name, streams.length);
    streams.push({ name: source.name, isDefault: source.isDefault, errors: [] });
  }
  const errors: EvaluationError[] = [];
  const explicitBuckets: Array<{ bucket: string; priority: number; reason: BucketInclusion }> = [];
  const defaultBuckets: typeof explicitBuckets = [];
  const jobs: ResolutionJob[] = [];
  const reportError = (stream: string, subscription: number | 'default', message: string) =>
    streams[streamIndex.get(stream)!]!.errors.push({ subscription, message: BUCKET_ERROR_PREFIX + message });

  const addJobs = (
    stream: LoadedStream,
    subscription: number | 'default',
    parameters: Readonly<Record<string, unknown>> | null,
    priority: number
  ) => {
    let connection;
    try {
      connection = streamConnectionValues(request, parameters);
    } catch (error) {
      reportError(stream.name, subscription, failureMessage(error));
      return;
    }
    const reason: BucketInclusion =
      subscription === 'default' ? { default: streamIndex.get(stream.name)! } : { sub: subscription };
    for (const source of stream.sources) {
      const resolution = new SourceResolution(source, connection);
      try {
        resolution.start();
      } catch (error) {
        // Per subscription and per bucket source: the other sources and subscriptions proceed (§4.5).
        reportError(stream.name, subscription, failureMessage(error));
        continue;
      }
      jobs.push({ stream, reason, priority, streamIndex: streamIndex.get(stream.name)!, subscription, resolution });
    }
  };

  subscriptions.forEach((subscription, index) => {
    if (!isPlainObject(subscription) || typeof subscription['stream'] !== 'string') return;
    const stream = input.streamsByName.get(subscription['stream']);
    // Unknown names (and explicitly named bucket definitions, included as defaults) are not explicit jobs.
    if (!stream) return;
    const override = subscription['overridePriority'];
    if (override !== null && override !== undefined) {
      if (
        typeof override !== 'number' ||
        !Number.isInteger(override) ||
        override < MIN_BUCKET_PRIORITY ||
        override > MAX_BUCKET_PRIORITY
      ) {
        reportError(
          stream.name,
          index,
          `override_priority must be an integer from ${MIN_BUCKET_PRIORITY} to ${MAX_BUCKET_PRIORITY} or null`
        );
        return;
      }
    }
    const parameters = subscription['parameters'];
    if (parameters !== null && parameters !== undefined && !isPlainObject(parameters)) {
      reportError(stream.name, index, 'parameters must be a JSON object or null');
      return;
    }
    // `parameters: null` is `{}`, not the default subscription (§3.3).
    addJobs(stream, index, parameters ?? {}, typeof override === 'number' ? override : stream.priority);
  });

  // Bucket definitions: defaults; naming one explicitly includes it like a default (§4.6).
  const includedDefinitions = input.definitions.filter((definition) => streamIndex.has(definition.name));
  const plan = planBucketsOf(request, includedDefinitions);
  errors.push(...plan.errors);
  if (includeDefaults)
    for (const stream of input.streams)
      // Edition 3: the default subscription sees subscription.parameters() as NULL; edition 2 as '{}' (§3.3).
      if (stream.autoSubscribe) addJobs(stream, 'default', stream.edition >= 3 ? null : {}, stream.priority);

  const maxStage = Math.max(0, ...jobs.map((job) => job.resolution.source.maxStage));
  let active = jobs;
  const definitionResults = plan.lookups.length > 0 ? await fetchLookups(plan.lookups) : [];
  for (let stage = 1; stage <= maxStage; stage++) {
    const wanted = new Map<string, ParameterLookup>();
    const survivors: ResolutionJob[] = [];
    for (const job of active) {
      try {
        for (const { indexId, key } of job.resolution.lookupsOf(stage)) {
          const lookup: ParameterLookup = { definition: job.stream.name, queryIndex: indexId, values: key };
          wanted.set(serializeParameterLookup(lookup), lookup);
        }
        survivors.push(job);
      } catch (error) {
        reportError(job.stream.name, job.subscription, failureMessage(error));
      }
    }
    active = survivors;
    if (wanted.size === 0) continue;
    const keys = [...wanted.keys()];
    const results = await fetchLookups([...wanted.values()]);
    const rowsByKey = new Map<string, ReadonlyArray<Readonly<Record<string, SqliteValue>>>>();
    keys.forEach((key, index) => {
      const rows: unknown = Array.isArray(results) ? (results as readonly unknown[])[index] : undefined;
      rowsByKey.set(
        key,
        Array.isArray(rows) ? (rows as Array<Readonly<Record<string, SqliteValue>>>).filter(isPlainObject) : []
      );
    });
    active = active.filter((job) => {
      try {
        job.resolution.applyStage(
          stage,
          (indexId, key) =>
            rowsByKey.get(
              serializeParameterLookup({ definition: job.stream.name, queryIndex: indexId, values: key })
            ) ?? []
        );
        return true;
      } catch (error) {
        reportError(job.stream.name, job.subscription, failureMessage(error));
        return false;
      }
    });
  }
  for (const job of active) {
    let tuples;
    try {
      tuples = job.resolution.buckets();
    } catch (error) {
      reportError(job.stream.name, job.subscription, failureMessage(error));
      continue;
    }
    const target = job.subscription === 'default' ? defaultBuckets : explicitBuckets;
    for (const values of tuples)
      target.push({
        bucket: streamBucketId(job.stream.bucketPrefix, job.stream.name, job.resolution.source.index, values),
        priority: job.priority,
        reason: job.reason
      });
  }
  const finished = plan.finish(definitionResults);
  errors.push(...finished.errors);
  for (const { bucket, definition, priority } of finished.buckets)
    defaultBuckets.push({ bucket, priority, reason: { default: streamIndex.get(definition) ?? 0 } });

  // Merged across everything by id: explicit reasons in request order, then defaults; the lowest priority (§4.6).
  const merged = new Map<string, ResolvedBucket>();
  for (const item of [
    ...explicitBuckets.sort((a, b) => reasonOrder(a.reason) - reasonOrder(b.reason)),
    ...defaultBuckets
  ]) {
    const existing = merged.get(item.bucket);
    if (!existing) {
      merged.set(item.bucket, { bucket: item.bucket, priority: item.priority, subscriptions: [item.reason] });
      continue;
    }
    existing.priority = Math.min(existing.priority, item.priority);
    if (!existing.subscriptions.some((reason) => sameReason(reason, item.reason)))
      existing.subscriptions.push(item.reason);
  }
  return {
    streams,
    buckets: [...merged.values()],
    errors,
    usesLookups:
      includedDefinitions.some((definition) => definition.parameterQueries.some((query) => query.kind === 'lookup')) ||
      jobs.some((job) => job.resolution.source.lookups.length > 0)
  };
}

function reasonOrder(reason: BucketInclusion): number {
  return 'sub' in reason ? reason.sub : Number.MAX_SAFE_INTEGER;
}

function sameReason(a: BucketInclusion, b: BucketInclusion): boolean {
  return 'sub' in a ? 'sub' in b && a.sub === b.sub : 'default' in b && a.default === b.default;
}
