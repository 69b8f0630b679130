import { MongoNetworkError, MongoOperationTimeoutError, MongoServerError, MongoServerSelectionError } from 'mongodb';

/**
 * Server error codes that mean "this server cannot serve the request right now" (shutdown, an election, a network
 * failure between replica set members), not "the request is wrong".
 */
const UNAVAILABLE_SERVER_CODES = new Set([
  6, // HostUnreachable
  7, // HostNotFound
  89, // NetworkTimeout
  91, // ShutdownInProgress
  189, // PrimarySteppedDown
  9001, // SocketException
  10107, // NotWritablePrimary
  11600, // InterruptedAtShutdown
  11602, // InterruptedDueToReplStateChange
  13435, // NotPrimaryNoSecondaryOk
  13436 // NotPrimaryOrSecondary
]);

/**
 * Whether a MongoDB driver error says storage is unreachable: no server selectable within the server selection
 * timeout, a network error or socket timeout, or a server shutting down or stepping down. The routes answer those
 * with 503 (retry later), as for the Postgres storage's lost connections and query timeouts.
 */
export function isMongoUnavailable(error: unknown): boolean {
  if (
    error instanceof MongoServerSelectionError ||
    error instanceof MongoNetworkError || // includes MongoNetworkTimeoutError (socket timeout)
    error instanceof MongoOperationTimeoutError
  ) {
    return true;
  }
  return (
    error instanceof MongoServerError && typeof error.code === 'number' && UNAVAILABLE_SERVER_CODES.has(error.code)
  );
}
