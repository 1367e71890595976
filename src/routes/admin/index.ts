import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { requireAdmin } from '../../http/auth.ts';
import { ADMIN_V1 } from './common.ts';
import { adminMiscRoutes } from './misc.routes.ts';
import { adminRoomsRoutes } from './rooms.routes.ts';
import { adminUsersRoutes } from './users.routes.ts';

const VERSION = (
  JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/**
 * The admin API under /_synapse/admin (Synapse's paths and shapes, so that its tools work): every
 * route needs a server admin's access token, but server_version, which Synapse serves to anyone
 * and admin tools ask before logging in.
 */
export async function adminRoutes(app: FastifyInstance): Promise<void> {
  // GET /_synapse/admin/v1/server_version
  app.get(`${ADMIN_V1}/server_version`, async () => ({ server_version: `Conclave ${VERSION}` }));

  await app.register(async (admin) => {
    admin.addHook('onRequest', requireAdmin);
    await admin.register(adminUsersRoutes);
    await admin.register(adminRoomsRoutes);
    await admin.register(adminMiscRoutes);
  });
}
