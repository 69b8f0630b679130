import { parseJsonWithBigints } from '@syncpoint/codecs';
import { type SyncLine } from '@syncpoint/test-fixtures';
import { BSON } from 'bson';

/** A minimal sync-stream client for tests: opens `/sync/stream` and yields decoded lines (NDJSON or BSON). */
export async function openSyncStream(
  url: string,
  token: string,
  body: object,
  options: { format?: 'ndjson' | 'bson'; signal?: AbortSignal } = {}
) {
  const response = await fetch(`${url}/sync/stream`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      Authorization: `Token ${token}`,
      Accept:
        options.format === 'bson'
          ? 'application/vnd.powersync.bson-stream;q=0.9,application/x-ndjson;q=0.8'
          : 'application/x-ndjson'
    },
    body: JSON.stringify(body),
    signal: options.signal
  });
  const contentType = response.headers.get('content-type') ?? '';
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body!.getReader();
  let buffer = Buffer.alloc(0);
  const queue: SyncLine[] = [];

  async function fill(): Promise<boolean> {
    const { done, value } = await reader.read();
    if (done) return false;
    buffer = Buffer.concat([buffer, Buffer.from(value)]);
    if (contentType.startsWith('application/vnd.powersync.bson-stream')) {
      while (buffer.length >= 4 && buffer.length >= buffer.readInt32LE(0)) {
        const size = buffer.readInt32LE(0);
        queue.push(BSON.deserialize(buffer.subarray(0, size)));
        buffer = buffer.subarray(size);
      }
    } else {
      let newline: number;
      while ((newline = buffer.indexOf(10)) >= 0) {
        // Exact integers: legacy (raw_data false) lines embed row data, whose int8 values may exceed 2^53.
        queue.push(parseJsonWithBigints(buffer.subarray(0, newline).toString('utf8')) as SyncLine);
        buffer = buffer.subarray(newline + 1);
      }
    }
    return true;
  }

  return {
    response,
    contentType,
    /** The next line, or null at the end of the stream. */
    async next(timeoutMs = 10_000): Promise<SyncLine | null> {
      const deadline = Date.now() + timeoutMs;
      while (queue.length === 0) {
        if (Date.now() > deadline) throw new Error('timed out waiting for a sync line');
        const more = await Promise.race([
          fill(),
          new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), Math.max(1, deadline - Date.now())))
        ]);
        if (more === false) return null;
      }
      return queue.shift()!;
    },
    /** Lines until one matches `predicate` (inclusive). */
    async until(predicate: (line: SyncLine) => boolean, timeoutMs = 10_000): Promise<SyncLine[]> {
      const lines: SyncLine[] = [];
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const line = await this.next(Math.max(1, deadline - Date.now()));
        if (line === null) throw new Error(`stream ended before the expected line; got ${JSON.stringify(lines)}`);
        lines.push(line);
        if (predicate(line)) return lines;
      }
    },
    close: () => reader.cancel().catch(() => {})
  };
}
