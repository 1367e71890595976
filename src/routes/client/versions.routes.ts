import type { FastifyInstance } from 'fastify';
import { requireAuth } from '../../http/auth.ts';
import { V3 } from './schemas.ts';

/**
 * Spec versions advertised. matrix-js-sdk requires v1.1 or later. The README's API table says
 * which parts of these versions are served so far.
 */
export const SUPPORTED_VERSIONS = ['v1.1'];

export async function versionsRoutes(app: FastifyInstance): Promise<void> {
  const { config } = app.services;

  // GET /_matrix/client/versions
  app.get('/_matrix/client/versions', async () => ({
    versions: SUPPORTED_VERSIONS,
    unstable_features: {},
  }));

  // GET /.well-known/matrix/client
  app.get('/.well-known/matrix/client', async () => ({
    'm.homeserver': { base_url: config.publicBaseUrl || `https://${config.serverName}` },
  }));

  // GET /_matrix/client/v3/capabilities
  app.get(`${V3}/capabilities`, { onRequest: requireAuth }, async () => ({
    capabilities: {
      'm.change_password': { enabled: true },
      'm.room_versions': {
        default: '12',
        available: { '10': 'stable', '11': 'stable', '12': 'stable' },
      },
      'm.set_displayname': { enabled: true },
      'm.set_avatar_url': { enabled: true },
      'm.3pid_changes': { enabled: false },
      'm.get_login_token': { enabled: false },
    },
  }));
}
