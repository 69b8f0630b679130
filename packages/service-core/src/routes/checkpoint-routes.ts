import { checkpointRequestId, writeCheckpoint } from '@syncpoint/codecs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Router, type Request } from 'express';
import type { TokenPayload, TokenVerifier } from '../auth/token-verifier.js';
import { tokenFromAuthorizationHeader } from '../auth/token-verifier.js';
import type { WriteCheckpointBatcher } from '../checkpoints/write-checkpoint-batcher.js';
import { validationError } from '../errors.js';
import { ConcurrencyLimit, concurrencyLimiter } from './concurrency-limiter.js';

export const MAX_CLIENT_ID_LENGTH = 256;

/**
 * Checkpoint requests admitted at once, and queued beyond that before 429 (PROTOCOL §2.1's reference values are
 * 100 + 100). Admitted requests only wait for the batcher, which stores everything waiting in one statement, so a
 * reconnect storm is cheaper absorbed than answered with 429s that every client retries: 10,000 requests in one
 * second took 8.5 s with 100 + 100 (4,551 answers 429) and 4.6 s with these limits (none).
 */
export const CHECKPOINT_ROUTE_LIMITS = { concurrent: 1000, queued: 1000 } as const;

/**
 * Full user id (PROTOCOL §4.2): `user/client`, or the user id alone without a client id. That rule alone is not
 * one-to-one: user `alice/phone` without a client id would share user `alice`'s record for client `phone`. So client
 * ids containing `/` are rejected at the boundary, and a user id containing `/` gets a trailing `/` when there is no
 * client id: `user/client` always ends in a non-empty, slash-free client id, so no two callers share a key. Subs
 * without a slash (nearly all) keep the reference's key exactly.
 */
export function fullUserId(userId: string, clientId: string | undefined): string {
  if (clientId !== undefined) return `${userId}/${clientId}`;
  return userId.includes('/') ? `${userId}/` : userId;
}

/** Validate an optional or required client id; returns the problems found. */
export function checkClientId(value: unknown, required: boolean): string[] {
  if (value === undefined || value === null) return required ? ['client_id is required'] : [];
  if (typeof value !== 'string') return ['client_id must be a string'];
  if (value.length === 0) return ['client_id must not be empty'];
  if (value.length > MAX_CLIENT_ID_LENGTH) return [`client_id must be at most ${MAX_CLIENT_ID_LENGTH} characters`];
  if (value.includes('/')) return ['client_id must not contain a slash'];
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) return ['client_id must not contain control characters'];
  return [];
}

/** Path params, query and a JSON-object body merged into one parameter object; the body wins (PROTOCOL §2.1). */
function requestParameters(req: Request): Record<string, unknown> {
  const body: unknown = req.body;
  const bodyObject = typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {};
  return { ...req.query, ...req.params, ...bodyObject };
}

export interface CheckpointRouteDependencies {
  verifier: TokenVerifier;
  batcher: WriteCheckpointBatcher;
}

async function authenticate(req: IncomingMessage, verifier: TokenVerifier): Promise<TokenPayload> {
  return verifier.verify(tokenFromAuthorizationHeader(req.headers.authorization));
}

/** The checks of `POST /sync/checkpoint-request` on its merged parameters, shared by both paths to it. */
function checkpointRequestFields(params: Record<string, unknown>): { clientId: string; requestId: bigint } {
  const problems = checkClientId(params.client_id, true);
  const id = checkpointRequestId.decode(params.checkpoint_request_id);
  if (params.checkpoint_request_id === undefined) problems.push('checkpoint_request_id is required');
  else if (!id.ok) problems.push(id.message);
  if (problems.length > 0 || !id.ok) throw validationError(problems);
  return { clientId: params.client_id as string, requestId: id.value };
}

export interface CheckpointRoutes {
  /** Both routes through Express's generic chain (body parser, router); every request the fast path declines. */
  router: Router;
  /**
   * `POST /sync/checkpoint-request` in its usual shape, called by the HTTP server before the Express app (see
   * `checkpointRequestFastPath`). Returns false, having touched nothing, for any other request; the server then
   * hands it to the app. An error is given to `fail`, which answers it as the app's error handler does.
   */
  fastPath(
    req: IncomingMessage,
    res: ServerResponse,
    fail: (req: IncomingMessage, res: ServerResponse, error: unknown) => void
  ): boolean;
}

export interface CheckpointFastPathOptions {
  /** The body limit of the generic chain; a larger declared body is left to it (413 before any buffering). */
  bodyLimitBytes: number;
  /** The headers every answer of the generic chain carries (its request id, CORS), as name/value pairs. */
  responseHeaders(): string[];
}

