import type { ServerResponse } from 'node:http';
import { stringifyJsonWithBigints } from '@syncpoint/codecs';
import { BSON } from 'bson';

export const NDJSON_CONTENT_TYPE = 'application/x-ndjson';
export const BSON_CONTENT_TYPE = 'application/vnd.powersync.bson-stream';

/**
 * Writes sync lines to a streaming response, one at a time, respecting the socket's backpressure: when the kernel
 * buffer is full, the next write waits for 'drain', so a slow client never makes the process buffer without bound.
 */
export class LineWriter {
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly format: 'ndjson' | 'bson'
  ) {
    res.once('close', () => (this.closed = true));
  }

  get isClosed(): boolean {
    return this.closed || this.res.destroyed;
  }

  /** Queue a line; resolves once it is handed to the socket (after a drain if needed). */
  write(line: object): Promise<void> {
    this.chain = this.chain.then(() => this.writeNow(line));
    return this.chain;
  }

  private async writeNow(line: object): Promise<void> {
    if (this.isClosed) return;
    // Lines carry ids as decimal strings; only legacy embedded row data may hold bigints (exact int8 values), which
    // BSON writes as Int64 and NDJSON as plain JSON integers.
    const chunk = this.format === 'bson' ? BSON.serialize(line) : stringifyJsonWithBigints(line) + '\n';
    if (this.res.write(chunk)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.res.off('drain', done);
        this.res.off('close', done);
        resolve();
      };
      this.res.on('drain', done);
      this.res.on('close', done);
    });
  }

  /**
   * Destroy the response now (the client is not reading and the stream must end): queued lines are dropped, and a
   * write waiting for 'drain' returns on the 'close' that follows.
   */
  destroy(): void {
    this.closed = true;
    this.res.destroy();
  }

  /** End the response after every queued line. */
  async end(): Promise<void> {
    await this.chain;
    if (!this.isClosed) this.res.end();
  }
}
