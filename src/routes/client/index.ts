import type { FastifyInstance } from 'fastify';
import { devicesRoutes } from './devices.routes.ts';
import { profileRoutes } from './profile.routes.ts';
import { registerRoutes } from './register.routes.ts';
import { sessionRoutes } from './session.routes.ts';
import { versionsRoutes } from './versions.routes.ts';

/** The client-server API: every route authenticates with an access token where it needs one. */
export async function clientRoutes(app: FastifyInstance): Promise<void> {
  await app.register(versionsRoutes);
  await app.register(registerRoutes);
  await app.register(sessionRoutes);
  await app.register(devicesRoutes);
  await app.register(profileRoutes);
}
