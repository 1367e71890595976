import type { FastifyInstance } from 'fastify';
import { requireAuth } from '../../http/auth.ts';
import { ROOM_VERSIONS } from '../../protocol/room-versions.ts';
import { V3 } from './schemas.ts';

/**
 * Spec versions advertised: those whose required endpoints are served (the README's API table says
 * which). The r0 releases are served under /_matrix/client/r0 (http/path-aliases.ts). v1.2 adds
 * the space hierarchy, which is not served yet: clients read a version as a promise, so it is only
 * listed once its endpoints answer. Threads and relations are served, and advertised as unstable
 * features below.
 */
export const SUPPORTED_VERSIONS = [
  'r0.0.1',
  'r0.1.0',
  'r0.2.0',
  'r0.3.0',
  'r0.4.0',
  'r0.5.0',
  'r0.6.0',
  'r0.6.1',
  'v1.1',
];

/**
 * The base URL clients are told to use when no public one is configured: the address and port
 * this server answers on, over plain HTTP (which is all it serves; behind a TLS proxy, set
 * public_base_url). A wildcard bind address names no host, so the server name's host is used.
 */
export function defaultBaseUrl(serverName: string, bindAddress: string, port: number): string {
  let host = bindAddress;
  if (host === '0.0.0.0' || host === '::' || host === '') {
    host = serverName.startsWith('[')
      ? serverName.slice(0, serverName.indexOf(']') + 1)
      : serverName.replace(/:\d+$/, '');
  }
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`;
  return `http://${host}:${port}`;
}

export async function versionsRoutes(app: FastifyInstance): Promise<void> {
  const { config } = app.services;

  // GET /_matrix/client/versions
  app.get('/_matrix/client/versions', async () => ({
    versions: SUPPORTED_VERSIONS,
    // Threads and their list served stable under /v1 (MSC3440, MSC3856), and /relations
    // paginating forwards (MSC3715): matrix-js-sdk then uses /v1/rooms/{roomId}/threads.
    unstable_features: {
      'org.matrix.msc3440.stable': true,
      'org.matrix.msc3856.stable': true,
      'org.matrix.msc3715.stable': true,
    },
  }));

  // GET /.well-known/matrix/client
  app.get('/.well-known/matrix/client', async () => {
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    return {
      'm.homeserver': {
        base_url: config.publicBaseUrl || defaultBaseUrl(config.serverName, config.bindAddress, port),
      },
    };
  });

  // GET /_matrix/client/v3/capabilities
  app.get(`${V3}/capabilities`, { onRequest: requireAuth }, async () => ({
    capabilities: {
      'm.change_password': { enabled: true },
      'm.room_versions': {
        default: config.defaultRoomVersion,
        available: Object.fromEntries(Object.values(ROOM_VERSIONS).map((v) => [v.id, 'stable'])),
      },
      'm.set_displayname': { enabled: true },
      'm.set_avatar_url': { enabled: true },
      'm.3pid_changes': { enabled: false },
      'm.get_login_token': { enabled: false },
    },
  }));
}
