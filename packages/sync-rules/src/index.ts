export {
  parseSyncRules,
  serializeParameterLookup,
  DEFAULT_BUCKET_PRIORITY,
  MIN_BUCKET_PRIORITY,
  MAX_BUCKET_PRIORITY,
  type BucketDefinitionSummary,
  type BucketDescription,
  type BucketQueryPlan,
  type EvaluateParameterRowResult,
  type EvaluateRowResult,
  type ParameterLookup,
  type ParameterLookupEntry,
  type ParseSyncRulesResult,
  type QueriedBuckets,
  type RequestParameters,
  type SourceRowInput,
  type SyncRules
} from './sync-rules.js';
export type { EvaluatedBucketRow } from './data-query.js';
export {
  formatBucketId,
  serializeBucketParameters,
  serializeBucketParameterValue,
  type BucketParameterValue
} from './bucket-id.js';
export {
  type EvaluationError,
  type QueryKind,
  type QueryPosition,
  type SyncRulesIssue,
  type YamlPosition
} from './errors.js';
export { DEFAULT_SCHEMA, tableMatches, type SourceTable } from './source-table.js';
export {
  castToText,
  compareValues,
  type InputRow,
  type SqliteRow,
  type SqliteType,
  type SqliteValue
} from './sqlite-value.js';
export { parseJson, stringifyJson, stringifyRow, type JsonValue } from './json.js';
export { parseParameterRows, serializeParameterRows } from './parameter-rows.js';
export { SUPPORTED_FUNCTIONS } from './expression.js';
export type {
  BucketInclusion,
  ConnectionRequest,
  FetchLookups,
  ResolvedBucket,
  ResolvedConnection,
  StreamSubscriptionRequest,
  SubscribableSource,
  SubscribedStream
} from './subscriptions.js';
