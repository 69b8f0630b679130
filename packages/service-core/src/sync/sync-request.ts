import { opId } from '@syncpoint/codecs';
import type { StreamSubscriptionRequest } from '@syncpoint/sync-rules';
import { validationError } from '../errors.js';
import { checkClientId } from '../routes/checkpoint-routes.js';

/** The `/sync/stream` request body (PROTOCOL §7.2), validated. */
export interface SyncRequest {
  /** Buckets the client already has, with the last op id it holds. */
  buckets: Map<string, bigint>;
  /** false only for legacy JSON clients: PUT data is then embedded as an object. */
  rawData: boolean;
  clientId: string | undefined;
  parameters: Record<string, unknown>;
  /** `streams.include_defaults`; true without a `streams` field (STREAMS §5.1). */
  includeDefaults: boolean;
  /** `streams.subscriptions` in request order, duplicates kept: position `j` is the `{sub: j}` index. */
  subscriptions: StreamSubscriptionRequest[];
  appMetadata: Record<string, string>;
}

const MAX_BUCKET_NAME_LENGTH = 1024;

/** Cap on `streams.subscriptions` (STREAMS §6 recommends at least 1000); more is a 400 PSYNC_S2001. */
export const MAX_SUBSCRIPTIONS = 1000;
/** Caps on one parameter object (request `parameters` or a subscription's): JSON text size and nesting depth. */
export const MAX_PARAMETERS_BYTES = 64 * 1024;
export const MAX_PARAMETERS_DEPTH = 16;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validate a sync request body; every problem is reported at once as a 400 PSYNC_S2001. */
export function parseSyncRequest(body: unknown, options: { maxBuckets: number }): SyncRequest {
  if (!isObject(body)) throw validationError(['body must be a JSON object']);
  const problems: string[] = [];

  const buckets = new Map<string, bigint>();
  if (body.buckets !== undefined && body.buckets !== null) {
    if (!Array.isArray(body.buckets)) problems.push('buckets must be an array');
    else if (body.buckets.length > options.maxBuckets)
      problems.push(`buckets has more than ${options.maxBuckets} entries`);
    else {
      body.buckets.forEach((entry, index) => {
        if (
          !isObject(entry) ||
          typeof entry.name !== 'string' ||
          entry.name.length === 0 ||
          entry.name.length > MAX_BUCKET_NAME_LENGTH
        ) {
          problems.push(`buckets[${index}].name must be a non-empty string`);
          return;
        }
        const after = opId.decode(entry.after);
        if (typeof entry.after !== 'string' || !after.ok) {
          problems.push(`buckets[${index}].after must be a decimal string op id (0 to 9223372036854775807)`);
          return;
        }
        buckets.set(entry.name, after.value);
      });
    }
  }

  const clientId = body.client_id;
  problems.push(...checkClientId(clientId, false));

  const parameters = body.parameters ?? {};
  if (!isObject(parameters)) problems.push('parameters must be a JSON object');

  const parametersProblem = isObject(parameters) ? parameterObjectProblem(parameters) : null;
  if (parametersProblem) problems.push(`parameters ${parametersProblem}`);

  let includeDefaults = true;
  const subscriptions: StreamSubscriptionRequest[] = [];
  if (body.streams !== undefined && body.streams !== null) {
    if (!isObject(body.streams)) problems.push('streams must be an object');
    else {
      const streams = body.streams;
      if (streams.include_defaults !== undefined && streams.include_defaults !== null) {
        if (typeof streams.include_defaults !== 'boolean') problems.push('streams.include_defaults must be a boolean');
        else includeDefaults = streams.include_defaults;
      }
      const entries = streams.subscriptions ?? [];
      if (!Array.isArray(entries)) problems.push('streams.subscriptions must be an array');
      else if (entries.length > MAX_SUBSCRIPTIONS)
        problems.push(`streams.subscriptions has more than ${MAX_SUBSCRIPTIONS} entries`);
      else {
        entries.forEach((entry, index) => {
          const subscription = parseSubscription(entry, `streams.subscriptions[${index}]`, problems);
          if (subscription) subscriptions.push(subscription);
        });
      }
    }
  }

  const appMetadata: Record<string, string> = {};
  if (isObject(body.app_metadata)) {
    for (const [key, value] of Object.entries(body.app_metadata))
      if (typeof value === 'string') appMetadata[key] = value;
  }

  if (problems.length > 0) throw validationError(problems);
  return {
    buckets,
    rawData: body.raw_data !== false,
    clientId: clientId as string | undefined,
    parameters: parameters as Record<string, unknown>,
    includeDefaults,
    subscriptions,
    appMetadata
  };
}

/** One `streams.subscriptions` element (STREAMS §5.1); problems are added to `problems` under `path`. */
function parseSubscription(entry: unknown, path: string, problems: string[]): StreamSubscriptionRequest | null {
  if (!isObject(entry)) {
    problems.push(`${path} must be an object`);
    return null;
  }
  const before = problems.length;
  if (typeof entry.stream !== 'string' || entry.stream.length === 0 || entry.stream.length > MAX_BUCKET_NAME_LENGTH)
    problems.push(`${path}.stream must be a non-empty string`);
  const parameters = entry.parameters ?? null;
  if (parameters !== null) {
    if (!isObject(parameters)) problems.push(`${path}.parameters must be a JSON object or null`);
    else {
      const problem = parameterObjectProblem(parameters);
      if (problem) problems.push(`${path}.parameters ${problem}`);
    }
  }
  // Range (an integer 0–3) is checked by the resolver: out of range is a per-subscription error (STREAMS §6.1).
  const overridePriority = entry.override_priority ?? null;
  if (overridePriority !== null && (typeof overridePriority !== 'number' || !Number.isFinite(overridePriority)))
    problems.push(`${path}.override_priority must be a number or null`);
  if (problems.length > before) return null;
  return {
    stream: entry.stream as string,
    parameters: parameters as Record<string, unknown> | null,
    overridePriority: overridePriority as number | null
  };
}

/**
 * Why a parameter object is refused (too deeply nested or too large as JSON), or null. Walks iteratively and stops at
 * the first limit, so a hostile body costs no more than the body limit already allows and cannot overflow the stack.
 */
function parameterObjectProblem(parameters: Record<string, unknown>): string | null {
  const pending: Array<{ value: unknown; depth: number }> = [{ value: parameters, depth: 1 }];
  let bytes = 0;
  while (pending.length > 0) {
    const { value, depth } = pending.pop()!;
    if (typeof value === 'object' && value !== null) {
      if (depth > MAX_PARAMETERS_DEPTH) return `are nested more than ${MAX_PARAMETERS_DEPTH} levels deep`;
      const entries = Array.isArray(value) ? value.map((item) => ['', item] as const) : Object.entries(value);
      bytes += 2;
      for (const [key, item] of entries) {
        bytes += key.length + 4; // quotes, colon, comma: close enough for a cap
        pending.push({ value: item, depth: depth + 1 });
      }
    } else {
      bytes += typeof value === 'string' ? value.length + 2 : String(value).length;
    }
    if (bytes > MAX_PARAMETERS_BYTES) return `are larger than ${MAX_PARAMETERS_BYTES} bytes as JSON`;
  }
  return null;
}
