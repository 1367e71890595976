import type { FastifyInstance } from 'fastify';

/** Publishing the server's signing keys (server-server API: Publishing Keys). */
export async function keysRoutes(app: FastifyInstance): Promise<void> {
  const { serverKeys } = app.services;

  // GET /_matrix/key/v2/server
  app.get('/_matrix/key/v2/server', async () => serverKeys.publishedKeys());
}
