import { opId } from '@syncpoint/codecs';
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
  includeDefaults: boolean;
  appMetadata: Record<string, string>;
}

const MAX_BUCKET_NAME_LENGTH = 1024;

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

  let includeDefaults = true;
  if (body.streams !== undefined && body.streams !== null) {
    if (!isObject(body.streams)) problems.push('streams must be an object');
    else if (body.streams.include_defaults !== undefined) {
      if (typeof body.streams.include_defaults !== 'boolean')
        problems.push('streams.include_defaults must be a boolean');
      else includeDefaults = body.streams.include_defaults;
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
    appMetadata
  };
}
