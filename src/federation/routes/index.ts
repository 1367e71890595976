import type { FastifyInstance } from 'fastify';
import { requireXMatrix } from './auth.ts';
import { keysRoutes } from './keys.routes.ts';
import { mediaRoutes } from './media.routes.ts';
import { queryRoutes } from './query.routes.ts';
import { roomsRoutes } from './rooms.routes.ts';
import { userKeysRoutes } from './user-keys.routes.ts';
import { versionRoutes } from './version.routes.ts';

/**
 * The server-server API, a sibling of the client routes: the key endpoints and
 * /_matrix/federation/v1/version need no signature; every other /_matrix/federation route sits in
 * a context whose hook checks the X-Matrix signature and sets request.origin.
 */
export async function federationRoutes(app: FastifyInstance): Promise<void> {
  app.decorateRequest('origin', '');
  await app.register(keysRoutes);
  await app.register(versionRoutes);
  await app.register(async (signed) => {
    signed.addHook('preValidation', requireXMatrix);
    await signed.register(queryRoutes);
    await signed.register(roomsRoutes);
    await signed.register(mediaRoutes);
    await signed.register(userKeysRoutes);
  });
}
