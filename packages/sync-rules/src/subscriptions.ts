/**
 * What one sync connection subscribes to and the buckets that gives it (STREAMS.md §4.5–4.7, §5.1–5.2): the
 * contract between the sync-rules package (which resolves buckets) and the sync stream in service-core (which
 * puts them on the wire). Bucket definitions and Sync Streams are resolved through the same call.
 */
import type { EvaluationError } from './errors.js';
import type { SqliteValue } from './sqlite-value.js';
import type { ParameterLookup, RequestParameters } from './sync-rules.js';

/** One element of the request's `streams.subscriptions` (§5.1); its position is the `{sub: j}` index. */
export interface StreamSubscriptionRequest {
  stream: string;
  /** `null` is treated as `{}` (§5.1). */
  parameters: Readonly<Record<string, unknown>> | null;
  /** Checked by the resolver: a value that is not an integer 0–3 is a per-subscription error (§6.1). */
  overridePriority: number | null;
}

/** Everything a connection brings: the token, the request `parameters`, and its `streams` field. */
export interface ConnectionRequest extends RequestParameters {
  /** `streams.include_defaults`; `true` when the request has no `streams` field. */
  includeDefaults: boolean;
  subscriptions: readonly StreamSubscriptionRequest[];
}

/** A stream or bucket definition of the config, in definition order (edition 2: bucket definitions first). */
export interface SubscribableSource {
  name: string;
  kind: 'stream' | 'bucket_definition';
  /** `auto_subscribe: true` streams and every bucket definition. */
  isDefault: boolean;
  /** The default priority of its buckets (0–3). */
  priority: number;
}

/** An entry of the first `checkpoint` line's `streams` array (§5.2). */
export interface SubscribedStream {
  name: string;
  isDefault: boolean;
  /** Subscriptions of this stream that failed to resolve; `message` starts with "Error evaluating bucket ids: ". */
  errors: Array<{ subscription: number | 'default'; message: string }>;
}

/** Why a bucket is in the connection's set: `default: i` indexes `ResolvedConnection.streams`, `sub: j` the request. */
export type BucketInclusion = { default: number } | { sub: number };

export interface ResolvedBucket {
  bucket: string;
  /** The lowest (most urgent) priority over all the ways the bucket was reached (§4.7). */
  priority: number;
  /** Explicit subscriptions in request order first, then `default` (§4.6). */
  subscriptions: BucketInclusion[];
}

export interface ResolvedConnection {
  streams: SubscribedStream[];
  /** Merged by bucket id across every subscription, default and bucket definition (§4.6). */
  buckets: ResolvedBucket[];
  /** Problems worth a log line (never sent to the client; per-subscription errors are in `streams`). */
  errors: EvaluationError[];
  /**
   * Whether any bucket source of the connection reads a parameter index: only then can the set change between
   * checkpoints (§4.8); without lookups it is resolved once per connection.
   */
  usesLookups: boolean;
}

/**
 * Reads parameter-index entries as of the checkpoint being served: `result[i]` are the stored output rows of
 * `lookups[i]`. May be called several times in one resolution (one call per lookup stage, §4.4); limits
 * (`max_parameter_query_results`) are the caller's and are enforced by rejecting.
 */
export type FetchLookups = (
  lookups: ParameterLookup[]
) => Promise<ReadonlyArray<ReadonlyArray<Readonly<Record<string, SqliteValue>>>>>;
