import type { FastifyRequest } from 'fastify';
import { MatrixError } from '../../errors.ts';
import { isValidServerName } from '../../protocol/identifiers.ts';
import type { JsonValue } from '../../protocol/json.ts';
import { parseXMatrixHeader } from '../../protocol/x-matrix.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The server that signed the request, set by requireXMatrix. */
    origin: string;
  }
}

export function unauthorized(message: string): MatrixError {
  return new MatrixError(401, 'M_UNAUTHORIZED', message);
}

/**
 * preValidation hook (the body is parsed, the schema not yet checked): refuses a request unless
 * it carries an X-Matrix signature by a valid origin, for this server when it names a
 * destination, with a current key of the origin that the key ring can find, over exactly this
 * method, URI and body. Records the origin on the request.
 */
export async function requireXMatrix(request: FastifyRequest): Promise<void> {
  const header = request.headers.authorization;
  if (typeof header !== 'string' || header.trim() === '') {
    throw unauthorized('Missing Authorization header: federation requests must be signed with X-Matrix');
  }
  const parsed = parseXMatrixHeader(header);
  if (!parsed.ok) throw unauthorized(`Malformed X-Matrix Authorization header: ${parsed.reason}`);
  const { auth } = parsed;
  if (!isValidServerName(auth.origin)) throw unauthorized('The X-Matrix origin is not a valid server name');
  // A server the followed ban lists name is refused outright (spec/detection.md).
  if (await request.server.services.policy.serverBanned(auth.origin)) {
    throw new MatrixError(403, 'M_FORBIDDEN', 'This server is banned by the policy of this homeserver');
  }
  const ours = request.server.services.config.serverName;
  if (auth.destination !== undefined && auth.destination !== ours) {
    throw unauthorized(
      `The request is signed for destination ${auth.destination}, but this server is ${ours}`,
    );
  }
  const verdict = await request.server.federation.keyRing.verifyRequest(auth, {
    method: request.method,
    uri: request.url,
    destination: ours,
    ...(request.body !== undefined ? { content: request.body as JsonValue } : {}),
  });
  if (!verdict.ok) throw unauthorized(`The X-Matrix signature was not accepted: ${verdict.reason}`);
  request.origin = auth.origin;
}
