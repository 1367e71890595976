import type { FastifyInstance } from 'fastify';

export const SERVER_SOFTWARE = { name: 'Conclave', version: '0.1.0' };

export async function versionRoutes(app: FastifyInstance): Promise<void> {
  // GET /_matrix/federation/v1/version
  app.get('/_matrix/federation/v1/version', async () => ({ server: SERVER_SOFTWARE }));
}
