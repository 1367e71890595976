import type { FastifyInstance } from 'fastify';
import { accountRoutes } from './account.routes.ts';
import { devicesRoutes } from './devices.routes.ts';
import { directoryRoutes } from './directory.routes.ts';
import { filtersRoutes } from './filters.routes.ts';
import { keyBackupRoutes } from './key-backup.routes.ts';
import { keysRoutes } from './keys.routes.ts';
import { mediaRoutes } from './media.routes.ts';
import { presenceRoutes } from './presence.routes.ts';
import { profileRoutes } from './profile.routes.ts';
import { pushRulesRoutes } from './push-rules.routes.ts';
import { registerRoutes } from './register.routes.ts';
import { relationsRoutes } from './relations.routes.ts';
import { reportsRoutes } from './reports.routes.ts';
import { retentionRoutes } from './retention.routes.ts';
import { rolesRoutes } from './roles.routes.ts';
import { roomsRoutes } from './rooms.routes.ts';
import { sessionRoutes } from './session.routes.ts';
import { syncRoutes } from './sync.routes.ts';
import { syncWebSocketRoutes } from './sync-ws.routes.ts';
import { toDeviceRoutes } from './to-device.routes.ts';
import { userDirectoryRoutes } from './user-directory.routes.ts';
import { versionsRoutes } from './versions.routes.ts';

/** The client-server API: every route authenticates with an access token where it needs one. */
export async function clientRoutes(app: FastifyInstance): Promise<void> {
  await app.register(versionsRoutes);
  await app.register(registerRoutes);
  await app.register(sessionRoutes);
  await app.register(devicesRoutes);
  await app.register(profileRoutes);
  await app.register(filtersRoutes);
  await app.register(pushRulesRoutes);
  await app.register(roomsRoutes);
  await app.register(directoryRoutes);
  await app.register(syncRoutes);
  await app.register(keyBackupRoutes);
  await app.register(syncWebSocketRoutes);
  await app.register(keysRoutes);
  await app.register(toDeviceRoutes);
  await app.register(mediaRoutes);
  await app.register(reportsRoutes);
  await app.register(rolesRoutes);
  await app.register(retentionRoutes);
  await app.register(presenceRoutes);
  await app.register(userDirectoryRoutes);
  await app.register(relationsRoutes);
  await app.register(accountRoutes);
}
