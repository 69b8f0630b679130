import { silentLogger, type Logger } from '@syncpoint/service-core';
import { MongoServerError, type Collection, type Document, type ObjectId } from 'mongodb';

/** PROTOCOL §6.2: tail with await-data getMores of at most 10 s, and re-check every 60 s regardless. */
export const MAX_AWAIT_MS = 10_000;
export const RECHECK_INTERVAL_MS = 60_000;
/** Pause before reopening a cursor that ended (an empty capped collection gives a dead cursor) or failed. */
export const REOPEN_DELAY_MS = 250;
export const ERROR_REOPEN_DELAY_MS = 2_000;
/** Server error code: the tailable cursor's position was overwritten in the capped collection. */
export const CAPPED_POSITION_LOST = 136;

export function isCappedPositionLost(error: unknown): boolean {
  return (
    error instanceof MongoServerError &&
    (error.code === CAPPED_POSITION_LOST || error.codeName === 'CappedPositionLost')
  );
}

/** Only events after the last one seen (or, at the start, after the newest existing one). */
export function eventsAfter(lastSeen: ObjectId | null): Document {
  return lastSeen === null ? {} : { _id: { $gt: lastSeen } };
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });

/**
 * Tails the capped `checkpoint_events` collection (tailable, await-data cursor) and calls `onChange` for every new
 * event, plus every 60 s. The cursor is reopened after `CappedPositionLost` (then `onChange` is called: an event
 * may have been missed) and after any other error. The returned function stops it; an in-flight getMore is
 * aborted through the cursor's AbortSignal rather than awaited.
 */
export async function tailCheckpointEvents(
  events: Collection<{ _id: ObjectId }>,
  onChange: () => void,
  logger: Logger = silentLogger
): Promise<() => Promise<void>> {
  const controller = new AbortController();
  const { signal } = controller;
  const newest = await events.find({}, { sort: { $natural: -1 }, limit: 1, projection: { _id: 1 } }).toArray();
  let lastSeen: ObjectId | null = newest[0]?._id ?? null;
  const timer = setInterval(onChange, RECHECK_INTERVAL_MS);
  timer.unref?.();

  const loop = async () => {
    while (!signal.aborted) {
      const cursor = events.find(eventsAfter(lastSeen), {
        tailable: true,
        awaitData: true,
        maxAwaitTimeMS: MAX_AWAIT_MS,
        projection: { _id: 1 },
        signal
      });
      try {
        for await (const event of cursor) {
          if (signal.aborted) break;
          lastSeen = event._id;
          onChange();
        }
        await sleep(REOPEN_DELAY_MS, signal);
      } catch (error) {
        if (signal.aborted) break;
        if (isCappedPositionLost(error)) {
          onChange();
          lastSeen = null;
          continue;
        }
        logger.warn({ err: error }, 'checkpoint_events cursor failed; reopening');
        onChange();
        await sleep(ERROR_REOPEN_DELAY_MS, signal);
      } finally {
        await cursor.close().catch(() => undefined);
      }
    }
  };
  const running = loop();

  return async () => {
    clearInterval(timer);
    controller.abort();
    await running;
  };
}
