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
  refuseByAccountState(request);
  accounts
    .touch(request.session, request.ip)
    .catch((err: unknown) => request.log.warn({ err }, 'device touch failed'));
}

/** Routes a locked account may still use: ending its sessions (MSC3939). */
const LOCKED_ALLOWED = /^POST \/_matrix\/client\/v3\/logout(\/all)?$/;

/**
 * Routes a suspended account may not use (MSC3823): whatever writes into rooms or shows the
 * account to others. Reading, leaving, logging out and managing its own devices and keys stay open.
 */
const SUSPENDED_REFUSED = new RegExp(
  [
    '^PUT /_matrix/client/v3/rooms/:roomId/(send|state|redact)/',
    '^POST /_matrix/client/v3/(createRoom|join/:roomIdOrAlias|knock/:roomIdOrAlias)$',
    '^POST /_matrix/client/v3/rooms/:roomId/(join|invite|kick|ban|unban)$',
    '^PUT /_matrix/client/v3/profile/',
    '^PUT /_matrix/client/v3/directory/',
    '^PUT /_conclave/client/v1/rooms/',
  ].join('|'),
);

function refuseByAccountState(request: FastifyRequest): void {
  refuseAccountState(request.session, request.method, request.routeOptions.url);
}

/**
 * 401 M_USER_LOCKED for a locked account, 403 M_USER_SUSPENDED for a suspended one's writes;
 * `routeUrl` is the route's pattern (`/rooms/:roomId/...`).
 */
export function refuseAccountState(
  session: Pick<Session, 'locked' | 'suspended'>,
  method: string,
  routeUrl: string | undefined,
): void {
  if (!session.locked && !session.suspended) return;
  const route = `${method} ${routeUrl ?? ''}`;
  if (session.locked && !LOCKED_ALLOWED.test(route)) throw errors.userLocked();
  if (session.suspended && SUSPENDED_REFUSED.test(route)) throw errors.userSuspended();
}

/** onRequest for the admin API: a valid token of a server admin, else 401 or 403 M_FORBIDDEN. */
export async function requireAdmin(request: FastifyRequest): Promise<void> {
  await requireAuth(request);
  if (!request.session.isAdmin) throw errors.forbidden('You are not a server admin');
}