export function checkpointRoutes(
  { verifier, batcher }: CheckpointRouteDependencies,
  fastPathOptions: CheckpointFastPathOptions
): CheckpointRoutes {
  const router = Router();
  // One limit for both paths to the routes.
  const limit = new ConcurrencyLimit(CHECKPOINT_ROUTE_LIMITS);
  const limiter = concurrencyLimiter(limit);

  // Client-chosen, monotonic checkpoint request ids (PROTOCOL §4.3). Validation comes before authentication.
  router.post('/sync/checkpoint-request', limiter, async (req, res) => {
    const body: unknown = req.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw validationError([
        req.is('application/json') ? 'body must be a JSON object' : 'body must be JSON (Content-Type: application/json)'
      ]);
    }
    const { clientId, requestId } = checkpointRequestFields(requestParameters(req));
    const token = await authenticate(req, verifier);
    const outcome = await batcher.enqueue(fullUserId(token.userId, clientId), requestId);
    res.json({ data: { checkpoint_request_id: checkpointRequestId.encode(outcome.writeCheckpoint) } });
  });

  // Legacy: server-generated ids (PROTOCOL §4.4).
  router.get('/write-checkpoint2.json', limiter, async (req, res) => {
    const params = requestParameters(req);
    const problems = checkClientId(params.client_id, false);
    if (problems.length > 0) throw validationError(problems);

    const token = await authenticate(req, verifier);
    const outcome = await batcher.enqueue(fullUserId(token.userId, params.client_id as string | undefined));
    res.json({ data: { write_checkpoint: writeCheckpoint.encode(outcome.writeCheckpoint) } });
  });

  return {
    router,
    fastPath: checkpointRequestFastPath({ verifier, batcher, limit, ...fastPathOptions })
  };
}

/** Content types the fast path reads (compared lower-cased); any other JSON spelling takes the generic chain. */
const FAST_PATH_CONTENT_TYPES = new Set([
  'application/json',
  'application/json; charset=utf-8',
  'application/json;charset=utf-8'
]);

/**
 * Whether a request is `POST /sync/checkpoint-request` in the shape clients send: exact path without a query, a JSON
 * content type in UTF-8, no content coding, a declared length within the limit. Decided from the headers alone,
 * before any byte of the body is read, so a declined request goes through the generic chain exactly as before
 * (413 for an oversized body, 415 for a charset or coding, the route's usual answers for everything else).
 */
function takesFastPath(req: IncomingMessage, bodyLimitBytes: number): boolean {
  if (req.method !== 'POST' || req.url !== '/sync/checkpoint-request') return false;
  const { headers } = req;
  const contentType = headers['content-type'];
  if (contentType === undefined || !FAST_PATH_CONTENT_TYPES.has(contentType.toLowerCase())) return false;
  if (headers['content-encoding'] !== undefined && headers['content-encoding'].toLowerCase() !== 'identity') {
    return false;
  }
  if (headers['transfer-encoding'] !== undefined) return false;
  const length = headers['content-length'];
  if (length === undefined || !/^\d{1,9}$/.test(length)) return false;
  return Number(length) <= bodyLimitBytes;
}

/**
 * Reads a body whose declared length is already known to be within the limit (Node's parser stops at the declared
 * length, and the count below guards that too). Resolves undefined when the client went away before the end.
 */
function readDeclaredBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) return void req.destroy();
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    req.on('error', () => resolve(undefined));
    req.on('close', () => resolve(undefined)); // after 'end' this changes nothing
  });
}

/** body-parser's JSON reading as the generic chain configures it: UTF-8 without a BOM, empty means `{}`, any value. */
function parseJsonBody(raw: Buffer): unknown {
  let text = raw.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.length === 0) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw validationError(['body is not valid JSON']);
  }
}

/**
 * `POST /sync/checkpoint-request` without Express: the request id, CORS headers, body parsing and routing of the
 * generic chain cost more CPU than the request itself (issue 14). Same checks, errors and order as the route above:
 * body, concurrency limit, validation, authentication, batcher.
 */
function checkpointRequestFastPath(
  options: CheckpointFastPathOptions & CheckpointRouteDependencies & { limit: ConcurrencyLimit }
): CheckpointRoutes['fastPath'] {
  const { verifier, batcher, limit, bodyLimitBytes } = options;
  return (req, res, fail) => {
    if (!takesFastPath(req, bodyLimitBytes)) return false;
    void readDeclaredBody(req, bodyLimitBytes).then((raw) => {
      if (raw === undefined) return; // the client is gone; nothing to answer
      let body: unknown;
      try {
        body = parseJsonBody(raw);
      } catch (error) {
        return fail(req, res, error);
      }
      const admitted = limit.admit(req, () => {
        answer(req, body).then(
          (text) => {
            const headers = options.responseHeaders();
            headers.push('Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(text.length));
            res.writeHead(200, headers);
            res.end(text);
            limit.release();
          },
          (error: unknown) => {
            fail(req, res, error);
            limit.release();
          }
        );
      });
      if (!admitted) {
        res.writeHead(429, options.responseHeaders());
        res.end();
      }
    });
    return true;
  };

  async function answer(req: IncomingMessage, body: unknown): Promise<string> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw validationError(['body must be a JSON object']);
    }
    const { clientId, requestId } = checkpointRequestFields(body as Record<string, unknown>);
    const token = await authenticate(req, verifier);
    const outcome = await batcher.enqueue(fullUserId(token.userId, clientId), requestId);
    // The same JSON as the generic route's `res.json`; ASCII only (digits), so its length is its byte length.
    return JSON.stringify({ data: { checkpoint_request_id: checkpointRequestId.encode(outcome.writeCheckpoint) } });
  }
}
