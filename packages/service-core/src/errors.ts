/**
 * Errors that reach a client. Each has a stable `PSYNC_Sxxxx` code and an HTTP status,
 * and serialises to the error envelope of PROTOCOL §2.1.
 */
export class ServiceError extends Error {
  override readonly name: string;
  constructor(
    readonly code: string,
    readonly status: number,
    readonly description: string,
    readonly details?: string,
    options?: { cause?: unknown; name?: string }
  ) {
    super(details ? `[${code}] ${description}: ${details}` : `[${code}] ${description}`, { cause: options?.cause });
    this.name = options?.name ?? 'ServiceError';
  }

  toJSON() {
    return {
      error: {
        name: this.name,
        code: this.code,
        status: this.status,
        description: this.description,
        ...(this.details === undefined ? {} : { details: this.details })
      }
    };
  }
}

export const ErrorCode = {
  VALIDATION: 'PSYNC_S2001',
  INTERNAL: 'PSYNC_S2001',
  ROUTE_NOT_FOUND: 'PSYNC_S2002',
  SHUTTING_DOWN: 'PSYNC_S2003',
  INVALID_TOKEN: 'PSYNC_S2101',
  TOKEN_EXPIRED: 'PSYNC_S2103',
  TOKEN_LIFETIME: 'PSYNC_S2104',
  TOKEN_AUDIENCE: 'PSYNC_S2105',
  AUTH_REQUIRED: 'PSYNC_S2106',
  JWKS_FETCH: 'PSYNC_S2204',
  NO_ACTIVE_SYNC_CONFIG: 'PSYNC_S2302',
  TOO_MANY_REQUESTS: 'PSYNC_S2304',
  BODY_TOO_LARGE: 'PSYNC_S2005',
  UNSUPPORTED_MEDIA_TYPE: 'PSYNC_S2006',
  CHECKPOINT_ID_EXHAUSTED: 'PSYNC_S2007',
  DATABASE_UNAVAILABLE: 'PSYNC_S2008',
  /** Request line and headers over Node's limit (16 KiB by default), refused by its HTTP parser. */
  HEADERS_TOO_LARGE: 'PSYNC_S2009',
  /** Headers or body not received within the server's timeouts. */
  REQUEST_TIMEOUT: 'PSYNC_S2010'
} as const;

export function validationError(messages: string[]): ServiceError {
  return new ServiceError(ErrorCode.VALIDATION, 400, 'Validation failed', JSON.stringify(messages), {
    name: 'ValidationError'
  });
}

export function authError(code: string, description: string, details?: string): ServiceError {
  return new ServiceError(code, 401, description, details, { name: 'AuthorizationError' });
}

export function noActiveSyncConfigError(): ServiceError {
  return new ServiceError(ErrorCode.NO_ACTIVE_SYNC_CONFIG, 500, 'No sync config is active', undefined, {
    name: 'ServiceError'
  });
}

export function internalError(cause: unknown): ServiceError {
  return new ServiceError(ErrorCode.INTERNAL, 500, 'Something went wrong', undefined, {
    cause,
    name: 'InternalServerError'
  });
}

// SQLSTATE classes and codes that mean "the database cannot be reached right now", not "this request is wrong":
// 08 connection exception, 57P01-57P03 shutdown / cannot connect now, 53300 too many connections.
const UNAVAILABLE_SQLSTATE = /^(08...|57P0[123]|53300)$/;
const UNAVAILABLE_NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN'
]);
// node-postgres reports a lost or timed-out connection with these messages and no code.
const UNAVAILABLE_MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error/;

/** Tests of module-owned drivers' errors (service-core knows no driver): see `recognizeUnavailableErrors`. */
const moduleUnavailableTests = new Set<(error: Error) => boolean>();

/**
 * A storage or source module whose driver is not node-postgres registers how to tell its "unreachable" errors (a
 * server selection timeout, a socket timeout), so that routes answer them with 503 like the Postgres ones.
 * Registering the same function again changes nothing.
 */
export function recognizeUnavailableErrors(test: (error: Error) => boolean): void {
  moduleUnavailableTests.add(test);
}

/** Whether `error` says that storage or the source is unreachable (a restart, a failover, a network cut). */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  for (const test of moduleUnavailableTests) if (test(error)) return true;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATE.test(code) || UNAVAILABLE_NETWORK_CODES.has(code))) return true;
  if (error instanceof AggregateError && error.errors.some(isDatabaseUnavailable)) return true; // happy eyeballs
  return UNAVAILABLE_MESSAGES.test(error.message);
}

/** 503: the request is fine and may be retried once storage or the source is back (the SDKs retry 5xx). */
export function databaseUnavailableError(cause: unknown): ServiceError {
  return new ServiceError(
    ErrorCode.DATABASE_UNAVAILABLE,
    503,
    'Storage or source database unavailable, retry later',
    undefined,
    {
      cause,
      name: 'ServiceUnavailable'
    }
  );
}
