import type { FastifyInstance } from 'fastify';
import { keysRoutes } from './keys.routes.ts';

/** The server-server API. Routes that need X-Matrix request signatures come in a later step. */
export async function federationRoutes(app: FastifyInstance): Promise<void> {
  await app.register(keysRoutes);
}
