import type { FastifyRequest } from 'fastify';
import { errors } from '../errors.ts';
import type { Session } from '../services/accounts.service.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by requireAuth on routes that need an access token. */
    session: Session;
  }
}

/** The access token of a request: `Authorization: Bearer`, or the deprecated access_token query parameter. */
export function accessTokenOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw errors.missingToken();
    return m[1];
  }
  const query = request.query as Record<string, unknown> | undefined;
  const param = query?.access_token;
  return typeof param === 'string' && param !== '' ? param : undefined;
}

/** preHandler: refuses requests without a valid access token and records the session. */
export async function requireAuth(request: FastifyRequest): Promise<void> {
  const token = accessTokenOf(request);
  if (token === undefined) throw errors.missingToken();
  const { accounts } = request.server.services;
  request.session = await accounts.authenticateToken(token);
  // A locked account answers 401 M_USER_LOCKED; a suspended one 403 M_USER_SUSPENDED on writes.
  await request.server.services.restrictions.check(
    request.session.userId,
    request.method,
    request.routeOptions.url,
  );
  accounts
    .touch(request.session, request.ip)
    .catch((err: unknown) => request.log.warn({ err }, 'device touch failed'));
}
