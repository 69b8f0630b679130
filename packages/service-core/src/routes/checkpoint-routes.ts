import { checkpointRequestId, writeCheckpoint } from '@syncpoint/codecs';
import { Router, type Request } from 'express';
import type { TokenPayload, TokenVerifier } from '../auth/token-verifier.js';
import { tokenFromAuthorizationHeader } from '../auth/token-verifier.js';
import type { WriteCheckpointBatcher } from '../checkpoints/write-checkpoint-batcher.js';
import { validationError } from '../errors.js';
import { concurrencyLimiter } from './concurrency-limiter.js';

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

async function authenticate(req: Request, verifier: TokenVerifier): Promise<TokenPayload> {
  return verifier.verify(tokenFromAuthorizationHeader(req.headers.authorization));
}

export function checkpointRoutes({ verifier, batcher }: CheckpointRouteDependencies): Router {
  const router = Router();
  const limiter = concurrencyLimiter(CHECKPOINT_ROUTE_LIMITS);

  // Client-chosen, monotonic checkpoint request ids (PROTOCOL §4.3). Validation comes before authentication.
  router.post('/sync/checkpoint-request', limiter, async (req, res) => {
    const body: unknown = req.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw validationError([
        req.is('application/json') ? 'body must be a JSON object' : 'body must be JSON (Content-Type: application/json)'
      ]);
    }
    const params = requestParameters(req);
    const problems = checkClientId(params.client_id, true);
    const id = checkpointRequestId.decode(params.checkpoint_request_id);
    if (params.checkpoint_request_id === undefined) problems.push('checkpoint_request_id is required');
    else if (!id.ok) problems.push(id.message);
    if (problems.length > 0 || !id.ok) throw validationError(problems);

    const token = await authenticate(req, verifier);
    const outcome = await batcher.enqueue(fullUserId(token.userId, params.client_id as string), id.value);
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

  return router;
}
