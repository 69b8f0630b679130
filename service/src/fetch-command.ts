import { checksum, opId, writeCheckpoint } from '@syncpoint/codecs';
import { failure, usageError } from './cli-support.js';

interface FetchedBucket {
  bucket: string;
  checksum: number;
  count: number;
  priority?: number;
}

export interface FetchedCheckpoint {
  last_op_id: string;
  write_checkpoint?: string;
  buckets: FetchedBucket[];
}

/**
 * A tiny sync client for debugging: open `/sync/stream` (NDJSON), read until the first `checkpoint` line, close.
 * Returns what a client would be told first: the checkpoint op id, its write checkpoint and every bucket's checksum.
 */
export async function fetchFirstCheckpoint(options: {
  url: string;
  token: string;
  clientId?: string;
  timeoutMs: number;
}): Promise<FetchedCheckpoint> {
  let endpoint: URL;
  try {
    endpoint = new URL('/sync/stream', options.url);
  } catch {
    throw usageError(`--url: not a URL: "${options.url}"`);
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:')
    throw usageError(`--url: expected http(s)://, got "${options.url}"`);

  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, options.timeoutMs);
  try {
    let response: Response;
    try {
      response = await fetch(endpoint, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Accept: 'application/x-ndjson',
          Authorization: `Token ${options.token}`
        },
        body: JSON.stringify({
          buckets: [],
          include_checksum: true,
          raw_data: true,
          ...(options.clientId === undefined ? {} : { client_id: options.clientId })
        }),
        signal: controller.signal
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw failure(`cannot reach ${endpoint.origin}: ${cause?.code ?? cause?.message ?? (error as Error).message}`);
    }
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      let detail = text.trim();
      try {
        const { error } = JSON.parse(text) as { error?: { code?: string; description?: string; details?: string } };
        if (error)
          detail = `${error.code ?? ''} ${error.description ?? ''}${error.details ? `: ${error.details}` : ''}`.trim();
      } catch {
        // not the error envelope: print the body as is
      }
      throw failure(`HTTP ${response.status} from ${endpoint.href}${detail ? `: ${detail}` : ''}`);
    }
    const reader: ReadableStreamDefaultReader<Uint8Array> = response.body!.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) throw failure('the stream ended before a checkpoint arrived');
        buffered += decoder.decode(value, { stream: true });
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line === '') continue;
          let parsed: { checkpoint?: unknown; token_expires_in?: number };
          try {
            parsed = JSON.parse(line) as typeof parsed;
          } catch {
            throw failure(`not an NDJSON sync line: ${line.slice(0, 80)}`);
          }
          if (parsed.checkpoint) return decodeCheckpointLine(parsed.checkpoint);
          if (parsed.token_expires_in === 0) throw failure('the token expired before a checkpoint arrived');
        }
      }
    } finally {
      controller.abort();
      reader.cancel().catch(() => undefined);
    }
  } catch (error) {
    if (timedOut) throw failure(`no checkpoint within ${options.timeoutMs / 1000} s`);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The `checkpoint` line's fields through the codecs (PROTOCOL §7.3): op id and write checkpoint as decimal strings
 * within their ranges, bucket checksums as 32-bit integers. A server answering anything else is reported, not
 * printed as if it were fine.
 */
export function decodeCheckpointLine(line: unknown): FetchedCheckpoint {
  const problems: string[] = [];
  const fields = (typeof line === 'object' && line !== null ? line : {}) as Record<string, unknown>;
  const lastOpId = opId.decode(fields.last_op_id);
  if (typeof fields.last_op_id !== 'string' || !lastOpId.ok)
    problems.push(`last_op_id: ${lastOpId.ok ? 'expected a decimal string' : lastOpId.message}`);
  let write: string | undefined;
  if (fields.write_checkpoint !== undefined) {
    const decoded = writeCheckpoint.decode(fields.write_checkpoint);
    if (typeof fields.write_checkpoint !== 'string' || !decoded.ok)
      problems.push(`write_checkpoint: ${decoded.ok ? 'expected a decimal string' : decoded.message}`);
    else write = writeCheckpoint.encode(decoded.value);
  }
  const buckets: FetchedBucket[] = [];
  if (!Array.isArray(fields.buckets)) problems.push('buckets: expected an array');
  else {
    fields.buckets.forEach((entry: unknown, index) => {
      const bucket = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>;
      const sum = checksum.decode(bucket.checksum);
      if (typeof bucket.bucket !== 'string') problems.push(`buckets[${index}].bucket: expected a string`);
      if (!sum.ok) problems.push(`buckets[${index}].checksum: ${sum.message}`);
      if (!Number.isSafeInteger(bucket.count)) problems.push(`buckets[${index}].count: expected an integer`);
      if (typeof bucket.bucket !== 'string' || !sum.ok || !Number.isSafeInteger(bucket.count)) return;
      buckets.push({
        bucket: bucket.bucket,
        // As sent (the signed form, PROTOCOL §7.5), once known to be a 32-bit checksum.
        checksum: bucket.checksum as number,
        count: bucket.count as number,
        ...(typeof bucket.priority === 'number' ? { priority: bucket.priority } : {})
      });
    });
  }
  if (problems.length > 0 || !lastOpId.ok) throw failure(`malformed checkpoint line: ${problems.join('; ')}`);
  return {
    last_op_id: opId.encode(lastOpId.value),
    ...(write === undefined ? {} : { write_checkpoint: write }),
    buckets
  };
}

export function formatCheckpoint(checkpoint: FetchedCheckpoint): string {
  const lines = [
    `last_op_id:       ${checkpoint.last_op_id}`,
    `write_checkpoint: ${checkpoint.write_checkpoint ?? 'none'}`
  ];
  lines.push(`buckets:          ${checkpoint.buckets.length}`);
  const width = Math.max(0, ...checkpoint.buckets.map((bucket) => bucket.bucket.length));
  for (const bucket of checkpoint.buckets) {
    lines.push(
      `  ${bucket.bucket.padEnd(width)}  checksum ${String(bucket.checksum).padStart(10)}  count ${bucket.count}${bucket.priority === undefined ? '' : `  priority ${bucket.priority}`}`
    );
  }
  return lines.join('\n') + '\n';
}
